"""The ConvNeXt block's head ``norm(dwconv(x))`` on the CPU, without autograd: the plain ops or
our compiled kernel (``convnext_backbone.native``), decided by the tuner.

The kernel computes the depthwise 7x7 conv of each pixel into a buffer that stays in L1 and
normalises it there: the conv output never makes a round trip through memory for a separate
LayerNorm pass, and under CPU autocast the LayerNorm writes bfloat16 for the products next. Both
kernels are :class:`~.tuning.Kernel` s of the shape class 'head'; which one runs is decided once
per process and shape class by timing them on this machine (or pinned from a file), as for the
MLP (``ops.py``).

Whether the block may call :func:`dwconv_norm` at all is decided in
``convnext_backbone.fast_path`` (:func:`~.fast_path.head_reason`).
"""
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from . import frozen, native, tuning
from .ops import compute_dtype, dtype_name, row_count

__all__ = ['CHANNEL_BLOCK', 'NATIVE', 'PLAIN', 'dwconv_norm', 'head_shape', 'run_head']

PLAIN, NATIVE = native.PLAIN, native.NATIVE

#: Channels per block of the layout in which the kernel reads the conv's parameters (its vector
#: width, ``kLanes`` of ``native/vec.h``).
CHANNEL_BLOCK = 16


def head_shape(x: torch.Tensor) -> tuning.ShapeClass:
    """The :class:`~.tuning.ShapeClass` of a call of :func:`dwconv_norm` on ``x`` (N, H, W, C)."""
    return tuning.ShapeClass(
        op='head', channels=x.shape[-1], hidden=0, dtype=dtype_name(compute_dtype(x)),
        residual=dtype_name(x.dtype), layer_scale=False, grn=False, input_grad=False,
        rows_log2=row_count(x).bit_length(), threads=torch.get_num_threads())


def _native_args(x: torch.Tensor, dwconv: nn.Conv2d,
                 norm: nn.LayerNorm) -> Tuple[torch.Tensor, ...]:
    """The kernel's inputs: float32 parameters, the conv's in blocks of :data:`CHANNEL_BLOCK`
    channels (weight (ceil(C / 16), 7, 7, 16), bias (ceil(C / 16) * 16,), zero past C), the
    layout the kernel reads; where the conv computes in bfloat16 (autocast, or a bfloat16
    model) its weight and bias rounded to bfloat16 as the conv sees them, and whether the
    kernel reads a float32 input as its bfloat16 rounding."""
    channels = x.shape[-1]
    padded = -(-channels // CHANNEL_BLOCK) * CHANNEL_BLOCK
    rounded = compute_dtype(x) == torch.bfloat16

    def as_conv_reads(t: torch.Tensor) -> torch.Tensor:
        return (t.to(torch.bfloat16) if rounded else t).float()

    def float32(t: torch.Tensor) -> torch.Tensor:
        return frozen.prepared(t, 'float32', lambda: t.float().contiguous())

    def blocked_weight() -> torch.Tensor:
        weight = F.pad(as_conv_reads(dwconv.weight).reshape(channels, 49),
                       (0, 0, 0, padded - channels))
        return weight.view(padded // CHANNEL_BLOCK, CHANNEL_BLOCK, 7, 7).permute(
            0, 2, 3, 1).contiguous()

    # made once inside frozen.frozen_weights, at every call otherwise
    weight = frozen.prepared(dwconv.weight, ('head', rounded), blocked_weight)
    bias = frozen.prepared(dwconv.bias, ('head', rounded), lambda: F.pad(
        as_conv_reads(dwconv.bias), (0, padded - channels)).contiguous())
    return x, weight, bias, float32(norm.weight), float32(norm.bias), rounded


def run_head(kernel: tuning.Kernel, x: torch.Tensor, dwconv: nn.Conv2d,
             norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(dwconv(x))`` computed by ``kernel``, without autograd.

    Args:
        kernel (Kernel): :data:`PLAIN` or :data:`NATIVE`.
        x (torch.Tensor): (N, H, W, C), contiguous, float32 or bfloat16.
        dwconv (nn.Conv2d): The block's depthwise 7x7 conv (padding 3, with bias).
        norm (nn.LayerNorm): The block's LayerNorm over C.

    Returns:
        torch.Tensor: (N, H, W, C) of the compute dtype (:func:`~.ops.compute_dtype`). Under
        autocast that is bfloat16 also where the modules give float32 (autocast's layer_norm
        does on some torch versions): the products round it to bfloat16 first, so the block
        computes the same, and both kernels pay for that rounding.
    """
    if kernel == PLAIN:
        y = F.conv2d(x.permute(0, 3, 1, 2), dwconv.weight, dwconv.bias, 1, 3, 1, x.shape[-1])
        y = F.layer_norm(y.permute(0, 2, 3, 1), norm.normalized_shape, norm.weight, norm.bias,
                         norm.eps)
        # Under autocast, where layer_norm gives float32 (it does on some torch versions): the
        # rounding the products make first, here, so that the probe compares both kernels on
        # what the products are given.
        return y.to(compute_dtype(x))
    if kernel == NATIVE and native.available():
        x, weight, bias, gamma, beta, rounded = _native_args(x, dwconv, norm)
        out_dtype = torch.bfloat16 if rounded else torch.float32
        return torch.ops.convnext_backbone.dwconv7x7_layer_norm(
            x, weight, bias, gamma, beta, norm.eps, rounded and x.dtype == torch.float32,
            rounded, out_dtype)
    raise ValueError(f'kernel {kernel} cannot compute the dwconv+LayerNorm head')


def dwconv_norm(x: torch.Tensor, dwconv: nn.Conv2d, norm: nn.LayerNorm) -> torch.Tensor:
    """Inference: the block's ``norm(dwconv(x))`` by the kernel decided for its shape class.

    Args:
        x (torch.Tensor): (N, H, W, C), the block input, contiguous, on the CPU.
        dwconv (nn.Conv2d): The block's depthwise 7x7 conv.
        norm (nn.LayerNorm): The block's LayerNorm.

    Returns:
        torch.Tensor: (N, H, W, C), as :func:`run_head`.
    """
    return tuning.choose(head_shape(x), native.kernels(),
                         lambda kernel: run_head(kernel, x, dwconv, norm))[1]
