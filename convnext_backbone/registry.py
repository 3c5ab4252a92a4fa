"""Registries of convnext-backbone, children of mmengine's root registries.

A config in any OpenMMLab scope (``default_scope='mmdet'`` or ``'mmseg'``) names our modules with
the ``convnext_backbone.`` prefix, e.g. ``type='convnext_backbone.ConvNeXt'``: mmengine imports
``convnext_backbone.registry`` on seeing the prefix, finds these child registries under its roots
and imports their ``locations``, which register the classes (``convnext_backbone.engine`` imports
every engine module). No ``custom_imports`` is needed.
"""
from mmengine.registry import HOOKS as MMENGINE_HOOKS
from mmengine.registry import LOOPS as MMENGINE_LOOPS
from mmengine.registry import MODEL_WRAPPERS as MMENGINE_MODEL_WRAPPERS
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS as MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS
from mmengine.registry import RUNNERS as MMENGINE_RUNNERS
from mmengine.registry import TRANSFORMS as MMENGINE_TRANSFORMS
from mmengine.registry import Registry

SCOPE = 'convnext_backbone'

MODELS = Registry('model', parent=MMENGINE_MODELS, scope=SCOPE,
                  locations=['convnext_backbone.convnext'])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    'optimizer wrapper constructor', parent=MMENGINE_OPTIM_WRAPPER_CONSTRUCTORS, scope=SCOPE,
    locations=['convnext_backbone.layer_decay'])
RUNNERS = Registry('runner', parent=MMENGINE_RUNNERS, scope=SCOPE,
                   locations=['convnext_backbone.engine'])
LOOPS = Registry('loop', parent=MMENGINE_LOOPS, scope=SCOPE,
                 locations=['convnext_backbone.engine'])
HOOKS = Registry('hook', parent=MMENGINE_HOOKS, scope=SCOPE,
                 locations=['convnext_backbone.engine', 'convnext_backbone.precision'])
MODEL_WRAPPERS = Registry('model_wrapper', parent=MMENGINE_MODEL_WRAPPERS, scope=SCOPE,
                          locations=['convnext_backbone.engine'])
TRANSFORMS = Registry('transform', parent=MMENGINE_TRANSFORMS, scope=SCOPE,
                      locations=['convnext_backbone.transforms'])
