"""Run a trained detector or segmentor on images and write pictures and a predictions JSON.

Usage:
    python tools/infer.py CONFIG CHECKPOINT IMAGE_OR_FOLDER [...] --out DIR
        [--score-thr 0.3] [--device cpu]

The task comes from the config's ``default_scope``: ``mmdet`` configs draw boxes and masks
(mmdet's ``DetLocalVisualizer``), ``mmseg`` configs draw coloured class overlays (mmseg's
``SegLocalVisualizer``). Folders are read one level deep (jpg, jpeg, png, bmp, tif, tiff, webp),
with a progress bar. Grayscale images are expanded to 3 channels and the alpha channel of RGBA
images is dropped, as the training pipeline (``LoadImageFromFile``) does.

Writes:
    DIR/vis/NAME.EXT         the picture with the predictions drawn on it
    DIR/seg/NAME.png         (segmentation) the label map, one class index per pixel
    DIR/predictions.json     one entry per image, see ``--help``

The checkpoint is read with torch's ``weights_only`` loading and must fit the config's model
exactly; otherwise a one-line error names the file and the first mismatching keys.
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

import convnext_backbone  # noqa: F401 (registers our modules, quiets mmengine)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line arguments."""
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
    parser.add_argument('--device', default='cpu', help="torch device (default 'cpu')")
    return parser.parse_args(argv)


# -- inputs ----------------------------------------------------------------------------------------
def collect_images(inputs: Sequence[str]) -> List[str]:
    """Image files named on the command line plus the images inside named folders (sorted).

    Raises:
        SystemExit: When an input does not exist or a folder holds no image.
    """
    found: List[str] = []
    for item in inputs:
        if osp.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(IMAGE_EXTENSIONS))
            if not names:
                raise SystemExit(f'error: folder {item} holds no image '
                                 f'({", ".join(IMAGE_EXTENSIONS)})')
            found += [osp.join(item, n) for n in names]
        elif osp.isfile(item):
            found.append(item)
        else:
            raise SystemExit(f'error: image or folder not found: {item}')
    return found


def read_image(path: str) -> np.ndarray:
    """Read an image as 3-channel BGR uint8 (grayscale expanded, alpha dropped).

    Raises:
        ValueError: When the file is not a readable image.
    """
    import mmcv
    try:
        img = mmcv.imread(path, flag='color', channel_order='bgr')
    except Exception as err:  # noqa: BLE001 - reported per image, the run goes on
        raise ValueError(f'cannot read image {path}: {err}') from None
    if img is None:
        raise ValueError(f'cannot read image {path}: not an image or corrupt')
    return img  # cv2's colour mode also turns 16-bit images into 8-bit


# -- model -----------------------------------------------------------------------------------------
def load_model(config: str, checkpoint: str, device: str) -> Tuple[torch.nn.Module, str]:
    """Build the config's model, load the checkpoint strictly and put it in eval mode.

    Returns:
        tuple: (model with ``cfg`` and ``dataset_meta`` set, scope 'mmdet' or 'mmseg').

    Raises:
        SystemExit: Missing config or unsupported scope.
        convnext_backbone.CheckpointError: Unreadable checkpoint or one that does not fit.
    """
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import init_default_scope

    if not osp.isfile(config):
        raise SystemExit(f'error: config file not found: {config}')
    cfg = Config.fromfile(config)
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise SystemExit(f'error: {config} has default_scope={scope!r}; infer.py handles '
                         "'mmdet' (detection) and 'mmseg' (segmentation) configs")
    init_default_scope(scope)
    backbone = cfg.model.get('backbone')
    if isinstance(backbone, dict) and 'init_cfg' in backbone:
        backbone['init_cfg'] = None  # the checkpoint holds every weight
    if scope == 'mmseg':
        cfg.model['pretrained'] = None
        cfg.model['train_cfg'] = None
        from mmseg.registry import MODELS
    else:
        from mmdet.registry import MODELS
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    ckpt = _read(checkpoint)
    _load_strict(model, ckpt, checkpoint, config)
    model.cfg = cfg
    model.dataset_meta = _dataset_meta(cfg, ckpt, scope, model)
    model.to(device).eval()
    return model, scope


