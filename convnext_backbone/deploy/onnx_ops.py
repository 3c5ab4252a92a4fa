"""Two torch operators that become one standard ONNX operator each: NMS and RoIAlign.

mmdet runs its detectors' NMS and RoIAlign with mmcv's C++ kernels, which the ONNX exporter
cannot translate (mmdeploy exports them as ``mmdeploy::`` custom ops). ONNX has both operators
in its default domain: ``NonMaxSuppression`` (opset 10) and ``RoiAlign`` (opset 10; opset 16 adds
``coordinate_transformation_mode``, whose ``half_pixel`` is mmcv's ``aligned=True``).

:func:`nms` and :func:`roi_align` are torch custom operators (``torch.ops.convnext_backbone.*``)
that run mmcv's kernels in PyTorch, tell ``torch.export`` their output shapes (NMS: a
data-dependent count), and translate to those two ONNX operators (:data:`TRANSLATIONS`, passed
to ``torch.onnx.export(custom_translation_table=...)``). Their semantics are ONNX's:

- ``nms(boxes (B, N, 4), scores (B, C, N))`` -> ``(K, 3)`` int64 rows ``(batch, class, box)``,
  per batch and class: boxes with score > ``score_threshold``, greedy suppression of IoU >
  ``iou_threshold`` in descending score order, at most ``max_per_class``; rows grouped by batch
  then class, in selection (descending score) order. mmcv's ``nms`` suppresses on the same
  strict IoU comparison and mmdet filters scores with the same strict ``>``.
- ``roi_align(features (1, C, H, W), boxes (R, 4))`` -> ``(R, C, h, w)``: mmcv's ``roi_align``
  (average mode) of image 0, ``aligned`` as mmcv's flag.
"""
import functools
import math
from typing import Callable

import torch
from torch import Tensor

from .. import compat

__all__ = ['EXPORT_TORCH', 'TRANSLATIONS', 'nms', 'require_export_torch', 'roi_align']

#: The oldest torch the ONNX export runs on: ``torch.library.custom_op`` / ``register_fake``
#: (torch 2.4), ``torch.onnx.export(custom_translation_table=...)`` (2.6) and the
#: ``backed_size_oblivious`` option of torch/fx/experimental/_config.py that
#: :func:`~.export.export_onnx` captures with (in torch 2.7.1's, not in 2.6.0's).
EXPORT_TORCH = '2.7'
_INT64 = 7  # onnx.TensorProto.INT64


def require_export_torch() -> None:
    """Refuse the ONNX export in one line on torch older than :data:`EXPORT_TORCH`.

    Raises:
        ValueError: Naming the torch the export needs and the one installed.
    """
    try:
        compat.require_torch(EXPORT_TORCH, 'ONNX export')
    except RuntimeError as err:
        raise ValueError(str(err)) from None


def _custom_op(name: str) -> Callable[[Callable], Callable]:
    """``torch.library.custom_op(name)``; on torch older than :data:`EXPORT_TORCH` the function
    is not registered and refuses (:func:`require_export_torch`) when called."""
    def wrap(fn: Callable) -> Callable:
        if compat.torch_at_least(EXPORT_TORCH):
            return torch.library.custom_op(name, mutates_args=())(fn)

        @functools.wraps(fn)
        def refuse(*args, **kwargs):
            require_export_torch()

        refuse.register_fake = lambda fake: fake
        return refuse
    return wrap


