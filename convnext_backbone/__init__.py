"""convnext-backbone: the ConvNeXt backbone (V1, V2) for mmdet 3.x and mmseg 1.x."""
from .checkpoint import CheckpointError, convert_state_dict, load_pretrained
from .convnext import ARCH_SETTINGS, ConvNeXt
from .layer_decay import LayerDecayOptimizerConstructor

__version__ = '0.1.0'
__all__ = ['ARCH_SETTINGS', 'CheckpointError', 'ConvNeXt', 'LayerDecayOptimizerConstructor',
           'convert_state_dict', 'load_pretrained']
