"""The ConvNeXt backbone (V1 and V2) for dense prediction with mmdet 3.x and mmseg 1.x.

Model math only: sizes are data (``archs.py``), checkpoint reading and key conversion live in
``checkpoint/``. Parameter names
follow the official release (``downsample_layers.*``, ``stages.i.j.*``, ``norm0..3``), so official
detection/segmentation checkpoints load without renaming.

Note:
    We keep activations in NHWC (channels last) from the stem to the outputs: the depthwise conv
    runs on a channels-last view, LayerNorm and the pointwise Linear layers work on the last
    dimension, so no block copies its input between layouts. The official code permutes twice per
    block. Only the emitted outputs are copied once to NCHW memory, as mmcv's ops expect. On the
    CPU the block's MLP and its tail (layer scale, residual add) run by whichever of the plain
    ops, oneDNN products with the bias and GELU inside, or a cache-blocked MLP is fastest on the
    machine, decided once per process and shape class (``ops.py``, ``tuning.py``).
    :meth:`ConvNeXt.fuse` folds layer scale into pwconv2 for inference. Numerics are the
    official ones up to float rounding (docs/performance.md). bf16 autocast on a CPU without
    native bf16 warns once (``machine.py``).
"""
from typing import Optional, Sequence, Set, Tuple, Union

import torch
from mmengine.model import BaseModule
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import compat, machine, ops
from .archs import ARCH_SETTINGS, resolve_arch
from .checkpoint import load_pretrained
from .layer_decay import check_decay_type
from .registry import MODELS

__all__ = ['ARCH_SETTINGS', 'ConvNeXt']

LN_EPS = 1e-6


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
        self._fused_versions: Optional[Tuple[int, ...]] = None  # set by fuse()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x                                                  # (N, H, W, C)
        # A channels-last view of x: the conv reads and writes NHWC memory, no copy.
        x = self.dwconv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)    # (N, H, W, C)
        x = self.norm(x)
        weights = (self.pwconv1.weight, self.pwconv1.bias, self.pwconv2.weight, self.pwconv2.bias)
        if not (self.training and self.drop_path > 0):
            # Layer scale folded into pwconv2 by fuse() (gamma holds 1), unless a gradient needs
            # gamma or autocast needs its float32 to keep the residual stream in float32.
            folded = self._fused() and (self.gamma is None or not (
                (torch.is_grad_enabled() and self.gamma.requires_grad)
                or compat.autocast_enabled(shortcut.device.type)))
            grn_params = tuple(self.grn.parameters()) if self.grn is not None else ()
            # shortcut + gamma * pwconv2(grn(gelu(pwconv1(x)))), by the fastest way on this CPU
            # (plain ops, oneDNN products, cache-blocked: see ops.residual_mlp).
            return ops.residual_mlp(x, *weights, shortcut, None if folded else self.gamma,
                                    mid=self.grn, mid_params=grn_params)
        if self.grn is None:
            x = ops.mlp(x, *weights)                                   # (N, H, W, C)
        else:
            x = self.pwconv2(self.grn(self.act(self.pwconv1(x))))     # (N, H, W, C)
        keep = 1 - self.drop_path
        mask = shortcut.new_empty(x.shape[0], 1, 1, 1).bernoulli_(keep).div_(keep)
        scale = mask if self.gamma is None else self.gamma * mask     # (N, 1, 1, C)
        # Layer scale, drop path and the residual add in one pass: shortcut + x * scale.
        return torch.addcmul(shortcut, x, scale)

    def fuse(self) -> None:
        """Fold layer scale into pwconv2 (gamma becomes 1) and switch to fused kernels."""
        with torch.no_grad():
            if self.gamma is not None:
                self.pwconv2.weight.mul_(self.gamma[:, None])
                self.pwconv2.bias.mul_(self.gamma)
                self.gamma.fill_(1.)
        self._fused_versions = self._versions()

    def _versions(self) -> Tuple[int, ...]:
        params = (self.gamma, self.pwconv2.weight, self.pwconv2.bias)
        return tuple(p._version for p in params if p is not None)

    def _fused(self) -> bool:
        # Fused only while the folded parameters are untouched: loading a state dict or an
        # optimizer step after fuse() bumps their versions and brings back the plain path,
        # which applies whatever gamma holds.
        return (self._fused_versions is not None and not ops.plain_only()
                and self._fused_versions == self._versions())


