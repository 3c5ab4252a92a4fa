"""The checkpoint layouts of ConvNeXt, converted to ours by pure functions.

:func:`convert_state_dict` takes what a checkpoint file holds, detects its layout and returns
the backbone's weights under our names (the official ones: ``downsample_layers.*``,
``stages.i.j.*``, ``norm0..3``). Each layout is a short ordered table of regex renames, tried in
order, first match wins; shapes that differ from ours are fixed in :func:`_native_shape`.
:func:`unwrap_state_dict` is the one place that finds the weights inside a checkpoint and strips
DDP's ``module.`` prefix.

``prefix`` (``init_cfg=dict(type='Pretrained', prefix='backbone.')``) means what it means in
mmengine (``_load_checkpoint_with_prefix`` in ``mmengine/runner/checkpoint.py``): the keys under
it, with the prefix removed, are the weights; a prefix without its trailing dot gets one, as
there. Where no key of the file has the prefix, the whole file is read in its own layout and
:attr:`Converted.prefix_note` says so.

Note:
    The classifier's final LayerNorm (official ``norm``, timm ``head.norm``, HF ``layernorm``,
    mmpretrain classification ``norm3``, torchvision ``classifier.0``) normalises pooled
    features, not a feature map. As in the
    official detection/segmentation code, it is not loaded: ``norm3`` starts from weight 1,
    bias 0. Whether a file is a classification file (it has a classifier head) is decided on the
    whole file, before any ``prefix`` is applied, so the prefix never changes what is loaded.
    DINOv3's final norm is different: ``dinov3/models/convnext.py`` applies it to every spatial
    patch token (and to the pooled token beside them), so it is a feature-map norm and becomes
    our ``norm3``.
"""
import math
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ..archs import arch_name
from .io import CheckpointError

# Layout names, as shown to users in logs and errors.
OFFICIAL_CLS = 'official classification'
OFFICIAL_DENSE = 'official detection/segmentation (or convnext_backbone)'
MMPRETRAIN = 'mmpretrain'
TIMM = 'timm'
HF = 'HF transformers'
DINOV3 = 'DINOv3'
DINOV3_HF = 'DINOv3 HF transformers'
FCMAE = 'ConvNeXt-V2 FCMAE pre-training'
TORCHVISION = 'torchvision'

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
    # dinov3/models/convnext.py: official names; 'norms.3' is the module 'norm' again
    # (norms.0..2 are Identity), so both keys hold the same tensors.
    DINOV3: (
        (r'^norms\.3\.', 'norm3.'),
        (r'^norm\.', 'norm3.'),
    ),
    # transformers' convert_dinov3_convnext_to_hf.py, inverted; 'layer_norm' is the final norm.
    DINOV3_HF: (
        (r'^stages\.(\d)\.downsample_layers\.(\d)\.', r'downsample_layers.\1.\2.'),
        (r'^stages\.(\d)\.layers\.(\d+)\.depthwise_conv\.', r'stages.\1.\2.dwconv.'),
        (r'^stages\.(\d)\.layers\.(\d+)\.layer_norm\.', r'stages.\1.\2.norm.'),
        (r'^stages\.(\d)\.layers\.(\d+)\.pointwise_conv(\d)\.', r'stages.\1.\2.pwconv\3.'),
        (r'^stages\.(\d)\.layers\.(\d+)\.', r'stages.\1.\2.'),
        (r'^layer_norm\.', 'norm3.'),
    ),
    # ConvNeXt-V2 models/convnextv2_sparse.py: MinkowskiEngine wrappers keep their torch module
    # as '.ln' / '.linear' and their conv weight as '.kernel' (reshaped in _native_shape).
    FCMAE: (
        (r'\.(ln|linear)\.', '.'),
        (r'\.kernel$', '.weight'),
    ),
}


def _torchvision_rules() -> Tuple[Tuple[str, str], ...]:
    """torchvision/models/convnext.py: ``features`` is [stem, stage 0, downsample, stage 1, ...]
    (stages at odd indices, (LayerNorm2d, conv) downsamples at even ones); a ``CNBlock`` is
    ``block`` = [dwconv, Permute, LayerNorm, Linear, GELU, Linear, Permute] and ``layer_scale``."""
    rows = [(r'^features\.0\.(\d)\.', r'downsample_layers.0.\1.')]
    for i in range(4):
        stage = 2 * i + 1
        rows += [(rf'^features\.{stage}\.(\d+)\.block\.0\.', rf'stages.{i}.\1.dwconv.'),
                 (rf'^features\.{stage}\.(\d+)\.block\.2\.', rf'stages.{i}.\1.norm.'),
                 (rf'^features\.{stage}\.(\d+)\.block\.3\.', rf'stages.{i}.\1.pwconv1.'),
                 (rf'^features\.{stage}\.(\d+)\.block\.5\.', rf'stages.{i}.\1.pwconv2.'),
                 (rf'^features\.{stage}\.(\d+)\.layer_scale$', rf'stages.{i}.\1.gamma')]
        if i < 3:
            rows.append((rf'^features\.{stage + 1}\.(\d)\.', rf'downsample_layers.{i + 1}.\1.'))
    return tuple(rows)


