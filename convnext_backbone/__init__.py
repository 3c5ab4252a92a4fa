"""convnext-backbone: the ConvNeXt backbone (V1, V2) for mmdet 3.x and mmseg 1.x."""
import warnings

from .archs import ARCH_SETTINGS
from .checkpoint import CheckpointError, convert_state_dict, load_pretrained
from .convnext import ConvNeXt
from .layer_decay import LayerDecayOptimizerConstructor

# mmengine 0.10.7 resolves 'mmdet::' / 'mmseg::' config paths through pkg_resources, which warns at
# every such lookup with setuptools 80; nothing a user of ours can act on.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning)

__version__ = '0.2.0'
__all__ = ['ARCH_SETTINGS', 'CheckpointError', 'ConvNeXt', 'LayerDecayOptimizerConstructor',
           'convert_state_dict', 'load_pretrained']
