"""Unpickling a ``torch.save`` file admitting our allowlist and nothing more, on every torch.

Checkpoints are unpickled with torch's ``weights_only`` loader: tensors, containers and plain
values, plus the few types of :func:`allowlist`, which mmengine, mmdet 2.x and the official
release put beside the weights. Nothing else is ever unpickled, so a checkpoint cannot run code,
on any supported torch:

- from torch 2.6 (:data:`convnext_backbone.compat.TORCH_ALLOWLISTS`), torch's own loader inside
  :func:`allowlisted_globals`;
- below, where torch cannot extend its allowlist, :func:`restricted_load`: ``torch.load`` with a
  :class:`pickle.Unpickler` whose ``find_class`` returns only the globals of torch 2.6's own
  ``weights_only`` allowlist (``torch/_weights_only_unpickler.py``: ``_get_allowed_globals``,
  the tensor, storage and dtype rebuilders) and :func:`allowlist`; every other global is refused
  the way torch refuses it (``Unsupported global: GLOBAL module.name``). Resolving globals is the
  only way a pickle reaches code, so nothing outside the allowlist runs. TorchScript archives,
  which ``torch.load`` hands to ``torch.jit.load``, are refused.

``HistoryBuffer`` (mmengine's message hub) pickles its statistics methods as
``getattr(HistoryBuffer, 'min')``. Allowing ``getattr`` itself would allow anything, so the name
``builtins.getattr`` is bound to :func:`_history_buffer_statistic`, which returns only those
four methods and refuses every other attribute.

Paths, URLs, model-zoo names and one-line errors are :func:`.io.read_checkpoint`'s job; this
module reads one file or file object and raises torch's own errors.
"""
import argparse
import codecs
import collections
import contextlib
import functools
import io
import os
import pickle
import types
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from typing import Any, Callable, Dict, Iterator, List, Tuple, Union

import torch

from .. import compat

__all__ = ['allowlist', 'allowlisted_globals', 'load_allowlisted', 'restricted_load']

#: What may be allowed: an object, or ``(object, 'module.name')`` for the name a file uses.
Allowed = Union[Any, Tuple[Any, str]]
#: What a checkpoint is read from.
Source = Union[str, os.PathLike, io.BufferedIOBase]

_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')
_NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                 'uint64', 'float16', 'float32', 'float64', 'str', 'bytes')

#: What torch 2.6's own ``weights_only`` allowlist adds to torch 2.1's
#: (torch/_weights_only_unpickler.py: ``_get_allowed_globals``, ``_tensor_rebuild_functions``),
#: where this torch has it. ``_codecs.encode`` is how pickle protocol 2 writes ``bytes`` (numpy
#: arrays' data among them).
_NEWER_DEFAULTS = {
    '_codecs.encode': codecs.encode,
    'builtins.bytearray': bytearray,
    'builtins.set': set,
    'builtins.complex': complex,
    'collections.Counter': collections.Counter,
    'torch.device': torch.device,
}
_NEWER_REBUILDS = ('_rebuild_parameter_with_state', '_rebuild_qtensor', '_rebuild_tensor_v3',
                   '_rebuild_nested_tensor', '_rebuild_wrapper_subclass',
                   '_rebuild_device_tensor_from_numpy', '_rebuild_device_tensor_from_cpu_tensor')


def _history_buffer_statistic(obj: Any, name: str) -> Any:
    """What ``builtins.getattr`` means while unpickling: only ``getattr(HistoryBuffer, 'min' |
    'max' | 'mean' | 'current')``, as ``HistoryBuffer.__getstate__`` pickles them.

    Raises:
        pickle.UnpicklingError: For any other object or attribute.
    """
    from mmengine.logging import HistoryBuffer
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refusing getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) while '
        "loading a checkpoint: only the statistics methods of mmengine's HistoryBuffer are allowed")


@functools.lru_cache(maxsize=None)
def allowlist() -> Tuple[Allowed, ...]:
    """The types that checkpoints may hold beside tensors and plain values.

    Returns:
        tuple: ``argparse.Namespace`` (official release args), ``collections.Counter`` and
        ``OrderedDict`` (``MultiStepLR`` milestones, state dicts), ``set``, numpy arrays,
        scalars and dtypes (mmengine and mmdet 2.x meta, the message hub), mmengine's
        ``HistoryBuffer``, and the restricted ``getattr`` stand-in described above; the
        numpy reconstructors under the names of numpy 1 and numpy 2.
    """
    import numpy as np
    from mmengine.logging import HistoryBuffer
    # numpy 2: numpy._core (numpy.core warns); numpy 1.26 has a partial numpy._core stub
    numpy2 = int(np.__version__.split('.')[0]) >= 2
    multiarray = np._core.multiarray if numpy2 else np.core.multiarray
    found: List[Allowed] = [argparse.Namespace, collections.Counter, collections.OrderedDict, set,
                            np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
                            HistoryBuffer]
    # numpy 2 writes numpy._core.multiarray, numpy 1 numpy.core.multiarray: either reads on both
    found += [(getattr(multiarray, name), f'numpy.{core}.multiarray.{name}')
              for name in ('_reconstruct', 'scalar') for core in ('core', '_core')]
    found += [type(np.dtype(name)) for name in _NUMPY_DTYPES]
    found.append((_history_buffer_statistic, 'builtins.getattr'))
    unique: List[Allowed] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return tuple(unique)


