"""convnext-backbone: the ConvNeXt backbone (V1, V2) for mmdet 3.x and mmseg 1.x."""
import warnings

# before torch loads libgomp, which reads its spin count once (see openmp.py)
from .openmp import set_spin_default

set_spin_default()

# before the first large tensor: freed feature maps stay in the heap (see allocator.py)
from .allocator import keep_freed_memory  # noqa: E402

keep_freed_memory()

# before anything of mmengine/mmcv is imported: a mixed upstream + OneDL environment is refused
# here, in one line, instead of failing somewhere inside the overwritten modules
from .stack import check_stack  # noqa: E402

STACK = check_stack()

from .archs import ARCH_SETTINGS  # noqa: E402
from .checkpoint import CheckpointError, convert_state_dict, load_pretrained  # noqa: E402
from .config import enable_config_prefix  # noqa: E402
from .convnext import ConvNeXt  # noqa: E402
from .frozen import frozen_weights  # noqa: E402
from .layer_decay import LayerDecayOptimizerConstructor  # noqa: E402

# mmengine 0.10.7 resolves 'mmdet::' / 'mmseg::' config paths through pkg_resources, which warns at
# every such lookup with setuptools 80; nothing a user of ours can act on.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API',
                        category=UserWarning)
# 'convnext_backbone::' bases, and 'mmdet::' / 'mmseg::' on either stack, for every Config.fromfile
enable_config_prefix()

__version__ = '0.2.0'
__all__ = ['ARCH_SETTINGS', 'STACK', 'CheckpointError', 'ConvNeXt',
           'LayerDecayOptimizerConstructor', 'convert_state_dict', 'frozen_weights',
           'load_pretrained']
