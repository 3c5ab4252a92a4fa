"""Layer-wise learning-rate decay for any OpenMMLab model whose backbone maps its own parameters
to layer ids (official ConvNeXt semantics), in the mmdet and mmseg scopes alike.

Config (any scope, no ``custom_imports`` needed)::

    optim_wrapper = dict(
        type='OptimWrapper',  # or 'AmpOptimWrapper'
        constructor='convnext_backbone.LayerDecayOptimizerConstructor',
        optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
        paramwise_cfg=dict(num_layers=6, decay_rate=0.95, decay_type='layer_wise'))

The backbone protocol (implemented by :class:`convnext_backbone.ConvNeXt`):

- ``get_layer_id(param_name, num_layers, decay_type) -> int`` (required), ``param_name`` relative
  to the backbone;
- ``no_weight_decay() -> set[str]`` (optional): extra names that get no weight decay;
- ``min_num_layers(decay_type) -> int`` (optional): smallest ``num_layers`` that fits;
- ``default_num_layers(decay_type) -> int`` (needed when ``num_layers`` is omitted).
"""
import math
from typing import Dict, List, Optional, Set, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.utils.dl_utils.parrots_wrapper import _BatchNorm, _InstanceNorm
from torch import nn

from .registry import OPTIM_WRAPPER_CONSTRUCTORS

#: The layer-id rules a backbone's ``get_layer_id`` must know (official semantics).
DECAY_TYPES = ('layer_wise', 'stage_wise')

_NORMS = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
# paramwise_cfg keys of mmengine's DefaultOptimWrapperConstructor that we honour on top of the
# layer decay, and our own.
_OWN_KEYS = ('num_layers', 'decay_rate', 'decay_type')
_MMENGINE_KEYS = ('custom_keys', 'bias_lr_mult', 'bias_decay_mult', 'norm_decay_mult',
                  'dwconv_decay_mult', 'flat_decay_mult', 'bypass_duplicate')