def _read(path: str) -> Dict[str, Any]:
    from convnext_backbone.checkpoint import CheckpointError
    from convnext_backbone.runner import checkpoint_safe_globals, explain_load_error
    if not osp.isfile(path):
        raise CheckpointError(f'checkpoint not found: {path}')
    try:
        with checkpoint_safe_globals():
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - reading errors become one clear line
        clear = explain_load_error(path, err)
        if clear is None:
            raise
        raise clear from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'checkpoint {path} holds a {type(ckpt).__name__}, not a dict of '
                              'weights')
    return ckpt


def _load_strict(model: torch.nn.Module, ckpt: Dict[str, Any], path: str, config: str) -> None:
    from convnext_backbone.checkpoint import CheckpointError
    state = ckpt.get('state_dict', ckpt)
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()
             if isinstance(v, torch.Tensor)}
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}'
              for k, v in state.items() if k in own and v.shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f'{len(missing)} model weights missing, first {missing[:3]}')
    if extra:
        problems.append(f'{len(extra)} unexpected weights, first {extra[:3]}')
    if shapes:
        problems.append(f'{len(shapes)} shape mismatches, first ' + '; '.join(shapes[:3]))
    if problems:
        raise CheckpointError(f'checkpoint {path} does not fit the model of {config}: '
                              + '; '.join(problems))
    model.load_state_dict(state, strict=True)


def _dataset_meta(cfg: Any, ckpt: Dict[str, Any], scope: str,
                  model: torch.nn.Module) -> Dict[str, Any]:
    meta = dict(ckpt.get('meta', {}).get('dataset_meta') or {})
    meta = {k.lower(): v for k, v in meta.items()}
    if not meta.get('classes'):
        meta.update(_config_metainfo(cfg, scope))
    if not meta.get('classes'):
        count = _num_classes(model)
        meta['classes'] = tuple(f'class {i}' for i in range(count))
    if not meta.get('palette') or len(meta['palette']) < len(meta['classes']):
        rng = np.random.RandomState(42)
        meta['palette'] = [tuple(int(c) for c in rng.randint(0, 256, 3))
                           for _ in meta['classes']]
    return meta


def _config_metainfo(cfg: Any, scope: str) -> Dict[str, Any]:
    try:
        dataset = dict(cfg.test_dataloader.dataset)
    except (AttributeError, KeyError, TypeError):
        return {}
    dataset['lazy_init'] = True
    if scope == 'mmseg':
        from mmseg.registry import DATASETS
    else:
        from mmdet.registry import DATASETS
    try:
        return dict(DATASETS.build(dataset).metainfo)
    except Exception:  # noqa: BLE001 - the data may be absent at inference: fall back
        return {}


def _num_classes(model: torch.nn.Module) -> int:
    for owner in ('decode_head', 'roi_head.bbox_head', 'bbox_head'):
        obj: Any = model
        for part in owner.split('.'):
            obj = getattr(obj, part, None)
        if isinstance(obj, (list, tuple, torch.nn.ModuleList)):
            obj = obj[-1]
        if obj is not None and hasattr(obj, 'num_classes'):
            return int(obj.num_classes)
    return 1


# -- predictions -----------------------------------------------------------------------------------
def detection_entry(sample: Any, classes: Sequence[str], score_thr: float) -> Dict[str, Any]:
    """JSON-ready detections of one ``DetDataSample`` with score >= ``score_thr``."""
    inst = sample.pred_instances
    keep = inst.scores >= score_thr
    bboxes = inst.bboxes[keep].cpu().numpy()
    scores = inst.scores[keep].cpu().numpy()
    labels = inst.labels[keep].cpu().numpy()
    masks = inst.masks[keep].cpu().numpy() if 'masks' in inst else None
    out = []
    for i, (bbox, score, label) in enumerate(zip(bboxes, scores, labels)):
        item = {'label': int(label),
                'class': str(classes[label]) if label < len(classes) else str(label),
                'score': round(float(score), 5),
                'bbox': [round(float(v), 2) for v in bbox]}
        if masks is not None:
            from pycocotools import mask as mask_utils
            rle = mask_utils.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            item['mask'] = {'size': [int(s) for s in rle['size']],
                            'counts': rle['counts'].decode('ascii')}
        out.append(item)
    return {'instances': out}


