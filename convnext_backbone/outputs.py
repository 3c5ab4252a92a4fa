"""A stage output of the backbone, ``norm{i}(x)`` as contiguous NCHW memory: the module and a
copy, or our compiled kernel (``convnext_backbone.native``), decided by the tuner.

The outputs go to mmdet's and mmseg's necks and heads as NCHW memory (mmcv's ``RoIAlign`` and
other custom ops index their input as contiguous NCHW whatever its strides say). The plain ops
normalise into a new NHWC tensor and copy it to NCHW: a strided transpose that reads and writes
the whole map once more (at stage 0 of an 800x1216 image on a 2-core Zen 4, 4 ms of LayerNorm
and 13 ms of copy). Our kernel normalises tiles of 16 pixels in the caches and writes each as
C runs of 16 contiguous values of the NCHW output: one pass. Both are :class:`~.tuning.Kernel` s
of the shape class 'output'; which one runs is decided once per process and shape class by
timing them on this machine (or pinned from a file), as for the block's kernels.

Whether the kernel may run at all is decided in ``convnext_backbone.fast_path``
(:func:`~.fast_path.output_reason`); otherwise the module runs as written.
"""
import torch
import torch.nn.functional as F
from torch import nn

from . import fast_path, native, tuning
from .native import NATIVE, PLAIN
from .ops import dtype_name, row_count

__all__ = ['output_shape', 'run_output', 'stage_output']


def output_shape(x: torch.Tensor) -> tuning.ShapeClass:
    """The :class:`~.tuning.ShapeClass` of a call of :func:`stage_output` on ``x`` (N, H, W, C)."""
    return tuning.ShapeClass(
        op='output', channels=x.shape[-1], hidden=0, dtype=dtype_name(x.dtype),
        residual=dtype_name(x.dtype), layer_scale=False, grn=False, input_grad=False,
        rows_log2=row_count(x).bit_length(), threads=torch.get_num_threads())


def run_output(kernel: tuning.Kernel, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """``norm(x)`` as contiguous (N, C, H, W) memory, computed by ``kernel``, without autograd.

    Args:
        kernel (Kernel): :data:`~.native.PLAIN` or :data:`~.native.NATIVE`.
        x (torch.Tensor): (N, H, W, C), contiguous, float32 or bfloat16.
        norm (nn.LayerNorm): The stage's output norm, over C, with weight and bias.

    Returns:
        torch.Tensor: (N, C, H, W), contiguous, in ``x``'s dtype (as ``F.layer_norm`` gives).
    """
    if kernel == PLAIN:
        y = F.layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return y.permute(0, 3, 1, 2).contiguous()
    if kernel == NATIVE and native.available():
        return torch.ops.convnext_backbone.layer_norm_nchw(
            x, norm.weight.float().contiguous(), norm.bias.float().contiguous(), norm.eps)
    raise ValueError(f'kernel {kernel} cannot compute a stage output')


def stage_output(x: torch.Tensor, norm: nn.Module) -> torch.Tensor:
    """A stage output: ``norm(x)`` as contiguous NCHW memory, by our kernel where
    :func:`~.fast_path.output_reason` allows it and the tuner chose it, else the module.

    Args:
        x (torch.Tensor): (N, H, W, C), the stage's last block output.
        norm (nn.Module): The stage's output norm (``norm{i}``).

    Returns:
        torch.Tensor: (N, C, H, W), contiguous.
    """
    if fast_path.output_reason(norm, x):
        return norm(x).permute(0, 3, 1, 2).contiguous()
    return tuning.choose(output_shape(x), native.kernels(),
                         lambda kernel: run_output(kernel, x, norm))[1]
