"""Reading checkpoints: the one entry point and the one error explainer.

Every checkpoint this package reads (``init_cfg`` Pretrained, ``load_from`` and resume in the
runner, the test, infer and convert tools) goes through :func:`read_checkpoint`: a local file, a
URL or a model-zoo name in, what it holds out, or one :class:`CheckpointError` line naming the
file. It unpickles with :func:`.unpickler.load_allowlisted` (tensors, plain values and a short
allowlist, nothing that could run code, on every supported torch).
"""
import io
import os
import pickle
import re
import zipfile
from typing import Any

from .. import compat
from ..errors import UserError
from . import zoo
from .unpickler import load_allowlisted

__all__ = ['CheckpointError', 'is_complete_checkpoint', 'read_checkpoint']


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read, is refused, or does not fit the model."""


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
        path (str): Local path, URL or model-zoo name.

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
    elif '://' not in path and not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    if '://' in path:  # s3:// ... (any scheme of mmengine's file back ends)
        from mmengine.fileio import get

        def read(path: str) -> Any:
            return load_allowlisted(io.BytesIO(get(path)))
    elif path.endswith('.safetensors'):
        from safetensors.torch import load_file as read
    else:
        read = load_allowlisted
    try:
        return read(path)
    except Exception as err:  # noqa: BLE001 - every reading error becomes one clear line
        raise _explain_read_error(path, err) from None


def _download(url: str) -> str:
    from torch.hub import download_url_to_file, get_dir
    cached = os.path.join(get_dir(), 'checkpoints', os.path.basename(url.split('?')[0]))
    if not os.path.exists(cached):
        os.makedirs(os.path.dirname(cached), exist_ok=True)
        try:
            download_url_to_file(url, cached, progress=True)
        except OSError as err:  # URLError, HTTPError and socket errors are OSErrors
            raise _explain_read_error(url, err) from None
    return cached


def _explain_read_error(path: str, err: BaseException) -> CheckpointError:
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
    # A cut-off file fails in whatever way the cut makes torch's reader fail (an OSError from a
    # seek past the end among them): a local file that is not a whole checkpoint is named so.
    cut = os.path.isfile(path) and not is_complete_checkpoint(path)
    if cut or isinstance(err, reading) or 'PytorchStreamReader' in text or 'zip archive' in text:
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

