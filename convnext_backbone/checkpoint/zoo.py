"""mmengine's model-zoo names (``torchvision://``, ``open-mmlab://``, ``mmcls://``) as files.

mmengine reads these names with its ``CheckpointLoader`` (``mmengine/runner/checkpoint.py``:
``load_from_torchvision``, ``load_from_openmmlab``, ``load_from_mmcls``), which unpickles with
``torch.load`` as the installed mmengine chooses: without ``weights_only`` on upstream mmengine
0.10.7 (so without restriction below torch 2.6), and on the OneDL fork (``_safe_torch_load``)
with ``weights_only=True`` first and then, with only a warning, full unpickling. So we resolve a
name to its URL (or local file) here, with mmengine's own tables, and read that file with our
allowlisting reader (:func:`convnext_backbone.checkpoint.read_checkpoint`): a name never
reaches mmengine's loader.

``torchvision://convnext_tiny`` (also ``.default``, ``.imagenet1k_v1`` and torchvision's enum
spelling ``ConvNeXt_Tiny_Weights.IMAGENET1K_V1``) resolves to the file torchvision downloads for
``convnext_tiny(weights='IMAGENET1K_V1')`` (``torchvision/models/convnext.py``), without needing
torchvision installed; other torchvision names go through mmengine's table, which needs it.
"""
import os
import re
from collections import OrderedDict
from typing import Any, Dict

from ..errors import UserError

__all__ = ['TORCHVISION_CONVNEXT', 'ZOO_SCHEMES', 'ZooError', 'is_zoo_name', 'mmcls_backbone',
           'resolve']

#: torchvision's ImageNet-1k ConvNeXt weights (``ConvNeXt_*_Weights.IMAGENET1K_V1.url`` in
#: ``torchvision/models/convnext.py``; a test compares them with the installed torchvision).
TORCHVISION_CONVNEXT: Dict[str, str] = {
    'convnext_tiny': 'https://download.pytorch.org/models/convnext_tiny-983f1562.pth',
    'convnext_small': 'https://download.pytorch.org/models/convnext_small-0c510722.pth',
    'convnext_base': 'https://download.pytorch.org/models/convnext_base-6075fbad.pth',
    'convnext_large': 'https://download.pytorch.org/models/convnext_large-ea097f82.pth',
}
#: mmengine's model-zoo schemes (``CheckpointLoader.register_scheme`` in
#: ``mmengine/runner/checkpoint.py``).
ZOO_SCHEMES = ('torchvision://', 'modelzoo://', 'open-mmlab://', 'openmmlab://', 'mmcls://',
               'pavi://')


class ZooError(UserError, ValueError):
    """A model-zoo name that no table knows, or a scheme we do not read."""


def is_zoo_name(path: str) -> bool:
    """Whether ``path`` is one of mmengine's model-zoo names."""
    return path.startswith(ZOO_SCHEMES)


def _torchvision_name(name: str) -> str:
    """'ConvNeXt_Tiny_Weights.IMAGENET1K_V1' / 'convnext_tiny.default' -> 'convnext_tiny'."""
    enum = re.fullmatch(r'(\w+)_Weights\.(\w+)', name)
    if enum:
        name = f'{enum.group(1).lower()}.{enum.group(2).lower()}'
    base, _, weights = name.partition('.')
    return base if base in TORCHVISION_CONVNEXT and weights in ('', 'default',
                                                               'imagenet1k_v1') else name


def resolve(path: str) -> str:
    """The URL or local file that a model-zoo name stands for.

    Args:
        path (str): e.g. ``'torchvision://convnext_tiny'``, ``'open-mmlab://resnet50_v1c'``.

    Returns:
        str: An http(s) URL or a local path.

    Raises:
        ZooError: An unknown name or an unsupported scheme, in one line.
    """
    scheme, _, name = path.partition('://')
    if scheme in ('torchvision', 'modelzoo'):
        name = _torchvision_name(name)
        if name in TORCHVISION_CONVNEXT:
            return TORCHVISION_CONVNEXT[name]
        try:
            from mmengine.runner.checkpoint import get_torchvision_models
            urls = get_torchvision_models()
        except ImportError:
            raise ZooError(f'{path}: only the ConvNeXt names ({", ".join(TORCHVISION_CONVNEXT)}) '
                           'resolve without torchvision installed; install torchvision or give '
                           'the URL') from None
        return _lookup(urls, name, path)
    if scheme in ('open-mmlab', 'openmmlab'):
        from mmengine.runner.checkpoint import (
            _get_mmengine_home,
            get_deprecated_model_names,
            get_external_models,
        )
        name = get_deprecated_model_names().get(name, name)
        url = _lookup(get_external_models(), name, path)
        return url if re.match(r'^https?://', url) else os.path.join(_get_mmengine_home(), url)
    if scheme == 'mmcls':
        from mmengine.runner.checkpoint import get_mmcls_models
        return _lookup(get_mmcls_models(), name, path)
    raise ZooError(f'{path}: {scheme}:// checkpoints are not read by convnext_backbone; download '
                   'the file and give its path')


def _lookup(urls: Dict[str, str], name: str, path: str) -> str:
    if name not in urls:
        close = sorted(k for k in urls if k.split('.')[0] == name.split('.')[0])[:5]
        raise ZooError(f'{path}: no such model in mmengine\'s table'
                       + (f' (known: {", ".join(close)})' if close else ''))
    return urls[name]


def mmcls_backbone(checkpoint: Any) -> Dict[str, Any]:
    """What ``mmcls://`` gives in mmengine (``_process_mmcls_checkpoint``): the ``backbone.``
    weights of the file, without that prefix, as ``{'state_dict': ...}``."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else {}
    return {'state_dict': OrderedDict((k[len('backbone.'):], v) for k, v in state.items()
                                      if k.startswith('backbone.'))}
