"""The checkpoint layouts of ConvNeXt, converted to ours by pure functions.

:func:`convert_state_dict` takes what a checkpoint file holds, detects its layout and returns
the backbone's weights under our names (the official ones: ``downsample_layers.*``,
``stages.i.j.*``, ``norm0..3``). Each layout is a short ordered table of regex renames, tried in
order, first match wins; shapes that differ from ours are fixed in :func:`_native_shape`.
:func:`unwrap_state_dict` is the one place that finds the weights inside a checkpoint and strips
DDP's ``module.`` prefix.

Note:
    The classifier's final LayerNorm (official ``norm``, timm ``head.norm``, HF ``layernorm``,
    mmpretrain classification ``norm3``) normalises pooled features, not a feature map. As in the
    official detection/segmentation code, it is not loaded: ``norm3`` starts from weight 1,
    bias 0.
"""
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import torch

from ..archs import arch_name
from .io import CheckpointError

# Layout names, as shown to users in logs and errors.
OFFICIAL_CLS = 'official classification'
OFFICIAL_DENSE = 'official detection/segmentation (or convnext_backbone)'
MMPRETRAIN = 'mmpretrain'
TIMM = 'timm'
HF = 'HF transformers'

_BLOCK = r'stages\.(\d)\.(\d+)\.'
# One ordered (pattern, replacement) table per layout, first match wins. The tables are data
# of one shape, so a duplicate finder pairs them (timm's and HF's GRN rows look alike); the
# names they map differ, so they stay apart.
_RULES: Dict[str, Tuple[Tuple[str, str], ...]] = {
    MMPRETRAIN: (
        (_BLOCK + r'depthwise_conv\.', r'stages.\1.\2.dwconv.'),
        (_BLOCK + r'pointwise_conv(\d)\.', r'stages.\1.\2.pwconv\3.'),
    ),
    TIMM: (
        (r'^stem\.(\d)\.', r'downsample_layers.0.\1.'),
        (r'^stages\.(\d)\.downsample\.(\d)\.', r'downsample_layers.\1.\2.'),
        (r'^stages\.(\d)\.blocks\.(\d+)\.conv_dw\.', r'stages.\1.\2.dwconv.'),
        (r'^stages\.(\d)\.blocks\.(\d+)\.mlp\.fc(\d)\.', r'stages.\1.\2.pwconv\3.'),
        (r'^stages\.(\d)\.blocks\.(\d+)\.mlp\.grn\.weight$', r'stages.\1.\2.grn.gamma'),
        (r'^stages\.(\d)\.blocks\.(\d+)\.mlp\.grn\.bias$', r'stages.\1.\2.grn.beta'),
        (r'^stages\.(\d)\.blocks\.(\d+)\.', r'stages.\1.\2.'),
    ),
    HF: (
        (r'^embeddings\.patch_embeddings\.', 'downsample_layers.0.0.'),
        (r'^embeddings\.layernorm\.', 'downsample_layers.0.1.'),
        (r'^encoder\.stages\.(\d)\.downsampling_layer\.(\d)\.', r'downsample_layers.\1.\2.'),
        (r'^encoder\.stages\.(\d)\.layers\.(\d+)\.layernorm\.', r'stages.\1.\2.norm.'),
        (r'^encoder\.stages\.(\d)\.layers\.(\d+)\.layer_scale_parameter$', r'stages.\1.\2.gamma'),
        (r'^encoder\.stages\.(\d)\.layers\.(\d+)\.grn\.weight$', r'stages.\1.\2.grn.gamma'),
        (r'^encoder\.stages\.(\d)\.layers\.(\d+)\.grn\.bias$', r'stages.\1.\2.grn.beta'),
        (r'^encoder\.stages\.(\d)\.layers\.(\d+)\.', r'stages.\1.\2.'),
    ),
}
# Keys of the backbone proper, once renamed; anything else (heads, necks, the classifier's final
# norm) is reported as unused.
_NATIVE = re.compile(r'^(downsample_layers\.\d\.\d\.|stages\.\d\.\d+\.|norm\d\.)')
OUTPUT_NORM = re.compile(r'^norm\d\.')
_WRAPPERS = ('state_dict', 'model', 'model_ema', 'module')
_DDP_PREFIX = 'module.'


@dataclass
class Converted:
    """Result of :func:`convert_state_dict`.

    Attributes:
        state_dict (OrderedDict): Backbone weights under our key names.
        layout (str): The detected layout.
        unused (list[str]): Keys of the file that are not backbone weights (heads, neck, ...).
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    layout: str
    unused: List[str] = field(default_factory=list)


def unwrap_state_dict(checkpoint: Any) -> 'OrderedDict[str, torch.Tensor]':
    """The tensors of a checkpoint, under their own names.

    Looks inside ``state_dict``, ``model``, ``model_ema`` or ``module`` (the first present, as
    mmengine/mmdet, the official release, EMA and some DDP dumps store them), keeps tensors only
    and strips DDP's ``module.`` prefix.

    Args:
        checkpoint (Any): What ``torch.load`` returned.

    Returns:
        OrderedDict: name -> tensor, in the file's order.

    Raises:
        CheckpointError: Not a dict, or no tensors in it.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'expected a dict of weights, got {type(checkpoint).__name__}')
    for key in _WRAPPERS:
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = OrderedDict(
        (k[len(_DDP_PREFIX):] if k.startswith(_DDP_PREFIX) else k, v)
        for k, v in checkpoint.items() if isinstance(v, torch.Tensor))
    if not state:
        raise CheckpointError('the checkpoint holds no tensors')
    return state