_CUSTOM_KEY_FIELDS = ('lr_mult', 'decay_mult')


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer wrapper constructor with layer-wise lr decay over the model's backbone.

    Every trainable parameter gets a layer id: backbone parameters the one their backbone reports
    through ``get_layer_id``, all others (necks, heads) ``num_layers + 1``. Then

    - ``lr = base_lr * decay_rate ** (num_layers + 1 - layer_id) * lr_mult``;
    - ``weight_decay = 0`` for 1-D parameters (norms, layer scale), biases and the backbone's
      ``no_weight_decay()`` names, ``base_wd`` otherwise, times ``decay_mult``;
    - parameters with ``requires_grad=False`` are left out;
    - parameters sharing (layer id, lr, weight decay) form one param group.

    ``lr_mult`` and ``decay_mult`` come from mmengine's usual ``paramwise_cfg`` options with
    mmengine's precedence: the longest matching ``custom_keys`` entry (its ``lr_mult`` and
    ``decay_mult``), otherwise ``bias_lr_mult``, then the first that applies of
    ``norm_decay_mult``, ``bias_decay_mult``, ``dwconv_decay_mult``, ``flat_decay_mult``.

    Args:
        optim_wrapper_cfg (dict): The optimizer wrapper config; ``optimizer`` must set ``lr``
            and ``weight_decay``.
        paramwise_cfg (dict): ``decay_rate`` (float in (0, 1], required), ``decay_type``
            ('layer_wise' or 'stage_wise', defaults to 'layer_wise'), ``num_layers`` (int,
            defaults to the backbone's ``default_num_layers``: 6 for ConvNeXt-T, 12 for S/B/L/XL)
            and any of mmengine's options listed above.

    Note:
        mmdet 3.3's ``LearningRateDecayOptimizerConstructor``
        (``mmdet/engine/optimizers/layer_decay_optimizer_constructor.py``) replaces ``add_params``
        with a loop that raises ``NotImplementedError`` unless the backbone's class name contains
        'ConvNeXt' (mmseg 1.2's copy, ``mmseg/engine/optimizers/
        layer_decay_optimizer_constructor.py``, also takes 'BEiT' and 'MAE' for ``layer_wise``),
        reads only ``num_layers``, ``decay_rate`` and ``decay_type`` from ``paramwise_cfg`` (no
        ``custom_keys``, no ``*_mult``), never checks ``num_layers`` against the depth, and groups
        parameters by ``layer_{id}_{decay|no_decay}``. Here the backbone reports layer ids (no
        name matching), mmengine's ``paramwise_cfg`` options apply, ``num_layers`` is checked,
        and parameters are grouped by (layer id, lr, weight decay): the same groups as theirs
        when no option changes lr or weight decay within a layer.
        Because the official rule already gives 1-D parameters and biases no weight decay,
        ``norm_decay_mult``, ``bias_decay_mult`` and ``flat_decay_mult`` multiply 0 for them;
        ``dwconv_decay_mult`` and ``custom_keys`` are the options that change decayed weights.
        ``dcn_offset_lr_mult`` is not supported. Shared parameters are added once (as with
        ``bypass_duplicate=True``).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        if not paramwise_cfg:
            raise ValueError('LayerDecayOptimizerConstructor needs paramwise_cfg with at least '
                             "decay_rate, e.g. dict(num_layers=6, decay_rate=0.95, "
                             "decay_type='layer_wise')")
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.decay_rate: float = float(self.paramwise_cfg['decay_rate'])
        self.decay_type: str = self.paramwise_cfg.get('decay_type', 'layer_wise')
        self.num_layers: Optional[int] = self.paramwise_cfg.get('num_layers')

    def _validate_cfg(self) -> None:
        super()._validate_cfg()
        cfg = self.paramwise_cfg
        unknown = sorted(set(cfg) - set(_OWN_KEYS) - set(_MMENGINE_KEYS))
        if unknown:
            raise ValueError(f'paramwise_cfg keys {unknown} are not supported by '
                             'LayerDecayOptimizerConstructor; allowed: '
                             f'{", ".join(_OWN_KEYS + _MMENGINE_KEYS)}')
        check_decay_type(cfg.get('decay_type', 'layer_wise'))
        if 'decay_rate' not in cfg:
            raise ValueError('paramwise_cfg needs decay_rate (the official recipes use 0.95, '
                             '0.9, 0.8 or 0.7)')
        rate = cfg['decay_rate']
        if (isinstance(rate, bool) or not isinstance(rate, (int, float))
                or not 0 < rate <= 1):
            raise ValueError(f'decay_rate={rate!r} must be a number in (0, 1]')
        num_layers = cfg.get('num_layers')
        if num_layers is not None and (isinstance(num_layers, bool)
                                       or not isinstance(num_layers, int) or num_layers < 1):
            raise ValueError(f'num_layers={num_layers!r} must be a positive int, or omitted to '
                             "use the backbone's default")
        for key, fields in cfg.get('custom_keys', {}).items():
            bad = sorted(set(fields) - set(_CUSTOM_KEY_FIELDS))
            if bad:
                raise ValueError(f'custom_keys[{key!r}] has unsupported fields {bad}; '
                                 f'allowed: {", ".join(_CUSTOM_KEY_FIELDS)}')
        if self.base_lr is None:
            raise ValueError('LayerDecayOptimizerConstructor needs optimizer.lr')
        if self.base_wd is None:
            raise ValueError('LayerDecayOptimizerConstructor needs optimizer.weight_decay '
                             '(the official recipes use 0.05; set 0 for none)')

    # -- building the param groups -------------------------------------------------------------
    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   is_dcn_module: Optional[Union[int, float]] = None) -> None:
        """Append the param groups of the whole model ``module`` to ``params``.

        Args:
            params (list[dict]): Param groups, extended in place.
            module (nn.Module): The model (a DDP wrapper is unwrapped); it must have a
                ``backbone`` attribute.
            prefix (str): Unused; kept for the parent's signature. Defaults to ''.
            is_dcn_module (int | float, optional): Unused. Defaults to None.
        """
        model = module.module if hasattr(module, 'module') else module
        backbone = _find_backbone(model)
        num_layers = self._resolve_num_layers(backbone)
        backbone_names = {id(p): name for name, p in backbone.named_parameters()}
        no_decay_names: Set[str] = set(getattr(backbone, 'no_weight_decay', set)())

        groups: Dict[Tuple[int, float, float], dict] = {}
        frozen = 0
        seen: Set[int] = set()
        for module_name, mod in model.named_modules():
            for pname, param in mod.named_parameters(recurse=False):
                if id(param) in seen:
                    continue
                seen.add(id(param))
                if not param.requires_grad:
                    frozen += 1
                    continue
                name = f'{module_name}.{pname}' if module_name else pname
                rel_name = backbone_names.get(id(param))
                if rel_name is None:
                    layer_id = num_layers + 1
                else:
                    layer_id = int(backbone.get_layer_id(rel_name, num_layers, self.decay_type))
                no_decay = (param.ndim == 1 or pname == 'bias'
                            or (rel_name is not None and rel_name in no_decay_names))
                lr_mult, decay_mult = self._multipliers(name, pname, param, mod)
                lr = self.base_lr * self.decay_rate ** (num_layers + 1 - layer_id) * lr_mult
                weight_decay = 0. if no_decay else self.base_wd * decay_mult
                key = (layer_id, lr, weight_decay)
                if key not in groups:
                    groups[key] = dict(params=[], lr=lr, weight_decay=weight_decay)
                groups[key]['params'].append(param)
        ordered = sorted(groups.items(), key=lambda item: item[0][0])
        params.extend(group for _, group in ordered)
        self._log_table(ordered, backbone, num_layers, frozen)

    def _resolve_num_layers(self, backbone: nn.Module) -> int:
        name = type(backbone).__name__
        num_layers = self.num_layers
        if num_layers is None:
            if not hasattr(backbone, 'default_num_layers'):
                raise ValueError(f'paramwise_cfg.num_layers is omitted and backbone {name} has '
                                 'no default_num_layers(decay_type): set num_layers')
            return int(backbone.default_num_layers(self.decay_type))
        if hasattr(backbone, 'min_num_layers'):
            least = int(backbone.min_num_layers(self.decay_type))
            if num_layers < least:
                depths = getattr(backbone, 'depths', None)
                arch = f' with depths {tuple(depths)}' if depths is not None else ''
                default = (f' (default {backbone.default_num_layers(self.decay_type)})'
                           if hasattr(backbone, 'default_num_layers') else '')
                raise ValueError(
                    f'num_layers={num_layers} does not fit backbone {name}{arch} with '
                    f'decay_type {self.decay_type!r}: its layers need num_layers >= {least}'
                    f'{default}; use num_layers={least} or more, or omit it')
        return num_layers

    def _multipliers(self, name: str, pname: str, param: torch.Tensor,
                     mod: nn.Module) -> Tuple[float, float]:
        """(lr_mult, decay_mult) from mmengine's paramwise options, with mmengine's
        precedence."""
        cfg = self.paramwise_cfg
        custom_keys = cfg.get('custom_keys', {})
        # Longest key first, alphabetical among equals: mmengine's rule.
        for key in sorted(sorted(custom_keys), key=len, reverse=True):
            if key in name:
                return (float(custom_keys[key].get('lr_mult', 1.)),
                        float(custom_keys[key].get('decay_mult', 1.)))
        is_norm = isinstance(mod, _NORMS)
        is_bias = pname == 'bias'
        lr_mult = 1.
        if is_bias and not is_norm and cfg.get('bias_lr_mult') is not None:
            lr_mult = float(cfg['bias_lr_mult'])
        is_dwconv = isinstance(mod, nn.Conv2d) and mod.in_channels == mod.groups
        for applies, key in ((is_norm, 'norm_decay_mult'), (is_bias, 'bias_decay_mult'),
                             (is_dwconv, 'dwconv_decay_mult'),
                             (param.ndim == 1, 'flat_decay_mult')):
            if applies and cfg.get(key) is not None:
                return lr_mult, float(cfg[key])
        return lr_mult, 1.

    def _log_table(self, ordered: list, backbone: nn.Module, num_layers: int,
                   frozen: int) -> None:
        lines = [f'Layer-wise lr decay for backbone {type(backbone).__name__}: decay_type '
                 f'{self.decay_type}, num_layers {num_layers}, decay_rate {self.decay_rate}, '
                 f'base lr {self.base_lr:g}, weight decay {self.base_wd:g}; '
                 f'{len(ordered)} param groups'
                 + (f', {frozen} frozen parameters skipped' if frozen else '') + '.',
                 f'{"layer id":>8}  {"lr scale":>8}  {"weight decay":>12}  {"tensors":>7}  '
                 f'{"elements":>11}']
        for (layer_id, lr, weight_decay), group in ordered:
            elements = sum(p.numel() for p in group['params'])
            scale = lr / self.base_lr if self.base_lr else math.nan
            lines.append(f'{layer_id:>8}  {scale:>8.4f}  {weight_decay:>12g}  '
                         f'{len(group["params"]):>7}  {elements:>11,}')
        print_log('\n'.join(lines), logger='current')


def check_decay_type(decay_type: str) -> None:
    """Raise ``ValueError`` naming the known types unless ``decay_type`` is one of them."""
    if decay_type not in DECAY_TYPES:
        raise ValueError(f'unknown decay_type {decay_type!r}; use one of '
                         f'{", ".join(repr(t) for t in DECAY_TYPES)}')


def _find_backbone(model: nn.Module) -> nn.Module:
    backbone = getattr(model, 'backbone', None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f'LayerDecayOptimizerConstructor needs a model with a `backbone` '
                         f'module; {type(model).__name__} has none')
    if not callable(getattr(backbone, 'get_layer_id', None)):
        raise TypeError(f'backbone {type(backbone).__name__} has no get_layer_id(param_name, '
                        'num_layers, decay_type), so LayerDecayOptimizerConstructor cannot '
                        'assign layer ids; use a backbone that provides it, such as '
                        "convnext_backbone.ConvNeXt, or mmengine's DefaultOptimWrapperConstructor")
    return backbone