_RULES[TORCHVISION] = _torchvision_rules()
# Keys of the backbone proper, once renamed; anything else (heads, necks, the classifier's final
# norm) is reported as unused.
_NATIVE = re.compile(r'^(downsample_layers\.\d\.\d\.|stages\.\d\.\d+\.|norm\d\.)')
OUTPUT_NORM = re.compile(r'^norm\d\.')
# One line per layout whose loading differs from the classification checkpoints'.
_NOTES = {
    DINOV3: "norm3 is DINOv3's final norm ('norm', stored again as 'norms.3'), which DINOv3 "
            'applies to the spatial patch tokens; DINOv3 has no norm after stages 0-2',
    DINOV3_HF: "norm3 is DINOv3's final 'layer_norm', which DINOv3 applies to the spatial patch "
               'tokens; DINOv3 has no norm after stages 0-2',
    FCMAE: 'the FCMAE encoder has no output norms; its sparse-conv kernels were reshaped to dense '
           'convs, and the decoder, mask_token, proj and pred are pre-training only',
}
# The classifier of mmpretrain's ImageClassifier (LinearClsHead), beside its pooled-feature norm3.
_CLASSIFIER = 'head.fc.weight'
_WRAPPERS = ('state_dict', 'model', 'model_ema', 'module')
_DDP_PREFIX = 'module.'


@dataclass
class Converted:
    """Result of :func:`convert_state_dict`.

    Attributes:
        state_dict (OrderedDict): Backbone weights under our key names.
        layout (str): The detected layout.
        unused (list[str]): Keys of the file that are not backbone weights (heads, neck, ...).
        prefix_note (str): Set when a ``prefix`` was given and no key of the file has it: the
            whole file was read in its own layout. '' otherwise.
    """
    state_dict: 'OrderedDict[str, torch.Tensor]'
    layout: str
    unused: List[str] = field(default_factory=list)
    prefix_note: str = ''

    @property
    def note(self) -> str:
        """What sets this layout apart, for the log (e.g. where ``norm3`` comes from), or ''."""
        return _NOTES.get(self.layout, '')


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


