"""Count the parameters and FLOPs of a detector or segmentor config, as the ConvNeXt paper does.

Usage::

    python tools/get_flops.py CONFIG [--shape H W] [--cfg-options KEY=VALUE ...]

Prints ``Params: <x>M`` and ``FLOPs: <y>G`` for one 1 x 3 x H x W input (default 800 x 1280 for
detectors, 512 x 2048 for segmentors). One multiply-add counts as one FLOP: the FLOP counter and
parameter count of mmengine's ``get_model_complexity_info`` (``FlopAnalyzer``, fvcore's rules, and
``parameter_count``), called directly to skip its activation count (a second trace) and to check
what the counter could not see. Params are all parameters of the model.

How the forward pass is chosen:

- Two-stage detectors (Mask R-CNN, Cascade Mask R-CNN): the mmdet 2.x ``forward_dummy`` used for
  Table 3 of the paper: backbone, neck and RPN head convolutions on the image; every box head
  (each cascade stage) on 1000 fixed proposals; every mask head on the first 100 of them only.
  RoIAlign (an mmcv op), NMS and box decoding are not counted.
- Other detectors and segmentors: the model's tensor-mode forward (``mode='tensor'``); for an
  EncoderDecoder segmentor that is backbone + decode head (no auxiliary head), as mmseg 0.x's
  ``forward_dummy``.

Note:
    mmdet 3.x's own tensor-mode forward of Cascade Mask R-CNN runs all three mask heads on all
    1000 proposals, which would count about 2171G FLOPs for ConvNeXt-T instead of the paper's
    741G; this tool counts the way the paper did.

The count stops with an error when the traced forward contains product ops the counter has no
rule for (fused oneDNN kernels, custom autograd functions other than mmcv's RoIAlign): their
FLOPs would silently be missing.
"""
import argparse
import re
from typing import List, Optional, Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer, parameter_count
from mmengine.config import Config
from torch import nn

from convnext_backbone import cli, errors

DEFAULT_SHAPES = {'mmdet': (800, 1280), 'mmseg': (512, 2048)}
NUM_PROPOSALS = 1000  # box heads run on this many proposals (mmdet 2.x forward_dummy)
NUM_MASK_ROIS = 100   # mask heads on the first this many
# Ops without a counting rule that are expected and cost no multiply-adds worth counting
# (RoIAlign: bilinear sampling, not counted by the paper's counter either). Any other custom op,
# or an op that computes products without a rule, makes the count wrong.
EXPECTED_UNCOUNTED = ('prim::PythonOp.RoIAlignFunction',)
_PRODUCT_OP = re.compile(r'mkldnn|linear|conv|matmul|::mm$|addmm|bmm|einsum|^prim::PythonOp')


class UncountedOpsError(errors.UserError, RuntimeError):
    """The traced forward holds product ops the FLOP counter has no rule for."""


class TwoStageDummy(nn.Module):
    """The mmdet 2.x ``forward_dummy`` of a two-stage detector, on mmdet 3.x modules.

    Backbone, neck and RPN head on the image, then each box head (one per cascade stage) on
    ``num_proposals`` fixed boxes and each mask head on the first ``num_mask_rois`` of them.

    Args:
        detector (nn.Module): An mmdet 3.x ``TwoStageDetector`` with a ``StandardRoIHead`` or
            ``CascadeRoIHead``-like ``roi_head`` (``bbox_roi_extractor``, ``bbox_head`` and
            optionally ``mask_roi_extractor``, ``mask_head``; ModuleLists for cascades).
        image_shape (tuple[int, int]): (H, W) of the input, to place the proposals.
        num_proposals (int): Boxes for the box heads. Defaults to 1000.
        num_mask_rois (int): Boxes for the mask heads. Defaults to 100.
    """

    def __init__(self, detector: nn.Module, image_shape: Tuple[int, int],
                 num_proposals: int = NUM_PROPOSALS, num_mask_rois: int = NUM_MASK_ROIS) -> None:
        super().__init__()
        roi_head = getattr(detector, 'roi_head', None)
        if roi_head is None or getattr(roi_head, 'bbox_head', None) is None:
            raise TypeError(f'{type(detector).__name__} has no roi_head with a bbox_head')
        self.detector = detector
        self.num_mask_rois = num_mask_rois
        # mmdet 2.x used torch.randn(1000, 4); the values do not change the count, so we use
        # valid boxes inside the image, fixed by a seed.
        gen = torch.Generator().manual_seed(0)
        h, w = image_shape
        xy = torch.rand(num_proposals, 2, generator=gen) * torch.tensor([w / 2, h / 2])
        wh = torch.rand(num_proposals, 2, generator=gen) * torch.tensor([w / 2, h / 2]) + 8
        boxes = torch.cat([xy, xy + wh], dim=1)
        self.register_buffer('rois', torch.cat([boxes.new_zeros(num_proposals, 1), boxes], 1),
                             persistent=False)

    @staticmethod
    def _stages(module: Optional[nn.Module]) -> List[nn.Module]:
        if module is None:
            return []
        return list(module) if isinstance(module, nn.ModuleList) else [module]

    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """img (1, 3, H, W) -> every head output, flattened to a tuple of tensors."""
        det = self.detector
        roi_head = det.roi_head
        feats = det.extract_feat(img)
        outs: List[torch.Tensor] = []
        if getattr(det, 'rpn_head', None) is not None:
            outs += _flatten(det.rpn_head(feats))
        rois = self.rois.to(img.dtype)
        extractors = self._stages(roi_head.bbox_roi_extractor)
        heads = self._stages(roi_head.bbox_head)
        for i, head in enumerate(heads):
            extractor = extractors[min(i, len(extractors) - 1)]
            roi_feats = extractor(feats[:extractor.num_inputs], rois)
            if getattr(roi_head, 'shared_head', None) is not None:
                roi_feats = roi_head.shared_head(roi_feats)
            outs += _flatten(head(roi_feats))
        mask_heads = self._stages(getattr(roi_head, 'mask_head', None))
        if mask_heads:
            mask_rois = rois[:self.num_mask_rois]
            extractors = self._stages(roi_head.mask_roi_extractor)
            for i, head in enumerate(mask_heads):
                extractor = extractors[min(i, len(extractors) - 1)]
                outs += _flatten(head(extractor(feats[:extractor.num_inputs], mask_rois)))
        return tuple(outs)


