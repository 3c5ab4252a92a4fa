"""Write the demo datasets: coloured shapes on textured backgrounds, deterministic and in seconds.

Two datasets share one visual vocabulary (the same four shapes, the same textures):

* ``data/demo_coco``: COCO-format instance segmentation, ``train/*.jpg``, ``val/*.jpg`` and
  ``annotations/instances_{train,val}.json``. Several shapes per image, overlapping (later shapes
  occlude earlier ones; every instance keeps at least ``MIN_VISIBLE`` of its area visible), each
  annotated with the polygon(s) of its visible part, its box and its area.
* ``data/demo_ade``: ADE20K layout for semantic segmentation, ``images/{training,validation}/*.jpg``
  and ``annotations/{training,validation}/*.png``. Label PNGs follow ADE20K's ``reduce_zero_label``
  convention: 0 is "other" (ignored in training and evaluation), classes are 1..K
  (:data:`SEG_CLASSES`). Scenes are sky over two ground materials, with shapes and unlabelled
  clutter.

Every image is drawn from its own random stream seeded by ``(seed, split, index)``, so a dataset is
the same on every run and machine for given options, and growing a split keeps its first images.

Usage::

    python tools/make_demo_data.py                       # both datasets under data/
    python tools/make_demo_data.py --which det --det-train 50 --det-size 128 --out /tmp/demo
"""
import argparse
import json
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

#: Object classes (detection categories 1..4; semantic classes 5..8).
SHAPES: Tuple[str, ...] = ('circle', 'triangle', 'square', 'star')
#: Semantic classes, label value = index + 1 in the PNGs (0 = other / ignored).
SEG_CLASSES: Tuple[str, ...] = ('sky', 'grass', 'water', 'sand') + SHAPES
#: Hue (OpenCV scale 0..179) of each shape's fill: a class cue that colour-jitter keeps.
SHAPE_HUES: Tuple[int, ...] = (0, 28, 150, 90)
#: Each instance keeps at least this fraction of its own area visible.
MIN_VISIBLE = 0.5
_SPLIT_IDS = {'train': 1, 'val': 2, 'training': 1, 'validation': 2}


# -- drawing primitives ----------------------------------------------------------------------------
def _rng(seed: int, split: str, index: int, salt: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_IDS[split], index, salt])


