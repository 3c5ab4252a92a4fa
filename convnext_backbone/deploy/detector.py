"""The export graph of an mmdet two-stage detector: Faster / Mask R-CNN and their Cascade forms.

:class:`DetectorGraph` takes one image, RGB 0..255 ``(1, 3, H, W)``, and returns the detections
after the config's test-time NMS and score threshold, in input pixels:

- ``boxes`` (D, 4) float x1 y1 x2 y2, ``scores`` (D,), ``labels`` (D,) int64, sorted by score;
- with a mask head: ``masks`` (D, H, W) float in 0..1, the mask probabilities pasted into the
  image (threshold them with ``model.test_cfg.rcnn.mask_thr_binary``, mmdet's 0.5), and
  ``mask_probs`` (D, M, M), the mask head's probabilities of each detection's class before
  pasting (the ONNX Runtime evaluation pastes these at the original image size, as mmdet does).

It reuses the detector's own modules (backbone, neck, RPN convs and anchor generator, RoI box and
mask heads, mmdet's ``delta2bbox`` and ``map_roi_levels``) and writes only the test-time steps
that mmdet runs with mmcv's kernels or with Python control flow on data: the proposal and
detection selection (``RPNHead._predict_by_feat_single``, ``multiclass_nms``, mmcv's
``batched_nms``), RoI feature extraction (``SingleRoIExtractor.forward``) and mask pasting
(``FCNMaskHead._predict_by_feat_single``), each described where it is written.
"""
import math
import sys
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import onnx_ops
from .graphs import ImageInput, exportable_copy

__all__ = ['DetectorGraph', 'batched_nms', 'check_supported', 'decode_deltas', 'paste_masks',
           'per_stage']


def paste_masks(probs: Tensor, boxes: Tensor, height: int, width: int) -> Tensor:
    """Paste ``(D, M, M)`` mask probabilities into ``(D, height, width)`` at their boxes.

    mmdet's ``_do_paste_mask`` samples each mask with ``grid_sample`` (bilinear, zero padding,
    ``align_corners=False``) at every pixel centre of the image. Its sampling grid is separable
    (x depends on the column, y on the row), and so is bilinear interpolation with zero padding:
    the value at (y, x) is ``sum_ij wy[y, i] * mask[i, j] * wx[x, j]`` with the 1-D tent weights
    ``max(0, 1 - |coordinate - i|)``. Two batched matrix products compute that.

    Note:
        The same values as mmdet's up to float rounding, with standard ONNX ops (MatMul instead
        of GridSample) and without the (D, H, W, 2) sampling grid.

    Args:
        probs (Tensor): (D, Mh, Mw) probabilities.
        boxes (Tensor): (D, 4) x1 y1 x2 y2 in the target image's pixels.
        height (int): Target height. width (int): Target width.

    Returns:
        Tensor: (D, height, width) pasted probabilities.
    """
    def weights(start: Tensor, end: Tensor, size: int, cells: int) -> Tensor:
        centres = torch.arange(size, device=boxes.device).to(boxes.dtype) + 0.5
        grid = (centres[None, :] - start[:, None]) / (end - start)[:, None] * 2 - 1
        grid = torch.where(torch.isinf(grid), torch.zeros_like(grid), grid)  # as mmdet
        source = ((grid + 1) * cells - 1) / 2                       # grid_sample's unnormalise
        index = torch.arange(cells, device=boxes.device).to(boxes.dtype)
        return (1 - (source[:, :, None] - index).abs()).clamp(min=0)  # (D, size, cells)

    x0, y0, x1, y1 = boxes.unbind(dim=1)
    wy = weights(y0, y1, height, probs.shape[1])
    wx = weights(x0, x1, width, probs.shape[2])
    return torch.matmul(torch.matmul(wy, probs), wx.transpose(1, 2))


