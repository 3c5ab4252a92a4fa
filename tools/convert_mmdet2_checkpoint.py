"""Convert a full detection/segmentation checkpoint of the mmdet 2.x / mmseg 0.x era for a config
of this repository, and check that it fits the config's model exactly.

Usage::

    python tools/convert_mmdet2_checkpoint.py CONFIG SRC DST

SRC is an official ConvNeXt fine-tuned checkpoint (e.g.
https://dl.fbaipublicfiles.com/convnext/coco/cascade_mask_rcnn_convnext_tiny_1k_3x.pth) or an
OpenMMLab model-zoo one whose backbone is mmpretrain's ConvNeXt. DST holds ``state_dict`` (plain
tensors, loadable with ``torch.load(weights_only=True)``) and ``meta.dataset_meta.classes`` (from
the 2.x ``meta.CLASSES``); optimizer and apex AMP states are dropped. Then::

    python tools/test.py CONFIG DST

What is converted:

- Backbone keys (``backbone.*``): any ConvNeXt layout :mod:`convnext_backbone.checkpoint` knows
  (official: unchanged; mmpretrain: ``depthwise_conv`` -> ``dwconv``, ``pointwise_conv1/2`` ->
  ``pwconv1/2``, GRN vectors reshaped).
- Neck and head keys: unchanged. The mmdet 2.x and 3.x modules of these models use the same
  names and shapes (open-mmlab/mmdetection#9779: "compatibility is fully kept"): FPN
  ``lateral_convs`` / ``fpn_convs``; RPNHead ``rpn_conv`` / ``rpn_cls`` / ``rpn_reg``; the
  Shared2FC and 4conv1fc ``ConvFCBBoxHead`` ``shared_convs.i.{conv,bn}`` / ``shared_fcs`` /
  ``fc_cls`` / ``fc_reg``; ``FCNMaskHead`` ``convs`` / ``upsample`` / ``conv_logits``; cascade
  stages ``roi_head.{bbox,mask}_head.{0,1,2}``; mmseg's UPerHead and FCNHead. The strict check
  below catches any difference.

The file must then fit the model built from CONFIG key for key and shape for shape; otherwise
nothing is written and the mismatches are listed.
"""
import argparse
import os
import os.path as osp
import sys
from collections import OrderedDict
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import torch

from convnext_backbone import cli, errors
from convnext_backbone.checkpoint import (
    CheckpointError,
    check_fit,
    convert_state_dict,
    read_checkpoint,
    unwrap_state_dict,
)

BACKBONE = 'backbone.'


def convert(checkpoint: Mapping[str, Any]) -> Tuple['OrderedDict[str, torch.Tensor]', dict, str]:
    """Convert a loaded 2.x-era checkpoint to our key names.

    Args:
        checkpoint (Mapping): What ``torch.load`` returned: ``{'state_dict': ..., 'meta': ...}``
            (mmdet 2.x / mmseg 0.x) or a plain state dict.

    Returns:
        tuple: (state dict with our keys, meta with ``dataset_meta`` when the source names its
        classes, the detected backbone layout).

    Raises:
        CheckpointError: When the file holds no weights or its backbone is no known ConvNeXt
            layout.
    """
    state = unwrap_state_dict(checkpoint)
    backbone = {k: v for k, v in state.items() if k.startswith(BACKBONE)}
    if not backbone:
        raise CheckpointError(f'no {BACKBONE}* keys: not a full detector/segmentor checkpoint '
                              f'(first keys {list(state)[:3]})')
    converted = convert_state_dict({'state_dict': backbone})
    if converted.unused:
        raise CheckpointError(f'{len(converted.unused)} backbone keys are not ConvNeXt weights, '
                              f'first {converted.unused[:3]}')
    # Backbone first (our order), then necks and heads in the source's order.
    rest = [(k, v) for k, v in state.items() if not k.startswith(BACKBONE)]
    out = OrderedDict([(BACKBONE + k, v) for k, v in converted.state_dict.items()] + rest)
    return out, _meta(checkpoint.get('meta')), converted.layout


def _meta(source: Any) -> dict:
    meta: Dict[str, Any] = {}
    if not isinstance(source, Mapping):
        return meta
    dataset_meta = dict(source.get('dataset_meta') or {})
    if source.get('CLASSES') is not None:
        dataset_meta.setdefault('classes', tuple(source['CLASSES']))
    if source.get('PALETTE') is not None:
        dataset_meta.setdefault('palette', [list(c) for c in source['PALETTE']])
    if dataset_meta:
        meta['dataset_meta'] = dataset_meta
    for key in ('mmdet_version', 'mmseg_version', 'mmcv_version', 'epoch', 'iter'):
        if key in source:
            meta[f'source_{key}'] = source[key]
    return meta


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        description='Convert an mmdet 2.x / mmseg 0.x era ConvNeXt detector or segmentor '
        'checkpoint (official or OpenMMLab model zoo) for a config of this repository, checking '
        'that every key and shape fits the config\'s model.')
    parser.add_argument('config', help='config whose model the checkpoint must fit')
    parser.add_argument('src', help='checkpoint path or URL')
    parser.add_argument('dst', help='output .pth path')
    args = parser.parse_args(argv)
    cli.read_config(args.config)  # a missing config is one line
    try:
        state, meta, layout = convert(read_checkpoint(args.src))
    except CheckpointError as err:
        message = str(err) if args.src in str(err) else f'{args.src}: {err}'
        errors.report(message)
        return 1
    fit, _, _ = check_fit(cli.build_model(cli.read_config(args.config)).state_dict(), state)
    if not fit:
        errors.report(f'{args.src} does not fit the model of {args.config}: {fit.describe()}')
        return 1
    meta['converted_from'] = args.src
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save({'state_dict': state, 'meta': meta}, args.dst)
    print(f'{args.src} (backbone layout: {layout}): {len(state)} tensors fit {args.config}; '
          f'wrote {args.dst}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