@_custom_op('convnext_backbone::nms')
def nms(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
        score_threshold: float) -> Tensor:
    """ONNX ``NonMaxSuppression`` (center_point_box=0), run with mmcv's ``nms``.

    Args:
        boxes (Tensor): (B, N, 4) float, x1 y1 x2 y2.
        scores (Tensor): (B, C, N) float.
        max_per_class (int): At most this many boxes per batch and class.
        iou_threshold (float): Suppress boxes whose IoU with a kept box is greater.
        score_threshold (float): Keep only boxes with a greater score; ``-inf`` keeps all.

    Returns:
        Tensor: (K, 3) int64 rows (batch, class, box index).
    """
    from mmcv.ops import nms as mmcv_nms
    rows = [boxes.new_zeros((0, 3), dtype=torch.int64)]
    for b in range(boxes.shape[0]):
        for c in range(scores.shape[1]):
            candidates = (scores[b, c] > score_threshold).nonzero().squeeze(1)
            if candidates.numel() == 0:
                continue
            _, keep = mmcv_nms(boxes[b, candidates], scores[b, c, candidates], iou_threshold)
            keep = candidates[keep[:max_per_class]]
            rows.append(torch.stack([torch.full_like(keep, b), torch.full_like(keep, c), keep], 1))
    return torch.cat(rows).to(torch.int64)


@nms.register_fake
def _nms_fake(boxes: Tensor, scores: Tensor, max_per_class: int, iou_threshold: float,
              score_threshold: float) -> Tensor:
    count = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((count, 3), dtype=torch.int64)


@_custom_op('convnext_backbone::roi_align')
def roi_align(features: Tensor, boxes: Tensor, output_height: int, output_width: int,
              spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """ONNX ``RoiAlign`` (mode avg) of image 0, run with mmcv's ``roi_align``.

    Args:
        features (Tensor): (1, C, H, W).
        boxes (Tensor): (R, 4) x1 y1 x2 y2 in input pixels.
        output_height (int): Pooled height. output_width (int): Pooled width.
        spatial_scale (float): Feature pixels per input pixel (1 / stride).
        sampling_ratio (int): Samples per bin side; 0 is adaptive (ceil(roi size / bins)).
        aligned (bool): mmcv's ``aligned`` (half-pixel shift), ONNX's ``half_pixel`` mode.

    Returns:
        Tensor: (R, C, output_height, output_width).
    """
    from mmcv.ops import roi_align as mmcv_roi_align
    rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], dim=1)
    return mmcv_roi_align(features, rois, (output_height, output_width), spatial_scale,
                          sampling_ratio, 'avg', aligned)


@roi_align.register_fake
def _roi_align_fake(features: Tensor, boxes: Tensor, output_height: int, output_width: int,
                    spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    return features.new_empty((boxes.shape[0], features.shape[1], output_height, output_width))


def _nms_onnx(boxes, scores, max_per_class: int, iou_threshold: float, score_threshold: float):
    from onnxscript import opset18 as op
    inputs = [boxes, scores, op.Constant(value_ints=[max_per_class]),
              op.Constant(value_floats=[iou_threshold])]
    if not math.isinf(score_threshold):
        inputs.append(op.Constant(value_floats=[score_threshold]))
    return op.NonMaxSuppression(*inputs)


def _roi_align_onnx(features, boxes, output_height: int, output_width: int,
                    spatial_scale: float, sampling_ratio: int, aligned: bool):
    from onnxscript import opset18 as op
    count = op.Shape(boxes, start=0, end=1)
    batch_indices = op.Expand(op.Constant(value_ints=[0]), count)
    return op.RoiAlign(
        features, boxes, op.Cast(batch_indices, to=_INT64), mode='avg',
        coordinate_transformation_mode='half_pixel' if aligned else 'output_half_pixel',
        output_height=output_height, output_width=output_width, sampling_ratio=sampling_ratio,
        spatial_scale=spatial_scale)


#: ``torch.onnx.export(custom_translation_table=TRANSLATIONS)``: our operators -> ONNX (none
#: below :data:`EXPORT_TORCH`, where they are not registered).
TRANSLATIONS = {
    torch.ops.convnext_backbone.nms.default: _nms_onnx,
    torch.ops.convnext_backbone.roi_align.default: _roi_align_onnx,
} if compat.torch_at_least(EXPORT_TORCH) else {}
