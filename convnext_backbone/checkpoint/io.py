"""Reading checkpoint files: the one allowlist, the one reader and the one error explainer.

Every checkpoint this package reads (``init_cfg`` Pretrained, ``load_from`` and resume in the
runner, the test, infer and convert tools) goes through :func:`read_checkpoint`. It unpickles
with :func:`convnext_backbone.compat.weights_only_load`: torch's ``weights_only`` loader from
torch 2.6, a restricted unpickler with the same allowlist on older torch. Tensors, containers and
plain values, plus the few types of :func:`safe_globals`, which mmengine, mmdet 2.x and the
official release put beside the weights. Nothing else is ever unpickled, so a checkpoint cannot
run code, on any supported torch.

``HistoryBuffer`` (mmengine's message hub) pickles its statistics methods as
``getattr(HistoryBuffer, 'min')``. Allowing ``getattr`` itself would allow anything, so the name
``builtins.getattr`` is bound to :func:`_history_buffer_statistic`, which returns only those
four methods and refuses every other attribute.
"""
import argparse
import collections
import contextlib
import functools
import io
import os
import pickle
import re
import zipfile
from typing import Any, BinaryIO, Iterator, List, Union

import torch

from .. import compat
from . import zoo

_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')
_NUMPY_DTYPES = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32',
                 'uint64', 'float16', 'float32', 'float64', 'str', 'bytes')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is refused, or does not fit the model."""


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
def safe_globals() -> tuple:
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
    found: List[Any] = [argparse.Namespace, collections.Counter, collections.OrderedDict, set,
                        np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar,
                        HistoryBuffer]
    # numpy 2 writes numpy._core.multiarray, numpy 1 numpy.core.multiarray: either reads on both
    found += [(getattr(multiarray, name), f'numpy.{core}.multiarray.{name}')
              for name in ('_reconstruct', 'scalar') for core in ('core', '_core')]
    found += [type(np.dtype(name)) for name in _NUMPY_DTYPES]
    found.append((_history_buffer_statistic, 'builtins.getattr'))
    unique: List[Any] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return tuple(unique)


@contextlib.contextmanager
def allowlisted_globals() -> Iterator[None]:
    """Context in which ``torch.load(..., weights_only=True)`` (ours or mmengine's) admits
    :func:`safe_globals`; torch >= 2.6 only (older torch cannot extend its allowlist: read with
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
    present = {_global_key(g) for g in torch.serialization.get_safe_globals()}
    new = [g for g in safe_globals() if _global_key(g) not in present]
    with torch.serialization.safe_globals(new):
        yield


def _global_key(item: Any) -> Any:
    return item[1] if isinstance(item, tuple) else item


def load_allowlisted(file: Union[str, os.PathLike, BinaryIO]) -> Any:
    """Read a ``torch.save`` file on the CPU admitting :func:`safe_globals` and nothing more, on
    every supported torch (:func:`convnext_backbone.compat.weights_only_load`).

    Raises:
        pickle.UnpicklingError: The file names a global outside the allowlist; torch's other
            reading errors as they are.
    """
    return compat.weights_only_load(file, safe_globals(), map_location='cpu')


def torch_load(path: str) -> Any:
    """:func:`load_allowlisted` with every error turned into one line.

    Raises:
        CheckpointError: One line naming the file and the cause (see :func:`explain_read_error`).
    """
    try:
        return load_allowlisted(path)
    except Exception as err:  # noqa: BLE001 - every reading error becomes one clear line
        raise explain_read_error(path, err) from None


def read_checkpoint(path: str) -> Any:
    """Read a checkpoint file or URL on the CPU, unpickling nothing beyond the allowlist.

    ``.safetensors`` files are read with safetensors; http(s) URLs are downloaded once into
    torch hub's cache; other storage (``s3://`` ..., any scheme of mmengine's file back ends) is
    fetched with ``mmengine.fileio.get`` and read as a local file. mmengine's model-zoo names
    (``torchvision://``, ``open-mmlab://``, ``mmcls://``) are resolved to their file with
    mmengine's tables (:mod:`.zoo`) and read the same way, never through mmengine's
    ``CheckpointLoader`` (which unpickles without restriction on older torch, and on the OneDL
    fork falls back to full unpickling), on every supported torch and either stack.

    Args:
        path (str): Local path or URL.

    Returns:
        Any: What the file holds (usually a dict).

    Raises:
        CheckpointError: The file is missing, unreachable, truncated or corrupt, or holds an
            object outside the allowlist; one line naming the file.
    """
    if zoo.is_zoo_name(path):
        try:
            checkpoint = read_checkpoint(zoo.resolve(path))
        except zoo.ZooError as err:
            raise CheckpointError(str(err)) from None
        return zoo.mmcls_backbone(checkpoint) if path.startswith('mmcls://') else checkpoint
    if re.match(r'^https?://', path):
        path = _download(path)
    elif '://' in path:
        from mmengine.fileio import get
        try:
            return load_allowlisted(io.BytesIO(get(path)))
        except Exception as err:  # noqa: BLE001 - every reading error becomes one clear line
            raise explain_read_error(path, err) from None
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        try:
            return load_file(path, device='cpu')
        except Exception as err:  # noqa: BLE001
            raise explain_read_error(path, err) from None
    return torch_load(path)


def _download(url: str) -> str:
    from torch.hub import download_url_to_file, get_dir
    cached = os.path.join(get_dir(), 'checkpoints', os.path.basename(url.split('?')[0]))
    if not os.path.exists(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        try:
            download_url_to_file(url, cached, progress=True)
        except OSError as err:  # URLError, HTTPError and socket errors are OSErrors
            raise explain_read_error(url, err) from None
    return cached


def explain_read_error(path: str, err: BaseException) -> CheckpointError:
    """Turn any failure to read a checkpoint into a one-line :class:`CheckpointError`.

    Args:
        path (str): The checkpoint path or URL.
        err (BaseException): What reading raised.

    Returns:
        CheckpointError: Naming the file and, where known, what to do.
    """
    if isinstance(err, CheckpointError):
        return err
    text = str(err)
    # the first sentence of the cause: torch's own messages go on for lines
    first = re.split(r'(?<=\.)\s', text.strip())[0].splitlines()[0] if text.strip() else ''
    from urllib.error import URLError
    if re.match(r'^https?://', path) and isinstance(err, (URLError, OSError)):
        reason = getattr(err, 'reason', None) or err
        return CheckpointError(f'cannot download checkpoint {path}: {reason}; download it where '
                               'there is a connection and give the local file instead (e.g. '
                               'init_cfg.checkpoint or load_from)')
    if isinstance(err, FileNotFoundError) or ('://' not in path and not os.path.exists(path)):
        return CheckpointError(f'checkpoint not found: {path}')
    # torch names a refused global "Unsupported global: GLOBAL a.b" or, for modules it blocks
    # outright (os, posix, subprocess ...), "unsupported GLOBAL a.b whose module a is blocked"
    refused = re.search(r'GLOBAL ([\w.]+)', text)
    if refused or 'refusing getattr' in text:
        what = (f'an object of type {refused.group(1)}' if refused
                else re.search(r'refusing (getattr\([^)]*\))', text).group(1))
        return CheckpointError(
            f'checkpoint {path} holds {what}, which convnext_backbone does not unpickle (only '
            'tensors, plain values and a short allowlist: loading anything else could run '
            'code). If you trust the file, re-save its weights once with torch.load(path, '
            "weights_only=False)['state_dict'] and torch.save"
            + (', or allow the type with torch.serialization.add_safe_globals([...])'
               if compat.TORCH_ALLOWLISTS else ''))
    reading = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, RuntimeError, ValueError)
    if isinstance(err, reading) or 'PytorchStreamReader' in text or 'zip archive' in text:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        return CheckpointError(
            f'cannot read checkpoint {path} ({size} bytes): the file is truncated, corrupt or '
            f'not a PyTorch checkpoint ({type(err).__name__}: {first})')
    return CheckpointError(f'cannot read checkpoint {path}: {type(err).__name__}: {first}')


def is_complete_checkpoint(path: str) -> bool:
    """Cheap check that ``path`` is a whole checkpoint file (not a cut-off write).

    ``torch.save`` writes a zip archive whose directory is at its end, so a cut-off file fails
    ``zipfile.is_zipfile``. Files of the legacy (pre-zip) format are accepted when non-empty.

    Args:
        path (str): A file path.

    Returns:
        bool: Whether the file exists and looks whole.
    """
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return False
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic.startswith(b'PK'):
        return zipfile.is_zipfile(path)
    return True

