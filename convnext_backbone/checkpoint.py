"""Reading ConvNeXt checkpoints of every common layout into our backbone.

``convert_state_dict`` is a pure function: given the object stored in a checkpoint file it detects
the layout and returns the backbone's weights under our (the official) key names.
``load_pretrained`` reads a file or URL and loads the result strictly: every backbone weight must
be found with the right shape; only the per-stage output norms ``norm0..3`` may be absent
(classification checkpoints have none) and are then listed in the log.

Note:
    The classifier's final LayerNorm (official ``norm``, timm ``head.norm``, HF ``layernorm``,
    mmpretrain classification ``norm3``) normalises pooled features, not a feature map. As in the
    official detection/segmentation code, it is not loaded: ``norm3`` starts from weight 1, bias 0.
"""
import argparse
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from mmengine.logging import MMLogger, print_log

# Layout names, as shown to users in logs and errors.
OFFICIAL_CLS = 'official classification'
OFFICIAL_DENSE = 'official detection/segmentation (or convnext_backbone)'
MMPRETRAIN = 'mmpretrain'
TIMM = 'timm'
HF = 'HF transformers'

_BLOCK = r'stages\.(\d)\.(\d+)\.'
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
_OUTPUT_NORM = re.compile(r'^norm\d\.')


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


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


def convert_state_dict(checkpoint: Mapping[str, Any]) -> Converted:
    """Detect the layout of a loaded checkpoint and rename its backbone weights to ours.

    Args:
        checkpoint (Mapping): What ``torch.load`` returned: ``{'model': ...}`` (official
            classification), ``{'state_dict': ...}`` (official dense, mmpretrain, mmdet/mmseg) or a
            plain state dict (timm, HF transformers, ours).

    Returns:
        Converted: weights, layout name and unused keys.

    Raises:
        CheckpointError: When no ConvNeXt layout matches.
    """
    state = _unwrap(checkpoint)
    layout, state = _detect(state)
    renamed: OrderedDict[str, torch.Tensor] = OrderedDict()
    unused = []
    for key, value in state.items():
        for pattern, repl in _RULES.get(layout, ()):
            new_key, hits = re.subn(pattern, repl, key)
            if hits:
                key = new_key
                break
        if not _NATIVE.match(key) or (_OUTPUT_NORM.match(key)
                                      and _is_classifier_norm(layout, state)):
            unused.append(key)
            continue
        renamed[key] = _native_shape(key, value)
    return Converted(renamed, layout, unused)