@MODELS.register_module()
class ConvNeXt(BaseModule):
    """Multi-scale ConvNeXt backbone (V1 and V2) emitting normalised stage features.

    Each emitted stage output passes through its own LayerNorm ``norm{i}`` (eps 1e-6), as in the
    official detection and segmentation code.

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
        init_cfg (dict | list[dict], optional): mmengine init config. ``dict(type='Pretrained',
            checkpoint=PATH_OR_URL)`` loads any known ConvNeXt checkpoint layout (see
            ``convnext_backbone.checkpoint``). Defaults to None.
    """

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 drop_path_rate: float = 0.,
                 layer_scale_init_value: float = 1e-6,
                 frozen_stages: int = 0,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
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
            nn.LayerNorm(dims[0], eps=LN_EPS))])
        for i in range(1, 4):
            self.downsample_layers.append(nn.Sequential(
                nn.LayerNorm(dims[i - 1], eps=LN_EPS),
                nn.Conv2d(dims[i - 1], dims[i], kernel_size=2, stride=2)))
        total = sum(self.depths)
        rates = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        for i, depth in enumerate(self.depths):
            first = sum(self.depths[:i])
            self.stages.append(nn.Sequential(*[
                Block(dims[i], rates[first + j], layer_scale_init_value, self.use_grn)
                for j in range(depth)]))
        for i in self.out_indices:
            self.add_module(f'norm{i}', nn.LayerNorm(dims[i], eps=LN_EPS))

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
        if (not ops.plain_only() and x.device.type == 'cpu'
                and torch.bfloat16 in (x.dtype, compat.autocast_dtype('cpu')
                                       if compat.autocast_enabled('cpu') else None)):
            machine.warn_bf16_without_native_support()  # once per process, where bf16 is slow
        outs = []
        for i in range(4):
            if i == 0:
                conv, norm = self.downsample_layers[0]
                x = norm(conv(x.contiguous(memory_format=torch.channels_last))
                         .permute(0, 2, 3, 1))                        # (N, H/4, W/4, C0)
            else:
                norm, conv = self.downsample_layers[i]
                x = conv(norm(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            for block in self.stages[i]:
                if self.with_cp and self.training and x.requires_grad:
                    x = checkpoint(block, x, use_reentrant=False)
                else:
                    x = block(x)
            if i in self.out_indices:
                # NCHW memory: mmcv's RoIAlign (and other custom ops) index their input as
                # contiguous NCHW whatever its strides say, so a channels-last view would be
                # pooled as garbage.
                outs.append(getattr(self, f'norm{i}')(x).permute(0, 3, 1, 2).contiguous())
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

    # -- inference ---------------------------------------------------------------------------
    def fuse(self) -> 'ConvNeXt':
        """Prepare for fast inference: fold each block's layer scale into its pwconv2 and switch
        the blocks to fused kernels (Linear + GELU and Linear + residual add in one oneDNN op,
        see ``convnext_backbone.ops``). Returns self.

        Outputs change only by float rounding. Parameter names stay the same and the state dict
        still describes the same function (gamma holds 1, pwconv2 the folded weights), so it
        loads into an unfused model unchanged. The fused kernels run only where no gradient is
        needed (``torch.no_grad()``) on CPU; elsewhere the blocks run the plain ops. Loading new
        weights or an optimizer step after ``fuse()`` brings back the plain path with the
        gamma multiply, so results stay correct; call ``fuse()`` again to fold the new weights.

        Note:
            Not in the official code: a deploy step for inference, e.g. after loading a
            checkpoint for testing (``tools/benchmark.py`` uses it).
        """
        for stage in self.stages:
            for block in stage:
                block.fuse()
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
