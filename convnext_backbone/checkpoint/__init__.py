"""Checkpoint I/O in one place.

- :mod:`.io`: reading files (the allowlist of unpickled types, the one error explainer);
- :mod:`.layouts`: the pure conversion of every known ConvNeXt layout to ours;
- :mod:`.load`: the strict "does it fit" check and the loaders built on it;
- :mod:`.zoo`: mmengine's model-zoo names (``torchvision://`` ...) resolved to files.
"""
from .io import (
    CheckpointError,
    allowlisted_globals,
    is_complete_checkpoint,
    load_allowlisted,
    read_checkpoint,
    torch_load,
)
from .layouts import (
    DINOV3,
    DINOV3_HF,
    FCMAE,
    HF,
    MMPRETRAIN,
    OFFICIAL_CLS,
    OFFICIAL_DENSE,
    TIMM,
    TORCHVISION,
    Converted,
    convert_state_dict,
    describe_arch,
    unwrap_state_dict,
)
from .load import Fit, check_fit, load_pretrained, load_state_strictly

__all__ = ['DINOV3', 'DINOV3_HF', 'FCMAE', 'HF', 'MMPRETRAIN', 'OFFICIAL_CLS', 'OFFICIAL_DENSE',
           'TIMM', 'TORCHVISION', 'CheckpointError',
           'Converted', 'Fit', 'allowlisted_globals', 'check_fit', 'convert_state_dict',
           'describe_arch', 'is_complete_checkpoint', 'load_allowlisted', 'load_pretrained',
           'load_state_strictly', 'read_checkpoint', 'torch_load', 'unwrap_state_dict']