def _unwrap(checkpoint: Mapping[str, Any]) -> Dict[str, Any]:
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f'expected a dict of weights, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model', 'model_ema', 'module'):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    state = {k[len('module.'):] if k.startswith('module.') else k: v
             for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError('the checkpoint holds no tensors')
    return state


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
        inner = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        rest = {k: v for k, v in state.items() if not k.startswith('backbone.')}
        inner.update(rest)  # kept only so that they are reported as unused
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


def _is_classifier_norm(layout: str, state: Mapping[str, torch.Tensor]) -> bool:
    # mmpretrain classification checkpoints put the final (pooled-feature) norm in norm3 beside a
    # classifier 'head.fc'; their detection/segmentation checkpoints keep norm0..3 as ours.
    return layout == MMPRETRAIN and 'head.fc.weight' in state


def _native_shape(key: str, value: torch.Tensor) -> torch.Tensor:
    if re.search(r'pwconv\d\.weight$', key) and value.dim() == 4:   # timm conv-MLP, (O, I, 1, 1)
        return value.flatten(1)
    if re.search(r'grn\.(gamma|beta)$', key) and value.dim() == 1:  # timm / mmpretrain, (C,)
        return value.view(1, 1, 1, -1)
    return value


# -- reading files ---------------------------------------------------------------------------------
def read_checkpoint(path: str) -> Any:
    """Read a checkpoint file or URL on the CPU with ``weights_only`` loading.

    ``.safetensors`` files are read with safetensors; http(s) URLs are downloaded once into torch
    hub's cache; other mmengine schemes (``open-mmlab://``, ``s3://``...) go through mmengine.

    Raises:
        CheckpointError: Naming the file and the cause when it is missing or unreadable.
    """
    if re.match(r'^https?://', path):
        from torch.hub import download_url_to_file, get_dir
        cached = os.path.join(get_dir(), 'checkpoints', os.path.basename(path.split('?')[0]))
        if not os.path.exists(cached):
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            try:
                download_url_to_file(path, cached, progress=True)
            except OSError as err:  # URLError, HTTPError and socket errors are OSErrors
                reason = getattr(err, 'reason', None) or err
                raise CheckpointError(
                    f'cannot download checkpoint {path}: {reason}; download it where there is a '
                    'connection and set init_cfg.checkpoint to the local file') from None
        path = cached
    elif '://' in path:
        from mmengine.runner.checkpoint import CheckpointLoader
        return CheckpointLoader.load_checkpoint(path, map_location='cpu')
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        if path.endswith('.safetensors'):
            from safetensors.torch import load_file
            return load_file(path, device='cpu')
        return torch_load(path)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any reader error becomes one clear line
        raise CheckpointError(f'cannot read checkpoint {path}: the file is truncated, corrupt or '
                              f'not a PyTorch checkpoint ({type(err).__name__}: '
                              f'{str(err).splitlines()[0] if str(err) else ""})') from None


def _safe_globals() -> list:
    # Harmless types found beside the weights in official (argparse args) and mmengine/mmdet 2.x
    # checkpoints (numpy scalars in meta, the message hub's HistoryBuffer).
    import numpy as np
    found = [argparse.Namespace, np.ndarray, np.dtype, set, OrderedDict]
    multiarray = getattr(np, '_core', None) or np.core
    found += [multiarray.multiarray._reconstruct, multiarray.multiarray.scalar]
    found += [type(np.dtype(t)) for t in ('float64', 'float32', 'int64', 'int32', 'bool')]
    try:
        from mmengine.logging import HistoryBuffer
        found.append(HistoryBuffer)
    except ImportError:  # pragma: no cover
        pass
    return found


def torch_load(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` that also admits the few harmless non-tensor types
    that official and mmengine checkpoints carry."""
    with torch.serialization.safe_globals(_safe_globals()):
        return torch.load(path, map_location='cpu', weights_only=True)


def describe_arch(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Name the ConvNeXt held by a converted state dict, e.g. "depths (3, 3, 9, 3), dims (96,
    192, 384, 768) ('tiny')", or '' when it is incomplete."""
    from .convnext import ARCH_SETTINGS
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
    names = [name for name, a in ARCH_SETTINGS.items()
             if tuple(a['depths']) == tuple(depths) and tuple(a['dims']) == dims
             and a.get('use_grn', False) == grn]
    return (f'depths {tuple(depths)}, dims {dims}' + (' with GRN (V2)' if grn else '')
            + (f" ('{names[0]}')" if names else ''))


# -- loading into the model ------------------------------------------------------------------------
def load_pretrained(model: torch.nn.Module, path: str, prefix: Optional[str] = None,
                    logger: Optional[MMLogger] = None) -> Converted:
    """Load a checkpoint of any known layout into ``model`` (a ``ConvNeXt``), strictly.

    Args:
        model (nn.Module): The backbone.
        path (str): File path or URL.
        prefix (str, optional): Keep only keys under this prefix (stripped) before detection.
        logger (MMLogger, optional): Where to log; defaults to mmengine's current logger.

    Returns:
        Converted: What was loaded.

    Raises:
        CheckpointError: One-line cause naming the file, the layout and the first mismatches.
    """
    raw = read_checkpoint(path)
    if prefix:
        state = _unwrap(raw)
        raw = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        converted = convert_state_dict(raw)
    except CheckpointError as err:
        raise CheckpointError(f'{path}: {err}') from None
    own = model.state_dict()
    theirs = converted.state_dict
    arch = describe_arch(own) or f'depths {tuple(model.depths)}, dims {tuple(model.dims)}'
    where = f'checkpoint {path} (layout: {converted.layout}) does not fit this ConvNeXt ({arch})'
    held = describe_arch(theirs)
    if held:
        where += f'; the checkpoint holds {held}'
    bad_shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
                  for k, v in theirs.items() if k in own and v.shape != own[k].shape]
    if bad_shapes:
        raise CheckpointError(f'{where}: {len(bad_shapes)} shape mismatches, first '
                              + '; '.join(bad_shapes[:3]))
    missing = [k for k in own if k not in theirs]
    extra = [k for k in theirs if k not in own]
    absent_norms = [k for k in missing if _OUTPUT_NORM.match(k)]
    missing = [k for k in missing if k not in absent_norms]
    unused_norms = [k for k in extra if _OUTPUT_NORM.match(k)]
    extra = [k for k in extra if k not in unused_norms]
    if missing or extra:
        detail = []
        if missing:
            detail.append(f'{len(missing)} model weights missing from the checkpoint, first '
                          f'{missing[:3]}')
        if extra:
            detail.append(f'{len(extra)} checkpoint weights the model does not have, first '
                          f'{extra[:3]}')
        raise CheckpointError(f'{where}: ' + '; '.join(detail))
    merged = dict(own)
    merged.update(theirs)
    model.load_state_dict(merged, strict=True)

    def log(msg: str) -> None:
        print_log(msg, logger=logger or 'current')

    log(f'Loaded {len(theirs)} ConvNeXt weights from {path} (layout: {converted.layout}).')
    if absent_norms:
        names = sorted({k.split('.')[0] for k in absent_norms})
        log(f'Not in the checkpoint, kept at their initial values (weight 1, bias 0): '
            f'{", ".join(names)}. This is expected for classification checkpoints.')
    skipped = converted.unused + unused_norms
    if skipped:
        heads = sorted({k.split('.')[0] for k in skipped})
        log(f'Ignored {len(skipped)} checkpoint keys outside this backbone: '
            f'{", ".join(h + ".*" for h in heads)}.')
    return converted
