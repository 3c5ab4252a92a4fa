"""Run a trained detector or segmentor on images and write pictures and a predictions JSON.

Usage:
    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [...] --out DIR
        [--score-thr 0.3] [--device cuda|cpu] [--bf16] [--debug]

mmdet configs run through mmdet's ``DetInferencer`` and draw boxes and masks; mmseg configs
through mmseg's ``MMSegInferencer`` and draw coloured class overlays (see
``convnext_backbone.inference`` for what we change in them). Folders are read one level deep,
with a progress bar. Grayscale, RGBA and 16-bit images are read as the training pipeline reads
them (3-channel, 8-bit).

Writes:
    DIR/vis/NAME.EXT         the picture with the predictions drawn on it
    DIR/seg/NAME.png         (segmentation) the label map, one class index per pixel
    DIR/predictions.json     one entry per image, see ``--help``
"""
import argparse
import contextlib
import functools
import json
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Sequence

# first: it sets how OpenMP threads wait before torch loads (convnext_backbone/openmp.py)
import convnext_backbone  # noqa: F401

# isort: split
import numpy as np
import torch

from convnext_backbone import cli, errors, frozen_weights, precision

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0],
        epilog='predictions.json: a list with one entry per image: {"image", "width", "height", '
               '"visualization", and for detection "instances": [{"label", "class", "score", '
               '"bbox": [x1, y1, x2, y2], "mask": COCO RLE}] (score >= --score-thr), for '
               'segmentation "label_map" and "classes": [{"label", "class", "pixels", '
               '"fraction"}]}.')
    parser.add_argument('config', help='mmdet or mmseg config file')
    parser.add_argument('checkpoint', help='checkpoint trained with this config')
    parser.add_argument('images', nargs='+', help='image files and/or folders of images')
    parser.add_argument('--out', required=True, help='output folder')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: lowest score drawn and saved (default 0.3)')
    default_device = 'cuda' if torch.cuda.is_available() else 'cpu'
    parser.add_argument('--device', default=default_device,
                        help=f"torch device (default 'cuda' where CUDA is available, else 'cpu'; "
                        f"here {default_device!r})")
    parser.add_argument('--bf16', action='store_true',
                        help='run under bfloat16 autocast, with mmcv ops and the heads\' output '
                        'layers in float32 (convnext_backbone.precision); refused where bf16 is '
                        'not native')
    cli.add_debug_arg(parser)
    return cli.parse_args(parser, argv)


def _output_name(path: str, used: set) -> str:
    stem, ext = osp.splitext(osp.basename(path))
    ext = ext.lower() if ext.lower() in ('.jpg', '.jpeg', '.png', '.bmp') else '.png'
    name, n = stem, 1
    while name in used:
        n += 1
        name = f'{stem}_{n}'
    used.add(name)
    return name + ext


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, Any]]:
    import mmcv
    from mmengine.utils import ProgressBar

    from convnext_backbone.inference import (
        TASKS,
        build_inferencer,
        detection_entry,
        predict,
        read_image,
        segmentation_entry,
    )
    args = parse_args(argv)
    cfg = cli.read_config(args.config)
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        errors.fail(f"{args.config} has default_scope={scope!r}; infer.py handles 'mmdet' "
                    "(detection) and 'mmseg' (segmentation) configs")
    checkpoint = cli.existing_checkpoint(args.checkpoint)
    images = cli.image_files(args.images, IMAGE_EXTENSIONS)
    cli.writable_dir(osp.join(args.out, 'vis'), option='--out')
    if scope == 'mmseg':
        cli.writable_dir(osp.join(args.out, 'seg'), option='--out')
    with cli.one_line_errors():
        if args.bf16:
            precision.check_bf16(args.device)
        cli.check_backbone(cfg)
        with cli.building_model():
            inferencer, scope = build_inferencer(args.config, checkpoint, args.device)
    autocast = contextlib.nullcontext
    if args.bf16:
        precision.prepare_bf16(inferencer.model)
        autocast = functools.partial(precision.bf16_autocast, args.device)
    classes = inferencer.model.dataset_meta['classes']

    entries: List[Dict[str, Any]] = []
    failed: List[str] = []
    used: set = set()
    bar = ProgressBar(len(images)) if len(images) > 1 else None
    # the backbone casts and packs its weights once for all the images
    with frozen_weights(inferencer.model):
        for path in images:
            try:
                img = read_image(path)
            except ValueError as err:
                failed.append(str(err))
            else:
                with autocast():
                    sample = predict(inferencer, scope, img)
                name = _output_name(path, used)
                vis_path = osp.join(args.out, 'vis', name)
                entry: Dict[str, Any] = {'image': path, 'width': int(img.shape[1]),
                                         'height': int(img.shape[0]), 'visualization': vis_path}
                if scope == 'mmdet':
                    entry.update(detection_entry(sample, classes, args.score_thr))
                    draw = dict(pred_score_thr=args.score_thr)
                else:
                    stats, label_map = segmentation_entry(sample, classes)
                    seg_path = osp.join(args.out, 'seg', osp.splitext(name)[0] + '.png')
                    dtype = np.uint8 if label_map.max(initial=0) < 256 else np.uint16
                    mmcv.imwrite(label_map.astype(dtype), seg_path)
                    entry['label_map'] = seg_path
                    entry.update(stats)
                    draw = {}
                inferencer.visualizer.add_datasample(name, img[..., ::-1], sample, draw_gt=False,
                                                     out_file=vis_path, **draw)
                entries.append(entry)
            if bar:
                bar.update()
    if bar:
        sys.stdout.write('\n')
    with open(osp.join(args.out, 'predictions.json'), 'w', encoding='utf-8') as f:
        json.dump(entries, f, indent=1)
    for message in failed:
        print(f'skipped: {message}', file=sys.stderr)
    print(f'{TASKS[scope]}: {len(entries)} image(s) -> {args.out}/vis, '
          f'{osp.join(args.out, "predictions.json")}')
    if not entries:
        errors.fail('no image could be read', code=1)
    return entries


if __name__ == '__main__':
    main()
