"""The ConvNeXt backbone (V1 and V2) for dense prediction with mmdet 3.x and mmseg 1.x.

Model math only, read like the official ``models/convnext.py``: sizes are data (``archs.py``),
mmpretrain's keywords are translated in ``keywords.py``, checkpoint reading and key conversion
live in ``checkpoint/``. Parameter names follow the official release (``downsample_layers.*``,
``stages.i.j.*``, ``norm0..3``), so official detection/segmentation checkpoints load unrenamed.

Note:
    We keep activations in NHWC (channels last) from the stem to the outputs: the depthwise conv
    runs on a channels-last view, LayerNorm and the pointwise Linear layers work on the last
    dimension, so no block copies its input between layouts. The official code permutes twice per
    block. Only the emitted outputs are copied once to NCHW memory, as mmcv's ops expect. On the
    CPU the block's MLP and its tail (layer scale, residual add) may run as one fast kernel where
    ``fast_path.py`` proves it computes the same function; which kernel is decided once per
    process and shape class, or pinned from a file (``ops.py``, ``tuning.py``). Numerics are
    the official ones up to float rounding (docs/performance.md). bf16 autocast on a CPU
    without native bf16 warns once (``machine.py``).
"""
from typing import Any, Optional, Sequence, Set, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import compat, depthwise, fast_path, head, machine, ops, outputs
from .archs import ARCH_SETTINGS, LN_EPS, resolve_arch
from .checkpoint import load_pretrained
from .keywords import mmpretrain_arguments
from .layer_decay import check_decay_type
from .registry import MODELS

__all__ = ['ARCH_SETTINGS', 'ConvNeXt']