def load_allowlisted(file: Source) -> Any:
    """Read a ``torch.save`` file on the CPU admitting :func:`allowlist` and nothing more, on
    every supported torch: torch's own ``weights_only`` loader inside :func:`allowlisted_globals`
    from torch 2.6, :func:`restricted_load` below.

    Args:
        file (str | PathLike | file object): A checkpoint written by ``torch.save``.

    Returns:
        Any: What the file holds.

    Raises:
        pickle.UnpicklingError: The file names a global outside the allowlist, or is a
            TorchScript archive; torch's other reading errors as they are.
    """
    if compat.TORCH_ALLOWLISTS:
        with allowlisted_globals():
            return torch.load(file, map_location='cpu', weights_only=True)
    return restricted_load(file)


@contextlib.contextmanager
def allowlisted_globals() -> Iterator[None]:
    """Context in which ``torch.load(..., weights_only=True)`` (ours or mmengine's) admits
    :func:`allowlist`; torch >= 2.6 only (older torch cannot extend its allowlist: read with
    :func:`load_allowlisted` there).

    Only the globals not already allowed are added, so leaving the context never removes one
    that the user added with ``torch.serialization.add_safe_globals``.

    Raises:
        RuntimeError: On torch < 2.6, in one line.

    Example:
        >>> with allowlisted_globals():
        ...     ckpt = torch.load('work_dirs/x/iter_100.pth', map_location='cpu')
    """
    compat.require_torch('2.6', 'torch.load(weights_only=True) admitting an allowlist')
    present = {_allowed_key(g) for g in torch.serialization.get_safe_globals()}
    new = [g for g in allowlist() if _allowed_key(g) not in present]
    with torch.serialization.safe_globals(new):
        yield


def restricted_load(file: Source) -> Any:
    """:func:`load_allowlisted` below torch 2.6: ``torch.load`` with a restricted unpickler.

    It runs on every torch (the tests compare it with torch's own loader on a new one).

    Args:
        file (str | PathLike | file object): A checkpoint written by ``torch.save``.

    Returns:
        Any: What the file holds.

    Raises:
        pickle.UnpicklingError: The file names a global outside torch's ``weights_only``
            allowlist and :func:`allowlist` (``Unsupported global: GLOBAL module.name ...``),
            or is a TorchScript archive.
    """
    if _is_torchscript(file):
        raise pickle.UnpicklingError(
            'Cannot use weights_only loading with a TorchScript archive (torch.jit.save writes '
            'those; torch.load hands them to torch.jit.load)')
    names = _torch_default_globals()
    for item in allowlist():
        obj, name = item if isinstance(item, tuple) else (item, _global_name(item))
        names[name] = obj
    return torch.load(file, map_location='cpu', weights_only=False,
                      pickle_module=_restricted_pickle(names))


def _torch_default_globals() -> Dict[str, Any]:
    """torch 2.6's default ``weights_only`` allowlist, from what the running torch has."""
    names: Dict[str, Any] = dict(torch._weights_only_unpickler._get_allowed_globals())
    names.update(_NEWER_DEFAULTS)
    names.update({str(v): v for v in vars(torch).values()
                  if isinstance(v, (torch.dtype, torch.qscheme))})
    names.update({f'torch._utils.{name}': getattr(torch._utils, name)
                  for name in _NEWER_REBUILDS if hasattr(torch._utils, name)})
    return names


def _allowed_key(item: Allowed) -> Any:
    return item[1] if isinstance(item, tuple) else item


def _global_name(obj: Any) -> str:
    return f'{obj.__module__}.{obj.__qualname__}'


def _restricted_pickle(names: Dict[str, Any]) -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose unpickler resolves only ``names``."""

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            # the Python 2 names of pickle protocol 2 (what torch.save writes), mapped as
            # torch's own weights_only unpickler maps them (__builtin__ -> builtins ...)
            if (module, name) in NAME_MAPPING:
                module, name = NAME_MAPPING[(module, name)]
            elif module in IMPORT_MAPPING:
                module = IMPORT_MAPPING[module]
            key = f'{module}.{name}'
            if key not in names:
                raise pickle.UnpicklingError(
                    f'Unsupported global: GLOBAL {key} was not an allowed global')
            return names[key]

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    return types.SimpleNamespace(__name__=f'{__name__}.restricted_pickle', Unpickler=Unpickler,
                                 load=load, UnpicklingError=pickle.UnpicklingError)


def _is_torchscript(file: Any) -> bool:
    """Whether ``file`` is a TorchScript archive (torch's test: a ``constants.pkl`` record)."""
    seekable: Callable[[], bool] = getattr(file, 'seekable', lambda: False)
    start = file.tell() if seekable() else None
    try:
        if not zipfile.is_zipfile(file):
            return False
        with zipfile.ZipFile(file) as archive:
            return any(n.rsplit('/', 1)[-1] == 'constants.pkl' for n in archive.namelist())
    finally:
        if start is not None:
            file.seek(start)