def _smooth_noise(rng: np.random.Generator, size: Tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1], shape (H, W): a random grid upsampled bicubically."""
    h, w = size
    grid = rng.uniform(-1, 1, (cells + 1, cells + 1)).astype(np.float32)
    return np.clip(cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC), -1, 1)


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    hsv = np.array([[[h % 180, np.clip(s, 0, 255), np.clip(v, 0, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(rng: np.random.Generator, size: Tuple[int, int], base: np.ndarray,
             kind: str) -> np.ndarray:
    """A (H, W, 3) float RGB texture around ``base``: 'blotch', 'stripes', 'grain' or 'waves'."""
    h, w = size
    out = np.broadcast_to(base, (h, w, 3)).astype(np.float32).copy()
    out += 25 * _smooth_noise(rng, size, int(rng.integers(2, 6)))[..., None]
    if kind in ('stripes', 'waves'):
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if kind == 'stripes':
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 16)
        phase = (xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period
        out += 18 * np.sign(np.sin(phase))[..., None]
    elif kind == 'waves':
        period = rng.uniform(5, 10)
        phase = (yy + 3 * np.sin(xx / rng.uniform(6, 14))) * 2 * np.pi / period
        out += 20 * np.sin(phase)[..., None]
    elif kind == 'grain':
        out += 14 * rng.standard_normal((h, w, 1), dtype=np.float32)
    elif kind != 'blotch':
        raise ValueError(f'unknown texture kind {kind!r}')
    out += 4 * rng.standard_normal((h, w, 3), dtype=np.float32)
    return out


def _shape_polygon(rng: np.random.Generator, shape: str, cx: float, cy: float,
                   radius: float) -> np.ndarray:
    """Vertices (N, 2) of ``shape`` centred at (cx, cy) with circumradius ``radius``."""
    rot = rng.uniform(0, 2 * np.pi)
    if shape == 'circle':
        angles = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        ratio = rng.uniform(0.8, 1.0)
        pts = np.stack([np.cos(angles), ratio * np.sin(angles)], 1)
    elif shape == 'triangle':
        angles = np.array([0, 2, 4]) * np.pi / 3 + rng.uniform(-0.15, 0.15, 3)
        pts = np.stack([np.cos(angles), np.sin(angles)], 1)
    elif shape == 'square':
        angles = np.array([1, 3, 5, 7]) * np.pi / 4
        pts = np.stack([np.cos(angles), np.sin(angles)], 1)
    elif shape == 'star':
        angles = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, 1.0, 0.45)
        pts = np.stack([radii * np.cos(angles), radii * np.sin(angles)], 1)
    else:
        raise ValueError(f'unknown shape {shape!r}; choose one of {SHAPES}')
    c, s = np.cos(rot), np.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]])
    return pts * radius + np.array([cx, cy])


def _fill_mask(size: Tuple[int, int], polygon: np.ndarray) -> np.ndarray:
    mask = np.zeros(size, np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 16).astype(np.int32)], 1, lineType=cv2.LINE_8,
                 shift=4)
    return mask.astype(bool)


def _paint_shape(rng: np.random.Generator, image: np.ndarray, mask: np.ndarray,
                 label: int) -> None:
    """Paint ``mask`` of ``image`` in place with the shape's fill: its class hue, jittered,
    with shading and grain."""
    hue = SHAPE_HUES[label] + rng.uniform(-6, 6)
    base = _hsv_to_rgb(hue, rng.uniform(170, 240), rng.uniform(170, 245))
    kind = ('blotch', 'grain')[int(rng.integers(2))]
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = mask[y0:y1, x0:x1]
    image[y0:y1, x0:x1][crop] = _texture(rng, (y1 - y0, x1 - x0), base, kind)[crop]


def _place_shapes(rng: np.random.Generator, size: Tuple[int, int], count: int,
                  radius_range: Tuple[float, float]) -> List[Tuple[int, np.ndarray]]:
    """Random (label, full mask) pairs, painter's order, each keeping >= MIN_VISIBLE visible.

    A candidate is rejected when it would hide too much of an earlier shape or when it would itself
    be cut by the border (less than 90 % inside).
    """
    h, w = size
    placed: List[Tuple[int, np.ndarray]] = []
    for _ in range(count * 20):
        if len(placed) == count:
            break
        label = int(rng.integers(len(SHAPES)))
        radius = rng.uniform(*radius_range)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        polygon = _shape_polygon(rng, SHAPES[label], cx, cy, radius)
        full = _fill_mask(size, polygon)
        area = full.sum()
        if area < 30 or area < 0.9 * _polygon_area(polygon):
            continue  # cut by the image border
        later = full.copy()
        ok = True
        for _, prev in reversed(placed):
            visible = prev & ~later
            if visible.sum() < MIN_VISIBLE * prev.sum():
                ok = False
                break
            later |= prev
        if ok:
            placed.append((label, full))
    return placed


def _polygon_area(polygon: np.ndarray) -> float:
    x, y = polygon[:, 0], polygon[:, 1]
    return float(abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2)


def _visible_masks(masks: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Visible part of each mask when drawn in order (later ones on top)."""
    out = []
    for i, mask in enumerate(masks):
        visible = mask.copy()
        for later in masks[i + 1:]:
            visible &= ~later
        out.append(visible)
    return out