def decode_deltas(coder: nn.Module, rois: Tensor, deltas: Tensor,
                  img_shape: Tuple[int, int]) -> Tensor:
    """mmdet's ``delta2bbox`` for ``(N, 4)`` RoIs and deltas, with the coder's settings.

    Note:
        The same operations in the same order as mmdet's ``delta2bbox`` (so the same rounding),
        without its early return for zero boxes (a branch on a data-dependent size, which
        torch.export refuses) and clipping with out-of-place ops. mmdet's
        ``DeltaXYWHBBoxCoder.decode`` cannot be called either: while torch.onnx exports it takes
        a legacy branch that imports a module mmdet 3 no longer has.

    Args:
        coder (nn.Module): mmdet's ``DeltaXYWHBBoxCoder`` (means, stds, clip_border,
            add_ctr_clamp, ctr_clamp).
        rois (Tensor): (N, 4) boxes. deltas (Tensor): (N, 4) network outputs.
        img_shape (tuple): (height, width) to clip to.

    Returns:
        Tensor: (N, 4) decoded boxes.
    """
    means = deltas.new_tensor(coder.means).view(1, -1)
    stds = deltas.new_tensor(coder.stds).view(1, -1)
    denorm = deltas * stds + means
    dxy, dwh = denorm[:, :2], denorm[:, 2:]
    pxy = (rois[:, :2] + rois[:, 2:]) * 0.5
    pwh = rois[:, 2:] - rois[:, :2]
    dxy_wh = pwh * dxy
    max_ratio = abs(math.log(16 / 1000))  # mmdet's default wh_ratio_clip
    if coder.add_ctr_clamp:
        dxy_wh = torch.clamp(dxy_wh, max=coder.ctr_clamp, min=-coder.ctr_clamp)
        dwh = torch.clamp(dwh, max=max_ratio)
    else:
        dwh = dwh.clamp(min=-max_ratio, max=max_ratio)
    gxy = pxy + dxy_wh
    gwh = pwh * dwh.exp()
    x1y1, x2y2 = gxy - gwh * 0.5, gxy + gwh * 0.5
    if not coder.clip_border:
        return torch.cat([x1y1, x2y2], dim=-1)
    height, width = img_shape
    x1, y1 = x1y1[:, 0].clamp(0, width), x1y1[:, 1].clamp(0, height)
    x2, y2 = x2y2[:, 0].clamp(0, width), x2y2[:, 1].clamp(0, height)
    return torch.stack([x1, y1, x2, y2], dim=-1)


def batched_nms(boxes: Tensor, scores: Tensor, groups: Tensor, iou_threshold: float,
                max_num: int = -1) -> Tensor:
    """mmcv's ``batched_nms`` (one NMS over all groups, boxes shifted apart by group).

    mmcv shifts each group's boxes by ``group * (boxes.max() + 1)`` and runs one NMS; so does
    this, with ONNX's ``NonMaxSuppression`` instead of mmcv's kernel, so the rounding of the
    shifted coordinates is the same as in PyTorch.

    Args:
        boxes (Tensor): (N, 4). scores (Tensor): (N,). groups (Tensor): (N,) int64.
        iou_threshold (float): Suppress IoU greater than this.
        max_num (int): Keep at most this many; <= 0 keeps all. Defaults to -1.

    Returns:
        Tensor: (K,) indices of the kept boxes, in descending score order.
    """
    shifted = boxes + (groups.to(boxes.dtype) * (boxes.max() + 1))[:, None]
    limit = max_num if max_num > 0 else sys.maxsize
    selected = onnx_ops.nms(shifted[None], scores[None, None], limit, iou_threshold,
                            float('-inf'))
    return selected[:, 2]


