"""The torch APIs this package uses that the oldest supported torch (2.1) lacks, in one place.

Every call of a torch API newer than 2.1 goes through this module, which picks the newer API
where it exists and the older equivalent otherwise. Features that truly need a newer torch ask
:func:`require_torch`, which refuses in one line naming the torch they need.

=============================  ==========  ===================================================
here                           torch has   on older torch
=============================  ==========  ===================================================
:func:`is_compiling`           2.3         ``torch._dynamo.is_compiling`` (2.1)
:func:`is_exporting`           2.5         False (torch.export traces through dynamo there,
                                           so :func:`is_compiling` is True under it)
:func:`autocast_enabled`       2.4         ``torch.is_autocast_cpu_enabled`` / ``..._enabled``
:func:`autocast_dtype`         2.4         ``torch.get_autocast_cpu_dtype`` / ``..._gpu_dtype``
:func:`weights_only_load`      2.6         a restricted unpickler with the same allowlist
=============================  ==========  ===================================================
"""
import codecs
import collections
import io
import os
import pickle
import re
import types
import zipfile
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from typing import Any, Callable, Dict, Iterable, Tuple, Union

import torch

__all__ = ['MIN_TORCH', 'TORCH_ALLOWLISTS', 'TORCH_VERSION', 'autocast_dtype', 'autocast_enabled',
           'is_compiling', 'is_exporting', 'require_torch', 'restricted_load',
           'set_autocast_dtype', 'torch_at_least', 'weights_only_load']

#: The oldest torch this package supports (pyproject.toml says the same).
MIN_TORCH = (2, 1)


def _parse(version: str) -> Tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r'\d+', version.split('+')[0])[:3])


#: The running torch's (major, minor, patch).
TORCH_VERSION: Tuple[int, ...] = _parse(torch.__version__)


def torch_at_least(version: str) -> bool:
    """Whether the running torch is ``version`` (e.g. '2.4') or newer."""
    return TORCH_VERSION >= _parse(version)


def require_torch(version: str, feature: str) -> None:
    """Refuse ``feature`` in one line where the running torch is older than ``version``.

    Args:
        version (str): The oldest torch with what ``feature`` needs, e.g. '2.5'.
        feature (str): What the user asked for, e.g. 'ONNX export'.

    Raises:
        RuntimeError: One line naming the feature, the torch it needs and the one installed.
    """
    if not torch_at_least(version):
        raise RuntimeError(f'{feature} needs torch >= {version}; this is torch '
                           f'{torch.__version__}: install a newer torch for it (the rest of '
                           f'convnext_backbone works from torch {".".join(map(str, MIN_TORCH))})')


if hasattr(torch.compiler, 'is_compiling'):
    def is_compiling() -> bool:
        """Whether torch.compile (dynamo) is tracing the calling code."""
        return torch.compiler.is_compiling()
else:  # torch < 2.3
    def is_compiling() -> bool:
        """Whether torch.compile (dynamo) is tracing the calling code."""
        return torch._dynamo.is_compiling()


if hasattr(torch.compiler, 'is_exporting'):
    def is_exporting() -> bool:
        """Whether torch.export is tracing the calling code."""
        return torch.compiler.is_exporting()
else:  # torch < 2.5: torch.export traces through dynamo, which is_compiling() sees
    def is_exporting() -> bool:
        """Whether torch.export is tracing the calling code."""
        return False


try:
    torch.is_autocast_enabled('cpu')
    _DEVICE_AUTOCAST = True