class TensorModeForward(nn.Module):
    """``model(inputs, mode='tensor')`` as a one-argument module (segmentors, one-stage
    detectors)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, img: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """img (1, 3, H, W) -> the raw head outputs as a tuple of tensors."""
        return tuple(_flatten(self.model(img, mode='tensor')))


def _flatten(outputs) -> List[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, (list, tuple)):
        return [t for item in outputs for t in _flatten(item)]
    if isinstance(outputs, dict):
        return [t for item in outputs.values() for t in _flatten(item)]
    return []


def build_counted_model(cfg: Config, shape: Tuple[int, int]) -> Tuple[nn.Module, str]:
    """Build the config's model (no weights loaded) and wrap the forward pass to count.

    Returns:
        tuple[nn.Module, str]: The module to analyse and a one-line description of its forward.
    """
    model = cli.build_model(cfg)
    if cfg.get('default_scope') == 'mmdet' and getattr(model, 'roi_head', None) is not None:
        counted = TwoStageDummy(model, shape)
        how = (f'mmdet 2.x forward_dummy: backbone + neck + RPN head, box heads on '
               f'{NUM_PROPOSALS} proposals, mask heads on the first {NUM_MASK_ROIS}')
    else:
        counted = TensorModeForward(model)
        how = 'tensor-mode forward (backbone + neck/decode head)'
    return counted, how


def count(cfg: Config, shape: Tuple[int, int]) -> dict:
    """Count params and FLOPs of ``cfg.model`` on a 1 x 3 x H x W input.

    Returns:
        dict: ``params`` and ``flops`` (ints), ``how`` (str) and ``uncounted`` (dict of op name
        to number of calls the counter has no rule for).

    Raises:
        UncountedOpsError: When an op that computes products was not counted.
    """
    counted, how = build_counted_model(cfg, shape)
    with torch.no_grad():
        analyzer = FlopAnalyzer(counted, (torch.randn(1, 3, *shape),))
        analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        flops = analyzer.total()
    uncounted = dict(analyzer.unsupported_ops())
    missed = sorted(op for op in uncounted
                    if op not in EXPECTED_UNCOUNTED and _PRODUCT_OP.search(op))
    if missed:
        raise UncountedOpsError(
            f'the FLOP counter has no rule for {missed} in the traced forward, so their '
            'multiply-adds would be missing; the model must run plain PyTorch ops (e.g. '
            'F.linear, conv) while traced')
    return dict(params=parameter_count(counted)[''], flops=flops, how=how, uncounted=uncounted)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line of get_flops.py."""
    parser = argparse.ArgumentParser(
        description='Print the params and FLOPs (one multiply-add = one FLOP) of a detector or '
        'segmentor config on a 1x3xHxW input, counted like the ConvNeXt paper: two-stage '
        'detectors run mmdet 2.x\'s forward_dummy (box heads on 1000 proposals, mask heads on '
        'the first 100; RoIAlign and NMS not counted), segmentors and other detectors their '
        'tensor-mode forward (backbone + decode head, no auxiliary head).')
    parser.add_argument('config', help='config file')
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'),
                        help='input height and width (default: 800 1280 for mmdet configs, '
                        '512 2048 for mmseg configs)')
    cli.add_config_args(parser)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of ``tools/get_flops.py``."""
    args = parse_args(argv)
    cfg = cli.read_config(args.config, args.cfg_options)
    scope = cfg.get('default_scope')
    if scope not in DEFAULT_SHAPES:
        errors.fail(f'default_scope {scope!r} of {args.config} is not one of '
                    f'{tuple(DEFAULT_SHAPES)}')
    shape = tuple(args.shape) if args.shape else DEFAULT_SHAPES[scope]
    if min(shape) < 32:
        errors.fail(f'--shape {shape[0]} {shape[1]} is too small (at least 32 x 32)')
    try:
        result = count(cfg, shape)
    except UncountedOpsError as err:
        errors.fail(f'{args.config}: {err}', code=1)
    print(f'Input: 1x3x{shape[0]}x{shape[1]} (H x W)')
    print(f'Forward: {result["how"]}')
    uncounted = sorted(result['uncounted'].items())
    print('Not counted (no multiply-add rule): '
          + ', '.join(f'{op.split("::")[-1]} x{n}' for op, n in uncounted))
    print(f'Params: {result["params"] / 1e6:.2f}M')
    print(f'FLOPs: {result["flops"] / 1e9:.2f}G')


if __name__ == '__main__':
    main()