def check_supported(detector: nn.Module) -> None:
    """Raise ``ValueError`` naming the first part of ``detector`` that
    :class:`DetectorGraph` does not export (one line: the part and what is supported)."""
    from mmcv.ops import RoIAlign
    from mmdet.models.dense_heads import RPNHead
    from mmdet.models.detectors import TwoStageDetector
    from mmdet.models.roi_heads import CascadeRoIHead, StandardRoIHead
    from mmdet.models.roi_heads.bbox_heads import BBoxHead
    from mmdet.models.roi_heads.mask_heads import FCNMaskHead
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder

    def refuse(what: str, allowed: str) -> None:
        raise ValueError(f'cannot export this detector: {what}; the ONNX export supports '
                         f'{allowed}')

    if not isinstance(detector, TwoStageDetector):
        refuse(f'model type {type(detector).__name__}',
               'two-stage detectors (Faster / Mask R-CNN, Cascade (Mask) R-CNN)')
    if not isinstance(detector.rpn_head, RPNHead):
        refuse(f'rpn_head {type(detector.rpn_head).__name__}', "mmdet's RPNHead")
    roi_head = detector.roi_head
    if type(roi_head) not in (StandardRoIHead, CascadeRoIHead):
        refuse(f'roi_head {type(roi_head).__name__}', 'StandardRoIHead and CascadeRoIHead')
    if roi_head.with_shared_head:
        refuse('roi_head.shared_head is set', 'RoI heads without a shared head')
    for name, head in _named(roi_head, 'bbox_head'):
        if not isinstance(head, BBoxHead) or head.custom_cls_channels \
                or head.custom_activation or not head.with_reg:
            refuse(f'{name} {type(head).__name__} (custom classifier or no regression)',
                   'BBoxHead and its subclasses with a softmax classifier and regression')
        if not isinstance(head.bbox_coder, DeltaXYWHBBoxCoder):
            refuse(f'{name}.bbox_coder {type(head.bbox_coder).__name__}',
                   'DeltaXYWHBBoxCoder')
    coder = detector.rpn_head.bbox_coder
    if not isinstance(coder, DeltaXYWHBBoxCoder):
        refuse(f'rpn_head.bbox_coder {type(coder).__name__}', 'DeltaXYWHBBoxCoder')
    extractors = [('bbox_roi_extractor', e) for e in per_stage(roi_head.bbox_roi_extractor)]
    if roi_head.with_mask:
        extractors += [('mask_roi_extractor', e)
                       for e in per_stage(roi_head.mask_roi_extractor)]
        for name, head in _named(roi_head, 'mask_head'):
            if not isinstance(head, FCNMaskHead):
                refuse(f'{name} {type(head).__name__}', 'FCNMaskHead and its subclasses')
    for name, extractor in extractors:
        if not isinstance(extractor, SingleRoIExtractor):
            refuse(f'{name} {type(extractor).__name__}', 'SingleRoIExtractor')
        for layer in extractor.roi_layers:
            if not isinstance(layer, RoIAlign) or layer.pool_mode != 'avg' \
                    or layer.use_torchvision:
                refuse(f'{name} layer {layer!r}',
                       "mmcv's RoIAlign with pool_mode='avg' (ONNX RoiAlign)")
    rpn_cfg, rcnn_cfg = detector.rpn_head.test_cfg, roi_head.test_cfg
    for name, cfg in (('test_cfg.rpn', rpn_cfg), ('test_cfg.rcnn', rcnn_cfg)):
        nms = cfg.get('nms') or {}
        if nms.get('type', 'nms') != 'nms' or nms.get('class_agnostic', False):
            refuse(f'{name}.nms={dict(nms)}', "nms=dict(type='nms', iou_threshold=...)")
    if rpn_cfg.get('max_per_img') is None:
        refuse('test_cfg.rpn.max_per_img is not set', 'test_cfg.rpn.max_per_img (mmdet >= 3)')


def per_stage(heads: nn.Module) -> List[nn.Module]:
    """The heads of a Cascade RoI head's ``nn.ModuleList``, or ``[heads]``."""
    return list(heads) if isinstance(heads, nn.ModuleList) else [heads]


def _named(roi_head: nn.Module, attr: str) -> List[Tuple[str, nn.Module]]:
    heads = per_stage(getattr(roi_head, attr))
    return [(f'roi_head.{attr}' + (f'[{i}]' if len(heads) > 1 else ''), head)
            for i, head in enumerate(heads)]