except TypeError:  # torch < 2.4: no device argument
    _DEVICE_AUTOCAST = False


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` ('cpu', 'cuda', ...)."""
    if _DEVICE_AUTOCAST:
        return torch.is_autocast_enabled(device_type)
    if device_type == 'cpu':
        return torch.is_autocast_cpu_enabled()
    return device_type == 'cuda' and torch.is_autocast_enabled()


def autocast_dtype(device_type: str) -> torch.dtype:
    """The dtype autocast computes in on ``device_type`` ('cpu', 'cuda')."""
    if hasattr(torch, 'get_autocast_dtype'):
        return torch.get_autocast_dtype(device_type)
    if device_type == 'cpu':
        return torch.get_autocast_cpu_dtype()
    return torch.get_autocast_gpu_dtype()


def set_autocast_dtype(device_type: str, dtype: torch.dtype) -> None:
    """Set the dtype that autocast without a ``dtype`` computes in on ``device_type``."""
    if hasattr(torch, 'set_autocast_dtype'):  # torch 2.4
        torch.set_autocast_dtype(device_type, dtype)
    elif device_type == 'cpu':
        torch.set_autocast_cpu_dtype(dtype)
    else:
        torch.set_autocast_gpu_dtype(dtype)


#: Whether ``torch.load(weights_only=True)`` can admit our allowlist: ``safe_globals`` /
#: ``get_safe_globals`` (torch 2.5) with ``(object, 'module.name')`` entries (torch 2.6,
#: pytorch/pytorch#142153), the torch whose ``torch.load`` defaults to ``weights_only=True``.
TORCH_ALLOWLISTS = torch_at_least('2.6')

#: What may be allowed: an object, or ``(object, 'module.name')`` for the name a file uses.
Allowed = Union[Any, Tuple[Any, str]]


def weights_only_load(file: Union[str, os.PathLike, io.BufferedIOBase],
                      allowed: Iterable[Allowed], map_location: Any = 'cpu') -> Any:
    """``torch.load(file, weights_only=True)`` admitting ``allowed`` too, on every torch.

    From torch 2.6 this is torch's own loader inside ``torch.serialization.safe_globals``
    (adding only what is not allowed yet, so nothing a user allowed is removed afterwards).
    Below, where torch cannot extend its allowlist, the file is read by torch with a
    :class:`pickle.Unpickler` whose ``find_class`` returns only the globals of torch's own
    ``weights_only`` allowlist (``torch/_weights_only_unpickler.py``: ``_get_allowed_globals``,
    the tensor, storage and dtype rebuilders) and ``allowed``; every other global is refused the
    way torch refuses it (``Unsupported global: GLOBAL module.name``). Resolving globals is the
    only way a pickle reaches code, so nothing outside the allowlist runs. TorchScript archives,
    which ``torch.load`` hands to ``torch.jit.load``, are refused.

    Args:
        file (str | PathLike | file object): A checkpoint written by ``torch.save``.
        allowed (Iterable): Objects (classes, functions) that the file may name besides
            tensors and plain values, or ``(object, 'module.name')`` pairs.
        map_location (Any): As ``torch.load``'s. Defaults to 'cpu'.

    Returns:
        Any: What the file holds.

    Raises:
        pickle.UnpicklingError: The file names a global outside the allowlist, or is a
            TorchScript archive.
    """
    allowed = list(allowed)
    if TORCH_ALLOWLISTS:
        present = {_allowed_key(g) for g in torch.serialization.get_safe_globals()}
        new = [g for g in allowed if _allowed_key(g) not in present]
        with torch.serialization.safe_globals(new):
            return torch.load(file, map_location=map_location, weights_only=True)
    return restricted_load(file, allowed, map_location)


def restricted_load(file: Union[str, os.PathLike, io.BufferedIOBase],
                    allowed: Iterable[Allowed], map_location: Any = 'cpu') -> Any:
    """:func:`weights_only_load` below torch 2.6: ``torch.load`` with a restricted unpickler.

    It runs on every torch (the tests compare it with torch's own loader on a new one).

    Args:
        file (str | PathLike | file object): A checkpoint written by ``torch.save``.
        allowed (Iterable): As :func:`weights_only_load`'s.
        map_location (Any): As ``torch.load``'s. Defaults to 'cpu'.

    Returns:
        Any: What the file holds.

    Raises:
        pickle.UnpicklingError: The file names a global outside torch's ``weights_only``
            allowlist and ``allowed`` (``Unsupported global: GLOBAL module.name ...``), or is a
            TorchScript archive.
    """
    if _is_torchscript(file):
        raise pickle.UnpicklingError(
            'Cannot use weights_only loading with a TorchScript archive (torch.jit.save writes '
            'those; torch.load hands them to torch.jit.load)')
    names = _torch_default_globals()
    for item in allowed:
        obj, name = item if isinstance(item, tuple) else (item, _global_name(item))
        names[name] = obj
    return torch.load(file, map_location=map_location, weights_only=False,
                      pickle_module=_restricted_pickle(names))


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
