"""The block's depthwise 7x7 conv in training: the plain op (autograd's, oneDNN on the CPU), or
the same forward with our compiled backward (``convnext_backbone.native``), decided by the tuner.

oneDNN computes the depthwise conv's weight gradient about 10x slower than its forward (36 ms
against 6 ms at 2x96x128x128 on a 2-core Zen 4), the largest part of a training step after the
products. :class:`_DepthwiseConv7x7` keeps oneDNN's forward (``F.conv2d`` on the channels-last
view, as the module runs it) and computes the backward with our kernels: the input gradient as
the depthwise conv of the output gradient with the rotated weights, the weight gradient with
the window's 7 sums per row in registers (``native/dwconv_grad.cpp``), the bias gradient as a
sum. Both are :class:`~.tuning.Kernel` s of the shape class 'training_dwconv', timed on a forward
and backward of detached copies the first time, as the training MLP is.

Whether the block may call :func:`depthwise_conv` at all is decided in
``convnext_backbone.fast_path`` (:func:`~.fast_path.dwconv_reason`).
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import native, tuning
from .native import NATIVE, PLAIN
from .ops import dtype_name, row_count

__all__ = ['depthwise_conv', 'dwconv_shape', 'run_dwconv']


def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The depthwise 7x7 conv of (N, H, W, C) ``x`` on its channels-last view, as the block
    runs its module: (N, H, W, C)."""
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias, 1, 3, 1, x.shape[-1]).permute(0, 2, 3, 1)


class _DepthwiseConv7x7(torch.autograd.Function):
    """``conv2d(x, weight, bias, padding=3, groups=C)`` on (N, H, W, C) float32 x, giving
    (N, H, W, C): oneDNN's forward, our backward."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return _conv(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        channels = x.shape[-1]
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # the conv of the gradient with the weights rotated by 180 degrees, as (7, 7, C)
            rotated = weight.reshape(channels, 7, 7).flip(1, 2).permute(1, 2, 0).contiguous()
            grad_x = torch.ops.convnext_backbone.dwconv7x7(grad, rotated)
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.convnext_backbone.dwconv7x7_weight_grad(x.contiguous(), grad)
            grad_w = grad_w.permute(2, 0, 1).reshape(channels, 1, 7, 7)
        if ctx.needs_input_grad[2]:
            grad_b = grad.sum((0, 1, 2))
        return grad_x, grad_w, grad_b


def dwconv_shape(x: torch.Tensor) -> tuning.ShapeClass:
    """The :class:`~.tuning.ShapeClass` of a call of :func:`depthwise_conv` on ``x`` (N, H, W,
    C)."""
    return tuning.ShapeClass(
        op='training_dwconv', channels=x.shape[-1], hidden=0, dtype=dtype_name(x.dtype),
        residual='', layer_scale=False, grn=False, input_grad=x.requires_grad,
        rows_log2=row_count(x).bit_length(), threads=torch.get_num_threads())


def run_dwconv(kernel: tuning.Kernel, x: torch.Tensor, weight: torch.Tensor,
               bias: torch.Tensor) -> torch.Tensor:
    """The depthwise 7x7 conv (zero padding 3) of ``x`` with autograd, by ``kernel``.

    Args:
        kernel (Kernel): :data:`~.native.PLAIN` or :data:`~.native.NATIVE`.
        x (torch.Tensor): (N, H, W, C), contiguous, float32.
        weight (torch.Tensor): (C, 1, 7, 7). bias (torch.Tensor): (C,).

    Returns:
        torch.Tensor: (N, H, W, C), a channels-last view, as the module's output permuted.
    """
    if kernel == PLAIN:
        return _conv(x, weight, bias)
    if kernel == NATIVE and native.available():
        return _DepthwiseConv7x7.apply(x, weight, bias)
    raise ValueError(f'kernel {kernel} cannot compute the depthwise conv in training')


def depthwise_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Training: the block's ``dwconv`` on ``x`` (N, H, W, C) with autograd, by the kernel
    decided for its shape class (timed with its backward the first time).

    Args:
        x (torch.Tensor): (N, H, W, C), the block input, contiguous float32 on the CPU.
        conv (nn.Conv2d): The block's depthwise 7x7 conv.

    Returns:
        torch.Tensor: (N, H, W, C).
    """
    return tuning.choose_with_backward(dwconv_shape(x), native.kernels(), run_dwconv,
                                       (x, conv.weight, conv.bias))