def _polygons(mask: np.ndarray) -> List[List[float]]:
    """COCO polygons [x1, y1, x2, y2, ...] of a binary mask's outer contours (>= 3 points)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for contour in contours:
        if len(contour) >= 3 and cv2.contourArea(contour) >= 2:
            polys.append([float(v) for v in contour.reshape(-1)])
    return polys


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _write_jpg(path: str, rgb: np.ndarray) -> None:
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f'cannot write {path}')


# -- detection dataset -----------------------------------------------------------------------------
def draw_det_image(seed: int, split: str, index: int, size: int,
                   max_objects: int) -> Tuple[np.ndarray, List[dict]]:
    """Draw one detection image.

    Args:
        seed (int): Dataset seed.
        split (str): 'train' or 'val'.
        index (int): Image index in the split.
        size (int): Side of the square image in pixels.
        max_objects (int): Up to this many shapes (at least 2).

    Returns:
        tuple: (H, W, 3) uint8 RGB image and a list of dicts with ``label`` (0-based shape index),
        ``polygons`` (COCO lists), ``bbox`` ([x, y, w, h]) and ``area`` (visible pixels).
    """
    rng = _rng(seed, split, index, 0)
    hw = (size, size)
    base = _hsv_to_rgb(rng.uniform(0, 180), rng.uniform(10, 70), rng.uniform(70, 190))
    kind = ('blotch', 'stripes', 'grain', 'waves')[int(rng.integers(4))]
    image = _texture(rng, hw, base, kind)
    count = int(rng.integers(2, max(2, max_objects) + 1))
    placed = _place_shapes(rng, hw, count, (0.09 * size, 0.22 * size))
    anns = []
    for (label, full), visible in zip(placed, _visible_masks([m for _, m in placed])):
        _paint_shape(rng, image, full, label)
        polys = _polygons(visible)
        if not polys:
            continue
        ys, xs = np.nonzero(visible)
        anns.append(dict(label=label, polygons=polys, area=float(visible.sum()),
                         bbox=[float(xs.min()), float(ys.min()),
                               float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]))
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    return _to_uint8(image), anns


def make_coco(out_dir: str, counts: Dict[str, int], size: int = 256, max_objects: int = 5,
              seed: int = 0) -> Dict[str, str]:
    """Write the COCO-format instance segmentation dataset.

    Args:
        out_dir (str): Dataset root (e.g. ``data/demo_coco``).
        counts (dict): Images per split, e.g. ``{'train': 400, 'val': 50}``.
        size (int): Image side in pixels (>= 64). Defaults to 256.
        max_objects (int): Up to this many shapes per image (>= 2). Defaults to 5.
        seed (int): Dataset seed. Defaults to 0.

    Returns:
        dict: Split name -> path of its annotation file.
    """
    _check_sizes(size, counts, min_size=64)
    if max_objects < 2:
        raise ValueError(f'max_objects={max_objects} must be >= 2 (overlaps need two shapes)')
    categories = [dict(id=i + 1, name=name, supercategory='shape')
                  for i, name in enumerate(SHAPES)]
    os.makedirs(os.path.join(out_dir, 'annotations'), exist_ok=True)
    written = {}
    for split, count in counts.items():
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        images, annotations = [], []
        for index in range(count):
            image, anns = draw_det_image(seed, split, index, size, max_objects)
            file_name = f'{index:06d}.jpg'
            _write_jpg(os.path.join(out_dir, split, file_name), image)
            images.append(dict(id=index + 1, file_name=file_name, height=size, width=size))
            for ann in anns:
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=index + 1, category_id=ann['label'] + 1,
                    segmentation=ann['polygons'], area=ann['area'], bbox=ann['bbox'],
                    iscrowd=0))
        path = os.path.join(out_dir, 'annotations', f'instances_{split}.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump(dict(info=dict(description='convnext-backbone demo shapes', version='1'),
                           licenses=[], images=images, annotations=annotations,
                           categories=categories), f)
        written[split] = path
    return written


# -- semantic segmentation dataset -----------------------------------------------------------------
def _wavy_boundary(rng: np.random.Generator, length: int, mean: float, amplitude: float
                   ) -> np.ndarray:
    t = np.arange(length, dtype=np.float32)
    wave = sum(rng.uniform(0.3, 1) * np.sin(t / rng.uniform(8, 40) + rng.uniform(0, 6.3))
               for _ in range(2))
    return mean + amplitude * wave / 2


_STUFF = {  # class index -> (hue, saturation, value, texture)
    0: (105, 90, 225, 'blotch'),   # sky: light blue, smooth
    1: (55, 170, 140, 'grain'),    # grass: green, grainy
    2: (110, 200, 130, 'waves'),   # water: deep blue, waves
    3: (22, 90, 200, 'stripes'),   # sand: beige, ripples
}


def draw_seg_image(seed: int, split: str, index: int, size: int,
                   max_objects: int) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one semantic segmentation image.

    Args:
        seed (int): Dataset seed.
        split (str): 'training' or 'validation'.
        index (int): Image index in the split.
        size (int): Side of the square image in pixels.
        max_objects (int): Up to this many shapes.

    Returns:
        tuple: (H, W, 3) uint8 RGB image and (H, W) uint8 label map, 0 = other,
        1..len(SEG_CLASSES) = :data:`SEG_CLASSES`.
    """
    rng = _rng(seed, split, index, 1)
    hw = (size, size)
    yy, xx = np.mgrid[0:size, 0:size]
    horizon = _wavy_boundary(rng, size, rng.uniform(0.2, 0.5) * size, 0.05 * size)
    ground = rng.choice([1, 2, 3], size=2, replace=False)
    slope = rng.uniform(-0.8, 0.8)
    split_x = _wavy_boundary(rng, size, rng.uniform(0.3, 0.7) * size, 0.06 * size)
    split_x = split_x[:, None] + slope * (yy - size / 2)          # per row, leaning
    stuff = np.where(yy < horizon[None, :], 0, np.where(xx < split_x, ground[0], ground[1]))
    image = np.zeros((size, size, 3), np.float32)
    for cls in np.unique(stuff):
        hue, sat, val, kind = _STUFF[int(cls)]
        base = _hsv_to_rgb(hue + rng.uniform(-5, 5), sat + rng.uniform(-20, 20),
                           val + rng.uniform(-20, 20))
        region = stuff == cls
        image[region] = _texture(rng, hw, base, kind)[region]
    label = (stuff + 1).astype(np.uint8)
    # Unlabelled clutter (label 0): grey-brown blobs, drawn below the shapes.
    for _ in range(int(rng.integers(0, 3))):
        blob = _smooth_noise(rng, hw, 4) > rng.uniform(0.55, 0.75)
        base = _hsv_to_rgb(rng.uniform(0, 180), rng.uniform(0, 40), rng.uniform(60, 200))
        image[blob] = _texture(rng, hw, base, 'grain')[blob]
        label[blob] = 0
    count = int(rng.integers(1, max(1, max_objects) + 1))
    for shape, full in _place_shapes(rng, hw, count, (0.07 * size, 0.16 * size)):
        _paint_shape(rng, image, full, shape)
        label[full] = len(_STUFF) + shape + 1
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    return _to_uint8(image), label