def segmentation_entry(sample: Any, classes: Sequence[str]) -> Tuple[Dict[str, Any], np.ndarray]:
    """JSON-ready class statistics of one ``SegDataSample`` and its label map."""
    label_map = sample.pred_sem_seg.data[0].cpu().numpy()
    values, counts = np.unique(label_map, return_counts=True)
    total = float(label_map.size)
    stats = [{'label': int(v), 'class': str(classes[v]) if v < len(classes) else str(v),
              'pixels': int(c), 'fraction': round(c / total, 5)}
             for v, c in sorted(zip(values, counts), key=lambda vc: -vc[1])]
    return {'classes': stats}, label_map


def _output_name(path: str, used: set) -> str:
    stem, ext = osp.splitext(osp.basename(path))
    ext = ext.lower() if ext.lower() in ('.jpg', '.jpeg', '.png', '.bmp') else '.png'
    name, n = stem, 1
    while name in used:
        n += 1
        name = f'{stem}_{n}'
    used.add(name)
    return name + ext


def run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Infer every image and write the pictures and ``predictions.json``.

    Returns:
        list[dict]: The entries written to predictions.json.
    """
    import mmcv
    from mmengine.utils import ProgressBar

    if not osp.isfile(args.config):
        raise SystemExit(f'error: config file not found: {args.config}')
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'error: checkpoint not found: {args.checkpoint}')
    images = collect_images(args.images)
    model, scope = load_model(args.config, args.checkpoint, args.device)
    classes = model.dataset_meta['classes']
    if scope == 'mmdet':
        from mmdet.apis import inference_detector as infer
        from mmdet.visualization import DetLocalVisualizer
        visualizer = DetLocalVisualizer(name=f'infer-{os.getpid()}')
    else:
        from mmseg.apis import inference_model as infer
        from mmseg.visualization import SegLocalVisualizer
        visualizer = SegLocalVisualizer(name=f'infer-{os.getpid()}', alpha=0.5)
    visualizer.dataset_meta = model.dataset_meta
    os.makedirs(osp.join(args.out, 'vis'), exist_ok=True)
    if scope == 'mmseg':
        os.makedirs(osp.join(args.out, 'seg'), exist_ok=True)

    entries: List[Dict[str, Any]] = []
    failed: List[str] = []
    used: set = set()
    bar = ProgressBar(len(images)) if len(images) > 1 else None
    for path in images:
        try:
            img = read_image(path)
        except ValueError as err:
            failed.append(str(err))
            if bar:
                bar.update()
            continue
        sample = infer(model, img)
        name = _output_name(path, used)
        vis_path = osp.join(args.out, 'vis', name)
        entry: Dict[str, Any] = {'image': path, 'width': int(img.shape[1]),
                                 'height': int(img.shape[0]), 'visualization': vis_path}
        if scope == 'mmdet':
            entry.update(detection_entry(sample, classes, args.score_thr))
            visualizer.add_datasample(name, img[..., ::-1], sample, draw_gt=False,
                                      pred_score_thr=args.score_thr, out_file=vis_path)
        else:
            stats, label_map = segmentation_entry(sample, classes)
            seg_path = osp.join(args.out, 'seg', osp.splitext(name)[0] + '.png')
            dtype = np.uint8 if label_map.max(initial=0) < 256 else np.uint16
            mmcv.imwrite(label_map.astype(dtype), seg_path)
            entry['label_map'] = seg_path
            entry.update(stats)
            visualizer.add_datasample(name, img[..., ::-1], sample, draw_gt=False,
                                      out_file=vis_path)
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
        raise SystemExit('error: no image could be read')
    return entries


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point; errors about inputs end the program with a one-line message."""
    from convnext_backbone.checkpoint import CheckpointError
    args = parse_args(argv)
    try:
        run(args)
    except CheckpointError as err:
        raise SystemExit(f'error: {err}') from None


if __name__ == '__main__':
    main()
