"""Checkpoint I/O in one place.

- :mod:`.io`: reading a checkpoint (:func:`read_checkpoint`: a path, URL or model-zoo name; the
  one error explainer);
- :mod:`.unpickler`: unpickling a ``torch.save`` file admitting our allowlist and nothing more,
  on every supported torch;
- :mod:`.layouts`: the pure conversion of every known ConvNeXt layout to ours;
- :mod:`.load`: the strict "does it fit" check and the loaders built on it;
- :mod:`.zoo`: mmengine's model-zoo names (``torchvision://`` ...) resolved to files.
"""
from .io import CheckpointError, is_complete_checkpoint, read_checkpoint
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
from .unpickler import allowlisted_globals, load_allowlisted

__all__ = ['DINOV3', 'DINOV3_HF', 'FCMAE', 'HF', 'MMPRETRAIN', 'OFFICIAL_CLS', 'OFFICIAL_DENSE',
           'TIMM', 'TORCHVISION', 'CheckpointError',
           'Converted', 'Fit', 'allowlisted_globals', 'check_fit', 'convert_state_dict',
           'describe_arch', 'is_complete_checkpoint', 'load_allowlisted', 'load_pretrained',
           'load_state_strictly', 'read_checkpoint', 'unwrap_state_dict']