class GRN(nn.Module):
    """Global Response Normalization (ConvNeXt V2) on NHWC input.

    Args:
        dim (int): Number of channels.

    Note:
        The spatial L2 norm is computed in float32 whatever the input's dtype: in fp16 the sum of
        squares of large activations overflows to inf (facebookresearch/ConvNeXt-V2#64), and
        under bf16 it loses precision. The output keeps the input's dtype. In float32 this is
        the official computation.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        # (1, 1, 1, C) as in the official release, so its checkpoints load unchanged.
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gx = torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True,
                                      dtype=torch.float32)           # (N, 1, 1, C), float32
        nx = gx / (gx.mean(dim=-1, keepdim=True) + 1e-6)
        # gamma * (x * nx) + beta + x in one pass over x: beta + x * (gamma * nx + 1).
        scale = torch.addcmul(torch.ones_like(nx), self.gamma.float(), nx).to(x.dtype)
        return torch.addcmul(self.beta.to(x.dtype), x, scale)


class Block(nn.Module):
    """ConvNeXt block: dwconv 7x7 -> LN -> Linear 4x -> GELU [-> GRN] -> Linear -> scale -> +x.

    Works on NHWC tensors, (N, H, W, C) -> (N, H, W, C).

    Args:
        dim (int): Number of channels.
        drop_path (float): Stochastic depth rate of this block. Defaults to 0.
        layer_scale_init_value (float): Initial layer scale; 0 disables it. Defaults to 1e-6.
        use_grn (bool): Add GRN after GELU (V2). Defaults to False.
        norm_eps (float): eps of the LayerNorm. Defaults to 1e-6.

    Note:
        On the CPU the part from pwconv1 to the residual add may run as one fast kernel (oneDNN
        products with the bias, GELU or residual add inside, or a cache-blocked MLP; ``ops.py``)
        instead of the modules one by one, only where ``fast_path.decide`` proves it computes
        the same function (:meth:`why_not_fast_path` says why not); in inference dwconv ->
        norm may run as our compiled kernel (``head.py``, ``fast_path.head_reason``).
        Otherwise the modules run as written, as in ``torch.nn.TransformerEncoderLayer``'s
        fast path.
    """

    def __init__(self, dim: int, drop_path: float = 0., layer_scale_init_value: float = 1e-6,
                 use_grn: bool = False, norm_eps: float = LN_EPS) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.grn = GRN(4 * dim) if use_grn else None
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = (nn.Parameter(torch.full((dim,), float(layer_scale_init_value)))
                      if layer_scale_init_value > 0 else None)
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x                                                  # (N, H, W, C)
        path = fast_path.decide(self, x)                              # once per call
        if path.kind == fast_path.INFERENCE and fast_path.native_head(self, x):
            x = head.dwconv_norm(x, self.dwconv, self.norm)           # the same function
        else:
            if (path.kind == fast_path.TRAINING and path.with_grad
                    and fast_path.native_dwconv(self, x)):
                x = depthwise.depthwise_conv(x, self.dwconv)           # the same function
            else:
                # A channels-last view of x: the conv reads and writes NHWC memory, no copy.
                x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # (N, H, W, C)
            x = self.norm(x)
        if path.kind == fast_path.INFERENCE:                          # the same function
            return ops.residual_mlp(x, *self._pwconv_weights(), shortcut, self.gamma, self.grn)
        if path.kind == fast_path.TRAINING:                           # the same function
            x = ops.mlp(x, *self._pwconv_weights(), with_grad=path.with_grad)
        else:
            x = self.pwconv1(x)                                       # (N, H, W, 4C)
            x = self.act(x)
            if self.grn is not None:
                x = self.grn(x)
            x = self.pwconv2(x)                                       # (N, H, W, C)
        return layer_scale_drop_path_add(shortcut, x, self.gamma, self.drop_prob())

    def why_not_fast_path(self, x: torch.Tensor) -> str:
        """Why the modules after ``norm`` run one by one for input ``x`` ('' when a fast kernel
        computes the same function and runs instead; see ``fast_path.decide``).

        Args:
            x (torch.Tensor): The block input, (N, H, W, C).

        Returns:
            str: The first condition that fails, or ''.
        """
        return fast_path.decide(self, x).reason

    def drop_prob(self) -> float:
        """The drop path probability of this call: the rate in training mode, else 0."""
        return self.drop_path if self.training else 0.

    def _pwconv_weights(self) -> Tuple[torch.Tensor, ...]:
        return self.pwconv1.weight, self.pwconv1.bias, self.pwconv2.weight, self.pwconv2.bias


def layer_scale_drop_path_add(shortcut: torch.Tensor, x: torch.Tensor,
                              gamma: Optional[torch.Tensor], drop_prob: float) -> torch.Tensor:
    """``shortcut + drop_path(gamma * x)`` in one pass over x.

    Drop path (stochastic depth) zeroes the branch of a whole sample with probability
    ``drop_prob`` and scales the kept ones by ``1 / (1 - drop_prob)``.

    Args:
        shortcut (torch.Tensor): (N, H, W, C), the block input.
        x (torch.Tensor): (N, H, W, C), the branch (pwconv2's output).
        gamma (torch.Tensor, optional): (C,), the layer scale; None for none.
        drop_prob (float): Drop path probability; 0 in eval mode.

    Returns:
        torch.Tensor: (N, H, W, C).
    """
    scale = gamma
    if drop_prob > 0:
        keep = 1 - drop_prob
        mask = shortcut.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep).div_(keep)
        scale = mask if gamma is None else gamma * mask               # (N, 1, 1, C)
    return shortcut + x if scale is None else torch.addcmul(shortcut, x, scale)


@MODELS.register_module()
class ConvNeXt(BaseModule):
    """Multi-scale ConvNeXt backbone (V1 and V2) emitting normalised stage features.

    Each emitted stage output passes through its own LayerNorm ``norm{i}`` (eps 1e-6), as in the
    official detection and segmentation code.

    The keywords of mmpretrain's ``ConvNeXt`` (``mmpretrain/models/backbones/convnext.py``, the
    backbone of mmdet's and mmseg's ConvNeXt configs) are accepted where they describe this
    backbone: ``norm_cfg``, ``use_grn``, mmpretrain's arch names ('atto' ... 'huge') and
    ``dict(depths=..., channels=...)``, ``gap_before_final_norm=False``, ``linear_pw_conv``
    (True or False: a 1x1 conv on NCHW and a Linear on NHWC are the same function, and 4-D
    1x1-conv weights are reshaped when loaded), ``stem_patch_size=4`` and
    ``act_cfg=dict(type='GELU')``. Any other value, ``pretrained=...`` (mmseg's
    ``EncoderDecoder`` passes ``model.pretrained`` to the backbone) and unknown keywords are a
    one-line ``ValueError`` saying what to write instead.

    Args:
        arch (str | dict): One of ``ARCH_SETTINGS`` ('tiny', 'small', 'base', 'large', 'xlarge',
            'v2-atto' ... 'v2-huge') or ``dict(depths=(4 ints), dims=(4 ints), use_grn=False)``.
            Defaults to 'tiny'.
        in_channels (int): Channels of the input image. Defaults to 3.
        out_indices (Sequence[int] | int): Stages to emit (0..3, negative counts from the end).
            Outputs come in stage order. Defaults to (0, 1, 2, 3).
        drop_path_rate (float): Stochastic depth rate, growing linearly from 0 over all blocks.
            Defaults to 0.
        layer_scale_init_value (float): Initial layer scale of V1 blocks; 0 disables it. V2 archs
            have no layer scale. Defaults to 1e-6.
        frozen_stages (int): Freeze the stem and stages ``< frozen_stages`` (no grad, eval mode).
            0 or -1 freezes nothing. Defaults to 0.
        with_cp (bool): Checkpoint each block's activations to save memory in training.
            Defaults to False.
        norm_cfg (dict, optional): mmpretrain's norm config: ``dict(type='LN2d', eps=1e-6)``
            (or ``'LN'``); its ``eps`` applies to every LayerNorm. Defaults to None (eps 1e-6).
        use_grn (bool, optional): mmpretrain's V2 switch: True gives V2 blocks (GRN, no layer
            scale) of the arch's sizes, e.g. ``arch='tiny', use_grn=True`` is 'v2-tiny'.
            Defaults to None (as the arch says).
        init_cfg (dict | list[dict], optional): mmengine init config. ``dict(type='Pretrained',
            checkpoint=PATH_OR_URL)`` loads any known ConvNeXt checkpoint layout (see
            ``convnext_backbone.checkpoint``). Defaults to None.
        **kwargs: mmpretrain's other keywords, accepted where they describe this backbone (see
            above).
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 frozen_stages: int = 0,
                 with_cp: bool = False,
                 norm_cfg: Optional[dict] = None,
                 use_grn: Optional[bool] = None,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **kwargs: Any) -> None:
        super().__init__(init_cfg=init_cfg)
        arch, norm_eps = mmpretrain_arguments(arch, norm_cfg, use_grn, kwargs)
        setting = resolve_arch(arch)
        self.depths: Tuple[int, ...] = tuple(setting['depths'])
        self.dims: Tuple[int, ...] = tuple(setting['dims'])
        self.use_grn: bool = bool(setting.get('use_grn', False))
        self.out_indices: Tuple[int, ...] = _normalise_out_indices(out_indices)
        if not isinstance(frozen_stages, int) or not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages={frozen_stages!r} is out of range: use -1 or 0 '
                             '(nothing frozen) up to 4 (stem and all four stages frozen)')
        if not isinstance(in_channels, int) or in_channels < 1:
            raise ValueError(f'in_channels={in_channels!r} must be a positive int')
        if not 0 <= drop_path_rate < 1:
            raise ValueError(f'drop_path_rate={drop_path_rate!r} must be in [0, 1)')
        self.in_channels = in_channels
        self.frozen_stages = frozen_stages
        self.with_cp = with_cp
        self.out_channels: Tuple[int, ...] = tuple(self.dims[i] for i in self.out_indices)
        self.out_strides: Tuple[int, ...] = tuple(4 * 2 ** i for i in self.out_indices)
        if self.use_grn:
            layer_scale_init_value = 0.  # V2 blocks have no layer scale

        dims = self.dims
        # downsample_layers[0] is the stem (conv 4x4/4, LN); [i] is (LN, conv 2x2/2).
        self.downsample_layers = nn.ModuleList([nn.Sequential(
            nn.Conv2d(in_channels, dims[0], kernel_size=4, stride=4),
            nn.LayerNorm(dims[0], eps=norm_eps))])
        for i in range(1, 4):
            self.downsample_layers.append(nn.Sequential(
                nn.LayerNorm(dims[i - 1], eps=norm_eps),
                nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2)))
        total = sum(self.depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            first = sum(self.depths[:i])
            self.stages.append(nn.Sequential(*[
                Block(dims[i], rates[first + j], layer_scale_init_value, self.use_grn, norm_eps)
                for j in range(depth)]))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i], eps=norm_eps))

        self.apply(_init_module)
        self._freeze_stages()

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, C_in, H, W) with H, W >= 32 -> tuple of (N, dims[i], H / 2**(i+2), W / 2**(i+2))."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'ConvNeXt expects input of shape (N, {self.in_channels}, H, W), '
                             f'got {tuple(x.shape)}')
        if min(x.shape[-2:]) < 32:
            raise ValueError(f'input {x.shape[-2]}x{x.shape[-1]} is too small: ConvNeXt '
                             'downsamples by 32, so H and W must be at least 32')
        if (not fast_path.plain_only() and x.device.type == 'cpu'
                and torch.bfloat16 in (x.dtype, compat.autocast_dtype('cpu')
                                       if compat.autocast_enabled('cpu') else None)):
            machine.warn_bf16_without_native_support()  # once per process, where bf16 is slow
        outs = []
        for i in range(4):
            if i == 0:
                # indexed, not unpacked: torch 2.1's dynamo cannot unpack a module list
                conv, norm = self.downsample_layers[0][0], self.downsample_layers[0][1]
                x = norm(conv(x.contiguous(memory_format=torch.channels_last))
                         .permute(0, 2, 3, 1))                        # (N, H/4, W/4, C0)
            else:
                norm, conv = self.downsample_layers[i][0], self.downsample_layers[i][1]
                x = conv(norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            for block in self.stages[i]:
                if self.with_cp and self.training and x.requires_grad:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                # NCHW memory: mmcv's RoIAlign (and other custom ops) index their input as
                # contiguous NCHW whatever its strides say, so a channels-last view would be
                # pooled as garbage. norm{i} then the copy, or our kernel doing both at once.
                outs.append(outputs.stage_output(x, getattr(self, f'norm{i}')))
        return tuple(outs)

    # -- freezing ----------------------------------------------------------------------------
    def _freeze_stages(self) -> None:
        for i in range(max(self.frozen_stages, 0)):
            for module in (self.downsample_layers[i], self.stages[i]):
                module.eval()
                for param in module.parameters():
                    param.requires_grad = False

    def train(self, mode: bool = True) -> 'ConvNeXt':
        """Set train/eval mode; frozen stages stay in eval mode. Returns self."""
        super().train(mode)
        self._freeze_stages()
        return self

    # -- weights -----------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Load ``init_cfg=dict(type='Pretrained', checkpoint=...)`` with layout detection and a
        strict check, or apply mmengine's initialisers for any other ``init_cfg``."""
        cfg = self.init_cfg
        if isinstance(cfg, dict) and cfg.get('type') == 'Pretrained':
            load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'))
            self._is_init = True
        else:
            super().init_weights()

    # -- layer-wise learning-rate decay --------------------------------------------------------
    def min_num_layers(self, decay_type: str = 'layer_wise') -> int:
        """Smallest ``num_layers`` for which :meth:`get_layer_id` keeps stages apart."""
        check_decay_type(decay_type)
        if decay_type == 'stage_wise':
            return 3
        return 4 + (self.depths[2] - 1) // 3

    def default_num_layers(self, decay_type: str = 'layer_wise') -> int:
        """The official ``num_layers``: 6 when stage 2 has at most 9 blocks, 12 for 27."""
        return max(6, self.min_num_layers(decay_type))

    def get_layer_id(self, param_name: str, num_layers: int,
                     decay_type: str = 'layer_wise') -> int:
        """Layer id of a backbone parameter for layer-wise lr decay (official semantics).

        The lr scale is then ``decay_rate ** (num_layers + 1 - layer_id)``.

        Args:
            param_name (str): Name relative to this backbone, e.g. 'stages.2.4.pwconv1.weight'.
            num_layers (int): The ``num_layers`` of ``paramwise_cfg``.
            decay_type (str): 'layer_wise' or 'stage_wise'. Defaults to 'layer_wise'.

        Returns:
            int: 0 for the stem ... ``num_layers + 1`` for the output norms (scale 1).
        """
        check_decay_type(decay_type)
        parts = param_name.split('.')
        if parts[0] not in ('downsample_layers', 'stages'):
            return num_layers + 1
        stage = int(parts[1])
        if decay_type == 'stage_wise':
            return 0 if parts[0] == 'downsample_layers' else stage + 1
        if parts[0] == 'downsample_layers':
            return (0, 2, 3, num_layers)[stage]
        if stage == 2:
            return 3 + int(parts[2]) // 3
        return (1, 2, None, num_layers)[stage]

    def no_weight_decay(self) -> Set[str]:
        """Names (relative to the backbone) of parameters that must not get weight decay beyond
        the 1-D ones: GRN's gamma and beta, which are (1, 1, 1, C)."""
        return {name for name, _ in self.named_parameters() if '.grn.' in name}


def _normalise_out_indices(out_indices: Union[int, Sequence[int]]) -> Tuple[int, ...]:
    indices = (out_indices,) if isinstance(out_indices, int) else tuple(out_indices)
    if not indices or not all(isinstance(i, int) and -4 <= i <= 3 for i in indices):
        raise ValueError(f'out_indices={out_indices!r} must be stage numbers in 0..3 '
                         '(or -4..-1 counted from the end)')
    normalised = tuple(sorted(i % 4 for i in indices))
    if len(set(normalised)) != len(normalised):
        raise ValueError(f'out_indices={out_indices!r} names the same stage twice')
    return normalised


def _init_module(module: nn.Module) -> None:
    # The official initialisation: truncated normal (std 0.02) weights, zero biases.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=.02)
        nn.init.zeros_(module.bias)