def select_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """The entries under ``prefix``, with the prefix removed (e.g. ``'backbone.'``)."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def convert_state_dict(checkpoint: Mapping[str, Any]) -> Converted:
    """Detect the layout of a loaded checkpoint and rename its backbone weights to ours.

    Args:
        checkpoint (Mapping): What ``torch.load`` returned: ``{'model': ...}`` (official
            classification), ``{'state_dict': ...}`` (official dense, mmpretrain, mmdet/mmseg,
            ours) or a plain state dict (timm, HF transformers).

    Returns:
        Converted: weights, layout name and unused keys.

    Raises:
        CheckpointError: When no ConvNeXt layout matches.
    """
    layout, state = _detect(unwrap_state_dict(checkpoint))
    classifier_norm = layout == MMPRETRAIN and 'head.fc.weight' in state
    renamed: OrderedDict[str, torch.Tensor] = OrderedDict()
    unused = []
    for key, value in state.items():
        for pattern, repl in _RULES.get(layout, ()):
            new_key, hits = re.subn(pattern, repl, key)
            if hits:
                key = new_key
                break
        # mmpretrain classification checkpoints put the pooled-feature norm in norm3 beside a
        # classifier 'head.fc'; their detection/segmentation checkpoints keep norm0..3 as ours.
        if not _NATIVE.match(key) or (classifier_norm and OUTPUT_NORM.match(key)):
            unused.append(key)
            continue
        renamed[key] = _native_shape(key, value)
    return Converted(renamed, layout, unused)


def _detect(state: Dict[str, torch.Tensor]) -> Tuple[str, Dict[str, torch.Tensor]]:
    keys = list(state)
    for prefix in ('convnext.', 'convnextv2.'):
        if any(k.startswith(prefix + 'embeddings.') for k in keys):
            return HF, {k[len(prefix):] if k.startswith(prefix) else k: v
                        for k, v in state.items()}
    if 'stem.0.weight' in state:
        return TIMM, state
    has_prefix = any(k.startswith('backbone.downsample_layers.') for k in keys)
    if has_prefix:
        inner = select_prefix(state, 'backbone.')
        # the rest is kept only so that it is reported as unused
        inner.update((k, v) for k, v in state.items() if not k.startswith('backbone.'))
        state = inner
    elif 'downsample_layers.0.0.weight' not in state:
        raise CheckpointError('no ConvNeXt layout matches: expected keys such as '
                              "'downsample_layers.0.0.weight' (official, mmpretrain), "
                              "'stem.0.weight' (timm) or 'convnext.embeddings.*' (HF); "
                              f'first keys are {keys[:3]}')
    if any('.depthwise_conv.' in k for k in state):
        return MMPRETRAIN, state
    if not has_prefix and ('norm.weight' in state or any(k.startswith('head.') for k in state)):
        return OFFICIAL_CLS, state
    return OFFICIAL_DENSE, state


def _native_shape(key: str, value: torch.Tensor) -> torch.Tensor:
    if re.search(r'pwconv\d\.weight$', key) and value.dim() == 4:   # timm conv-MLP, (O, I, 1, 1)
        return value.flatten(1)
    if re.search(r'grn\.(gamma|beta)$', key) and value.dim() == 1:  # timm / mmpretrain, (C,)
        return value.view(1, 1, 1, -1)
    return value


def describe_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the ConvNeXt held by a state dict in our layout.

    Args:
        state_dict (Mapping): Backbone weights under our names.

    Returns:
        str: e.g. "depths (3, 3, 9, 3), dims (96, 192, 384, 768) ('tiny')", or '' when the
        state dict is incomplete.
    """
    depths = [0] * 4
    for key in state_dict:
        match = re.match(r'stages\.(\d)\.(\d+)\.', key)
        if match:
            stage, block = int(match.group(1)), int(match.group(2))
            depths[stage] = max(depths[stage], block + 1)
    convs = [state_dict.get('downsample_layers.0.0.weight')] + [
        state_dict.get(f'downsample_layers.{i}.1.weight') for i in range(1, 4)]
    if any(c is None for c in convs) or not all(depths):
        return ''
    dims = tuple(int(c.shape[0]) for c in convs)
    grn = any('.grn.' in k for k in state_dict)
    name = arch_name(depths, dims, grn)
    return (f'depths {tuple(depths)}, dims {dims}' + (' with GRN (V2)' if grn else '')
            + (f" ('{name}')" if name else ''))