class DetectorGraph(nn.Module):
    """An mmdet two-stage detector's test-time forward on one image, exportable to ONNX.

    Args:
        detector (nn.Module): A built mmdet ``TwoStageDetector`` (eval mode) whose RPN is
            ``RPNHead`` and whose RoI head is ``StandardRoIHead`` or ``CascadeRoIHead`` with
            ``SingleRoIExtractor`` + mmcv ``RoIAlign`` (avg), ``BBoxHead`` subclasses with
            ``DeltaXYWHBBoxCoder`` and ``FCNMaskHead`` subclasses, test NMS of type 'nms'.

    Raises:
        ValueError: One line naming the first unsupported part.

    Note:
        mmdet pads the normalised image to ``pad_size_divisor`` in its data preprocessor; here
        the padding is inside the graph, so the input is the image at its test size. The data
        pipeline (loading, resizing) stays outside, as in mmdet.
    """

    input_names = ('image',)

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        check_supported(detector)
        self.detector = exportable_copy(detector)
        self.image_input = ImageInput(detector.data_preprocessor)
        self.pad_divisor = int(getattr(detector.data_preprocessor, 'pad_size_divisor', 1))
        self.pad_value = float(getattr(detector.data_preprocessor, 'pad_value', 0))
        roi_head = detector.roi_head
        self.cascade = isinstance(roi_head.bbox_head, nn.ModuleList)
        self.with_mask = bool(roi_head.with_mask)
        self.rpn_cfg = detector.rpn_head.test_cfg
        self.rcnn_cfg = roi_head.test_cfg

    @property
    def output_names(self) -> Tuple[str, ...]:
        names = ('boxes', 'scores', 'labels')
        return names + ('masks', 'mask_probs') if self.with_mask else names

    def forward(self, image: Tensor) -> Tuple[Tensor, ...]:
        """(1, 3, H, W) RGB 0..255 -> boxes, scores, labels[, masks, mask_probs]."""
        height, width = image.shape[2], image.shape[3]
        x = self.image_input(image)
        if self.pad_divisor > 1:
            # mmengine's stack_batch: up to the next multiple (non-negative integer arithmetic:
            # ONNX's integer Div and Mod do not floor negative numbers as Python does)
            divisor = self.pad_divisor
            x = F.pad(x, (0, (divisor - width % divisor) % divisor,
                          0, (divisor - height % divisor) % divisor), value=self.pad_value)
        feats = self.detector.extract_feat(x)
        proposals = self._proposals(feats, (height, width))
        boxes, scores, labels = self._detections(feats, proposals, (height, width))
        if not self.with_mask:
            return boxes, scores, labels
        probs = self._mask_probs(feats, boxes, labels)
        return boxes, scores, labels, paste_masks(probs, boxes, height, width), probs

    # -- RPN ------------------------------------------------------------------------------------
    def _proposals(self, feats: Sequence[Tensor], img_shape: Tuple[int, int]) -> Tensor:
        """``RPNHead.predict`` for one image, ``rescale=False``: top ``nms_pre`` per level,
        decoded and clipped, boxes of size <= ``min_bbox_size`` dropped, NMS per level, the
        first ``max_per_img``."""
        head, cfg = self.detector.rpn_head, self.rpn_cfg
        cls_scores, bbox_preds = head(feats)
        priors = head.prior_generator.grid_priors(
            [c.shape[-2:] for c in cls_scores], dtype=cls_scores[0].dtype,
            device=cls_scores[0].device)
        nms_pre = cfg.get('nms_pre', -1)
        all_scores, all_deltas, all_priors, levels = [], [], [], []
        for level, (cls_score, bbox_pred, prior) in enumerate(zip(cls_scores, bbox_preds, priors)):
            logits = cls_score[0].permute(1, 2, 0).reshape(-1, head.cls_out_channels)
            scores = logits.sigmoid()[:, 0] if head.use_sigmoid_cls \
                else logits.softmax(-1)[:, 0]  # mmdet: foreground is label 0
            deltas = bbox_pred[0].permute(1, 2, 0).reshape(-1, head.bbox_coder.encode_size)
            if nms_pre > 0:
                scores, order = scores.topk(torch.sym_min(nms_pre, scores.shape[0]))
                deltas, prior = deltas[order], prior[order]
            all_scores.append(scores)
            all_deltas.append(deltas)
            all_priors.append(prior)
            levels.append(torch.full_like(scores, level, dtype=torch.int64))
        scores, levels = torch.cat(all_scores), torch.cat(levels)
        boxes = decode_deltas(head.bbox_coder, torch.cat(all_priors), torch.cat(all_deltas),
                              img_shape)
        min_size = cfg.get('min_bbox_size', -1)
        if min_size >= 0:
            valid = ((boxes[:, 2] - boxes[:, 0] > min_size)
                     & (boxes[:, 3] - boxes[:, 1] > min_size)).nonzero().squeeze(1)
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
        keep = batched_nms(boxes, scores, levels, cfg.nms.iou_threshold, cfg.max_per_img)
        return boxes[keep]

    # -- RoI heads ------------------------------------------------------------------------------
    def _detections(self, feats: Sequence[Tensor], proposals: Tensor,
                    img_shape: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tensor]:
        """``predict_bbox`` of the RoI head (``rescale=False``): the box head(s) on the
        proposals, then ``BBoxHead._predict_by_feat_single`` with ``multiclass_nms``.

        Cascade (``CascadeRoIHead._refine_roi``): each stage but the last regresses the RoIs by
        its most likely class; the class logits of all stages are averaged.
        """
        roi_head = self.detector.roi_head
        rois = proposals
        if not self.cascade:
            cls_score, bbox_pred = roi_head.bbox_head(
                self._roi_features(roi_head.bbox_roi_extractor, feats, rois))
            head = roi_head.bbox_head
        else:
            stage_scores = []
            for stage in range(roi_head.num_stages):
                head = roi_head.bbox_head[stage]
                cls_score, bbox_pred = head(
                    self._roi_features(roi_head.bbox_roi_extractor[stage], feats, rois))
                stage_scores.append(cls_score)
                if stage < roi_head.num_stages - 1:
                    rois = self._regress_by_class(head, rois, cls_score[:, :-1].argmax(dim=1),
                                                  bbox_pred, img_shape)
            cls_score = sum(stage_scores) / float(len(stage_scores))
        return self._multiclass_nms(head, rois, cls_score, bbox_pred, img_shape)

    def _regress_by_class(self, head: nn.Module, rois: Tensor, labels: Tensor,
                          bbox_pred: Tensor, img_shape: Tuple[int, int]) -> Tensor:
        """``BBoxHead.regress_by_class``."""
        if not head.reg_class_agnostic:
            columns = (labels * 4)[:, None] + torch.arange(4, device=labels.device)
            bbox_pred = bbox_pred.gather(1, columns)
        return decode_deltas(head.bbox_coder, rois, bbox_pred, img_shape)

    def _multiclass_nms(self, head: nn.Module, rois: Tensor, cls_score: Tensor,
                        bbox_pred: Tensor, img_shape: Tuple[int, int]
                        ) -> Tuple[Tensor, Tensor, Tensor]:
        """Softmax, per-class decoding, ``score > score_thr``, NMS per class, the best
        ``max_per_img`` (mmdet's ``multiclass_nms`` with mmcv's ``batched_nms``)."""
        cfg = self.rcnn_cfg
        scores = cls_score.softmax(dim=-1)[:, :-1]                      # (P, C)
        num_rois, num_classes = scores.shape
        per_class = 1 if head.reg_class_agnostic else num_classes
        rois = rois[:, None, :].expand(-1, per_class, 4).reshape(-1, 4)
        boxes = decode_deltas(head.bbox_coder, rois, bbox_pred.reshape(-1, 4), img_shape)
        boxes = boxes.view(-1, per_class, 4).expand(-1, num_classes, 4).reshape(-1, 4)
        labels = torch.arange(num_classes, device=scores.device).expand(num_rois, -1).reshape(-1)
        scores = scores.reshape(-1)
        valid = (scores > cfg.score_thr).nonzero().squeeze(1)
        boxes, scores, labels = boxes[valid], scores[valid], labels[valid]
        keep = batched_nms(boxes, scores, labels, cfg.nms.iou_threshold, cfg.max_per_img)
        return boxes[keep], scores[keep], labels[keep]

    def _roi_features(self, extractor: nn.Module, feats: Sequence[Tensor],
                      boxes: Tensor) -> Tensor:
        """``SingleRoIExtractor.forward``: each RoI pooled from the level of its scale."""
        num_levels = len(extractor.featmap_strides)
        rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], dim=1)
        levels = extractor.map_roi_levels(rois, num_levels)
        layer = extractor.roi_layers[0]
        out_h, out_w = layer.output_size
        pooled = feats[0].new_zeros((boxes.shape[0], extractor.out_channels, out_h, out_w))
        for level in range(num_levels):
            layer = extractor.roi_layers[level]
            index = (levels == level).nonzero().squeeze(1)
            pooled = pooled.index_put(
                (index,), onnx_ops.roi_align(feats[level], boxes[index], out_h, out_w,
                                             layer.spatial_scale, layer.sampling_ratio,
                                             layer.aligned))
        return pooled

    def _mask_probs(self, feats: Sequence[Tensor], boxes: Tensor, labels: Tensor) -> Tensor:
        """The mask head's sigmoid of each detection's class, (D, M, M); Cascade averages the
        stages' probabilities (``CascadeRoIHead.predict_mask``, ``merge_aug_masks``)."""
        roi_head = self.detector.roi_head
        heads = per_stage(roi_head.mask_head)
        extractors = per_stage(roi_head.mask_roi_extractor)
        probs: Optional[Tensor] = None
        for head, extractor in zip(heads, extractors):
            p = head(self._roi_features(extractor, feats, boxes)).sigmoid()
            probs = p if probs is None else probs + p
        probs = probs / len(heads)
        if heads[-1].class_agnostic:
            return probs[:, 0]
        index = labels[:, None, None, None].expand(-1, 1, probs.shape[2], probs.shape[3])
        return probs.gather(1, index)[:, 0]
