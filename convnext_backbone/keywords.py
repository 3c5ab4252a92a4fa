"""mmpretrain's ConvNeXt keywords, translated into this backbone's arguments or refused in one line.

mmdet's and mmseg's ConvNeXt configs build mmpretrain's ``ConvNeXt``
(``mmpretrain/models/backbones/convnext.py``); with only their ``type`` changed to ours they build
this backbone: :func:`mmpretrain_arguments` accepts each of their keywords where it describes
this backbone and names what to write instead otherwise. Keywords of other ConvNeXt ports (the
official detection/segmentation code, timm) get their name here.
"""
from typing import Any, Dict, Optional, Tuple, Union

from .archs import ARCH_SETTINGS, LN_EPS, resolve_arch

__all__ = ['mmpretrain_arguments']

# mmpretrain's ConvNeXt keywords (mmpretrain/models/backbones/convnext.py) that restate what this
# backbone is: the values that do, and what to write otherwise.
_MMPRETRAIN_KEYWORDS = {
    'gap_before_final_norm': (
        (False,), "mmpretrain pools each output to a vector before its norm for classification; "
                  "this backbone emits normalised feature maps (gap_before_final_norm=False): "
                  'remove it'),
    'linear_pw_conv': ((True, False), ''),
    'stem_patch_size': ((4,), 'the stem is the official 4x4 conv of stride 4: remove it'),
    'act_cfg': ((dict(type='GELU'),), "the blocks use GELU: remove act_cfg"),
}
# Keywords of other ConvNeXt ports (the official detection/segmentation ConvNeXt, timm) and what
# they are called here.
_RENAMED = {
    'in_chans': 'in_channels=...',
    'depths': 'arch=dict(depths=..., dims=...)',
    'dims': 'arch=dict(depths=..., dims=...)',
    'channels': 'arch=dict(depths=..., dims=...)',
    'drop_path': 'drop_path_rate=...',
    'ls_init_value': 'layer_scale_init_value=...',
}
_NORM_TYPES = ('LN', 'LN2d')


def mmpretrain_arguments(arch: Union[str, dict], norm_cfg: Optional[dict],
                          use_grn: Optional[bool], kwargs: Dict[str, Any]
                          ) -> Tuple[Union[str, dict], float]:
    """Translate mmpretrain's ConvNeXt keywords, refusing what has no meaning here.

    Args:
        arch (str | dict): ``arch`` as given (ours, or mmpretrain's names and dict).
        norm_cfg (dict, optional): mmpretrain's ``norm_cfg``.
        use_grn (bool, optional): mmpretrain's ``use_grn``.
        kwargs (dict): The other keywords given.

    Returns:
        tuple: (``arch`` for :func:`~.archs.resolve_arch`, the LayerNorm eps).

    Raises:
        ValueError: One line naming the keyword and what to write instead.
    """
    for key, value in kwargs.items():
        if key == 'pretrained':
            if value is None:
                continue
            raise ValueError(
                f'pretrained={value!r} is not an argument of convnext_backbone.ConvNeXt: load '
                f"weights with init_cfg=dict(type='Pretrained', checkpoint=...), and set "
                "model.pretrained=None where a base config sets it (mmseg's upernet_r50.py sets "
                "'open-mmlab://resnet50_v1c', which EncoderDecoder passes to the backbone)")
        if key in _MMPRETRAIN_KEYWORDS:
            allowed, advice = _MMPRETRAIN_KEYWORDS[key]
            if value not in allowed:
                raise ValueError(f'{key}={value!r} is not supported by convnext_backbone.ConvNeXt: '
                                 f'{advice}')
            continue
        hint = (f'write {_RENAMED[key]} instead' if key in _RENAMED else
                'its arguments are arch, in_channels, out_indices, drop_path_rate, '
                'layer_scale_init_value, frozen_stages, with_cp, norm_cfg, use_grn, init_cfg '
                'and mmpretrain\'s gap_before_final_norm, linear_pw_conv, stem_patch_size, '
                'act_cfg')
        raise ValueError(f'unknown argument {key}={value!r} of convnext_backbone.ConvNeXt: {hint}')
    eps = LN_EPS
    if norm_cfg is not None:
        if (not isinstance(norm_cfg, dict) or norm_cfg.get('type') not in _NORM_TYPES
                or not set(norm_cfg) <= {'type', 'eps'}):
            raise ValueError(f'norm_cfg={norm_cfg!r} is not supported: ConvNeXt\'s norms are '
                             "LayerNorms over channels, write norm_cfg=dict(type='LN2d', "
                             'eps=1e-6) or leave it out')
        eps = norm_cfg.get('eps', LN_EPS)
        if not isinstance(eps, (int, float)) or isinstance(eps, bool) or eps <= 0:
            raise ValueError(f'norm_cfg eps={eps!r} must be a positive number')
    if isinstance(arch, dict) and 'channels' in arch and 'dims' not in arch:
        arch = {('dims' if k == 'channels' else k): v for k, v in arch.items()}  # mmpretrain
    if isinstance(arch, str) and arch not in ARCH_SETTINGS and f'v2-{arch}' in ARCH_SETTINGS:
        arch = dict(ARCH_SETTINGS[f'v2-{arch}'], use_grn=bool(use_grn))  # mmpretrain 'atto'...
    if use_grn is None:
        return arch, float(eps)
    if isinstance(arch, dict) and 'use_grn' not in arch:  # mmpretrain: sizes, then use_grn
        return dict(arch, use_grn=bool(use_grn)), float(eps)
    setting = resolve_arch(arch)
    if bool(setting.get('use_grn', False)) == bool(use_grn):
        return arch, float(eps)
    if use_grn and isinstance(arch, str):  # mmpretrain: arch='tiny', use_grn=True is V2 tiny
        return dict(setting, use_grn=True), float(eps)
    raise ValueError(f'use_grn={use_grn!r} contradicts arch={arch!r}: '
                     + ('it has GRN (V2); leave use_grn out, or use a V1 arch'
                        if not use_grn else 'set use_grn=True in the arch dict, or leave it out'))