def _strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """All entries, ``prefix`` removed where present: the rest is kept to be reported unused."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def convert_state_dict(checkpoint: Mapping[str, Any], prefix: Optional[str] = None) -> Converted:
    """Detect the layout of a loaded checkpoint and rename its backbone weights to ours.

    Args:
        checkpoint (Mapping): What ``torch.load`` returned: ``{'model': ...}`` (official
            classification, FCMAE pre-training), ``{'state_dict': ...}`` (official dense,
            mmpretrain, mmdet/mmseg, ours) or a plain state dict (timm, HF transformers, DINOv3).
        prefix (str, optional): Read only the keys under this prefix, stripped (e.g.
            ``'backbone.'``), as mmengine's ``prefix`` does; where no key has it, the whole file
            (see the module docstring). Defaults to None.

    Returns:
        Converted: weights, layout name and unused keys.

    Raises:
        CheckpointError: When no ConvNeXt layout matches, or two keys of the file that name the
            same weight hold different values.
    """
    state = unwrap_state_dict(checkpoint)
    # decided on the whole file, so that a prefix never changes whether norm3 is loaded
    classifier = any(k == _CLASSIFIER or k.endswith('.' + _CLASSIFIER) for k in state)
    prefix_note = ''
    if prefix:
        prefix = prefix if prefix.endswith('.') else prefix + '.'
        selected = select_prefix(state, prefix)
        if selected:
            state = selected
        else:
            prefix_note = (f'no key of the file starts with the prefix {prefix!r}, so the whole '
                           'file is read in its own layout')
    layout, state = _detect(state)
    classifier_norm = layout == MMPRETRAIN and classifier
    renamed: OrderedDict[str, torch.Tensor] = OrderedDict()
    sources: Dict[str, str] = {}
    unused = []
    for original, value in state.items():
        key = original
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
        value = _native_shape(key, value)
        if key in renamed:  # DINOv3 stores its final norm twice ('norm' and 'norms.3')
            if renamed[key] is not value and not torch.equal(renamed[key], value):
                raise CheckpointError(f'{layout} checkpoint: {sources[key]!r} and {original!r} '
                                      f'both map to {key!r} but hold different values')
            continue
        renamed[key], sources[key] = value, original
    return Converted(renamed, layout, unused, prefix_note)


def _detect(state: Dict[str, torch.Tensor]) -> Tuple[str, Dict[str, torch.Tensor]]:
    keys = list(state)
    # '' too: what init_cfg prefix='convnext.' leaves of an HF file
    for prefix in ('convnext.', 'convnextv2.', ''):
        if any(k.startswith(prefix + 'embeddings.patch_embeddings.') for k in keys):
            return HF, _strip_prefix(state, prefix)
    if 'stem.0.weight' in state:
        return TIMM, state
    if 'features.0.0.weight' in state and 'features.1.0.layer_scale' in state:
        return TORCHVISION, state
    # DINOv3 HF: what save_pretrained writes, or the 'model.'-prefixed in-memory state dict
    # of transformers >= 5.
    for prefix in ('', 'model.'):
        if prefix + 'stages.0.downsample_layers.0.weight' in state:
            return DINOV3_HF, _strip_prefix(state, prefix)
    if 'encoder.downsample_layers.0.0.weight' in state:
        return FCMAE, _strip_prefix(state, 'encoder.')
    if 'downsample_layers.0.0.weight' in state and any(k.endswith('.kernel') for k in keys):
        return FCMAE, state  # what init_cfg prefix='encoder.' leaves of an FCMAE file
    has_prefix = any(k.startswith('backbone.downsample_layers.') for k in keys)
    if has_prefix:
        state = _strip_prefix(state, 'backbone.')
    elif 'downsample_layers.0.0.weight' not in state:
        raise CheckpointError('no ConvNeXt layout matches: expected keys such as '
                              "'downsample_layers.0.0.weight' (official, mmpretrain, DINOv3), "
                              "'stem.0.weight' (timm), 'convnext.embeddings.*' (HF), "
                              "'features.0.0.weight' (torchvision), "
                              "'stages.0.downsample_layers.0.weight' (DINOv3 HF) or "
                              f"'encoder.downsample_layers.*' (FCMAE); first keys are {keys[:3]}")
    if any('.depthwise_conv.' in k for k in state):
        return MMPRETRAIN, state
    if not has_prefix and 'norms.3.weight' in state:
        return DINOV3, state
    if not has_prefix and ('norm.weight' in state or any(k.startswith('head.') for k in state)):
        return OFFICIAL_CLS, state
    return OFFICIAL_DENSE, state


def _native_shape(key: str, value: torch.Tensor) -> torch.Tensor:
    if re.search(r'pwconv\d\.weight$', key) and value.dim() == 4:   # timm conv-MLP, (O, I, 1, 1)
        return value.flatten(1)
    if re.search(r'grn\.(gamma|beta)$', key) and value.dim() != 4:  # timm, mmpretrain (C,); FCMAE
        return value.reshape(1, 1, 1, -1)                              # (1, C)
    if re.search(r'(dwconv|downsample_layers\.\d\.\d)\.weight$', key) and value.dim() in (2, 3):
        return _dense_kernel(key, value)                               # FCMAE sparse kernels
    if key.endswith('.bias') and value.dim() == 2:                     # FCMAE (1, C)
        return value.reshape(-1)
    if key.endswith('.gamma') and value.dim() == 3:                    # torchvision (C, 1, 1)
        return value.reshape(-1)
    return value


def _dense_kernel(key: str, kernel: torch.Tensor) -> torch.Tensor:
    """A MinkowskiEngine kernel as a torch conv weight.

    (k*k, in, out) becomes (out, in, k, k) and a depthwise (k*k, C) becomes (C, 1, k, k). Kernel
    offset ``w * k + h`` holds weight ``[..., h, w]``: the reordering of ConvNeXt-V2's
    ``remap_checkpoint_keys`` (utils.py), which fine-tunes FCMAE weights in dense models.
    """
    if kernel.dim() == 2:
        kernel = kernel.unsqueeze(1)
    area, c_in, c_out = kernel.shape
    size = math.isqrt(area)
    if size * size != area:
        raise CheckpointError(f'{key}: a sparse kernel of {area} offsets is not a square k*k')
    return kernel.permute(2, 1, 0).reshape(c_out, c_in, size, size).transpose(2, 3).contiguous()


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