def make_ade(out_dir: str, counts: Dict[str, int], size: int = 256, max_objects: int = 4,
             seed: int = 0) -> Dict[str, str]:
    """Write the ADE20K-layout semantic segmentation dataset.

    Arguments as :func:`make_coco`, except: ``out_dir`` e.g. ``data/demo_ade``; ``counts`` e.g.
    ``{'training': 400, 'validation': 50}``; ``size`` >= 32; ``max_objects`` defaults to 4.

    Returns:
        dict: Split name -> its annotation directory.
    """
    _check_sizes(size, counts, min_size=32)
    written = {}
    for split, count in counts.items():
        img_dir = os.path.join(out_dir, 'images', split)
        ann_dir = os.path.join(out_dir, 'annotations', split)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(ann_dir, exist_ok=True)
        for index in range(count):
            image, label = draw_seg_image(seed, split, index, size, max_objects)
            _write_jpg(os.path.join(img_dir, f'{index:06d}.jpg'), image)
            if not cv2.imwrite(os.path.join(ann_dir, f'{index:06d}.png'), label):
                raise OSError(f'cannot write a label PNG in {ann_dir}')
        written[split] = ann_dir
    return written


def _check_sizes(size: int, counts: Dict[str, int], min_size: int) -> None:
    if size < min_size:
        raise ValueError(f'image size {size} is too small: use >= {min_size} px')
    for split, count in counts.items():
        if split not in _SPLIT_IDS:
            raise ValueError(f'unknown split {split!r}; use one of {sorted(_SPLIT_IDS)}')
        if count < 1:
            raise ValueError(f'{split} count must be >= 1, got {count}')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default='data', help='parent directory (default: data)')
    parser.add_argument('--which', choices=('det', 'seg', 'all'), default='all')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--det-train', type=int, default=400, help='COCO train images')
    parser.add_argument('--det-val', type=int, default=50, help='COCO val images')
    parser.add_argument('--det-size', type=int, default=160, help='COCO image side (px)')
    parser.add_argument('--det-max-objects', type=int, default=5)
    parser.add_argument('--seg-train', type=int, default=400, help='ADE training images')
    parser.add_argument('--seg-val', type=int, default=50, help='ADE validation images')
    parser.add_argument('--seg-size', type=int, default=160, help='ADE image side (px)')
    parser.add_argument('--seg-max-objects', type=int, default=4)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    start = time.time()
    if args.which in ('det', 'all'):
        root = os.path.join(args.out, 'demo_coco')
        make_coco(root, {'train': args.det_train, 'val': args.det_val}, args.det_size,
                  args.det_max_objects, args.seed)
        print(f'[make_demo_data] COCO instances: {root} ({args.det_train} train / '
              f'{args.det_val} val images, {args.det_size} px, classes {", ".join(SHAPES)})')
    if args.which in ('seg', 'all'):
        root = os.path.join(args.out, 'demo_ade')
        make_ade(root, {'training': args.seg_train, 'validation': args.seg_val}, args.seg_size,
                 args.seg_max_objects, args.seed)
        print(f'[make_demo_data] ADE20K layout: {root} ({args.seg_train} training / '
              f'{args.seg_val} validation images, {args.seg_size} px, classes 1..'
              f'{len(SEG_CLASSES)} = {", ".join(SEG_CLASSES)}, 0 = other)')
    print(f'[make_demo_data] done in {time.time() - start:.1f} s')


if __name__ == '__main__':
    sys.exit(main())
