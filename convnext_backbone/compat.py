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
:data:`TORCH_ALLOWLISTS`       2.6         checkpoints are read with a restricted unpickler
                                           (:mod:`convnext_backbone.checkpoint.unpickler`)
=============================  ==========  ===================================================
"""
import re
from typing import Tuple

import torch

__all__ = ['MIN_TORCH', 'TORCH_ALLOWLISTS', 'TORCH_VERSION', 'autocast_dtype', 'autocast_enabled',
           'is_compiling', 'is_exporting', 'require_torch', 'set_autocast_dtype',
           'torch_at_least']

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


#: Whether ``torch.load(weights_only=True)`` can admit an allowlist: ``safe_globals`` /
#: ``get_safe_globals`` (torch 2.5) with ``(object, 'module.name')`` entries (torch 2.6,
#: pytorch/pytorch#142153), the torch whose ``torch.load`` defaults to ``weights_only=True``.
#: Below, :mod:`convnext_backbone.checkpoint.unpickler` reads with a restricted unpickler.
TORCH_ALLOWLISTS = torch_at_least('2.6')
