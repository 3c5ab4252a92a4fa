"""Pretrain the demo's ConvNeXt on crops of the generated images: the paper's pretraining in small.

The paper pretrains ConvNeXt as an image classifier (ImageNet), then fine-tunes it inside Mask R-CNN
and UperNet. The demo does the same at toy scale: it cuts labelled square crops out of the demo
datasets' training splits, trains ``ConvNeXt + global average pool + LayerNorm + Linear`` to
classify them, and saves the weights in the official classification layout ``{'model': {...}}``
with ``downsample_layers.*``, ``stages.*``, ``norm.*`` and ``head.*``. The detection and
segmentation demo configs then load it with ``init_cfg=dict(type='Pretrained', checkpoint=...)``,
which exercises the layout detection and strict loading of ``convnext_backbone.checkpoint``.

Crop classes (:data:`CLASSES`): the four shapes (crops around COCO instances and ADE shape regions),
the four ADE stuff classes (patches where one class covers most pixels) and 'background' (COCO
patches that touch no instance).

Usage::

    python tools/pretrain_demo.py \\
        --config configs/demo/mask-rcnn_convnext-demo_lite-fpn_shapes.py \\
        --out work_dirs/demo/pretrain/convnext-demo_shapes-cls.pth
"""
import argparse
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

# first: it sets how OpenMP threads wait before torch loads (convnext_backbone/openmp.py)
import convnext_backbone  # noqa: F401

# isort: split
import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convnext_backbone import ConvNeXt, cli, errors

SHAPES = ('circle', 'triangle', 'square', 'star')
STUFF = ('sky', 'grass', 'water', 'sand')
#: Crop classes of the pretraining task; index = class id.
CLASSES: Tuple[str, ...] = SHAPES + STUFF + ('background',)
# ImageNet mean/std (RGB), as in the demo configs' data preprocessors.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


class ConvNeXtClassifier(nn.Module):
    """ConvNeXt stages -> global average pool -> LayerNorm -> Linear, as the official classifier.

    Its ``state_dict`` has the official classification layout: the backbone's
    ``downsample_layers.*`` and ``stages.*`` plus ``norm.*`` and ``head.*``.

    Args:
        arch (str | dict): ConvNeXt arch name or ``dict(depths, dims)``.
        num_classes (int): Number of classes.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
    """

    def __init__(self, arch, num_classes: int, drop_path_rate: float = 0.) -> None:
        super().__init__()
        backbone = ConvNeXt(arch, out_indices=(3,), drop_path_rate=drop_path_rate)
        # The classifier normalises the pooled vector (``norm``), not the last feature map:
        # the dense-prediction output norm of stage 3 is not part of this model.
        backbone.norm3 = nn.Identity()
        self.backbone = backbone
        self.norm = nn.LayerNorm(backbone.dims[-1], eps=1e-6)
        self.head = nn.Linear(backbone.dims[-1], num_classes)
        nn.init.trunc_normal_(self.head.weight, std=.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, num_classes) logits."""
        feat = self.backbone(x)[-1]
        return self.head(self.norm(feat.mean(dim=(2, 3))))

    def official_state_dict(self) -> Dict[str, torch.Tensor]:
        """Weights under the official classification key names."""
        state = {k: v.detach().clone() for k, v in self.backbone.state_dict().items()}
        for name in ('norm', 'head'):
            for k, v in getattr(self, name).state_dict().items():
                state[f'{name}.{k}'] = v.detach().clone()
        return state


# -- crops -----------------------------------------------------------------------------------------
def _square(cx: float, cy: float, side: float, w: int, h: int) -> Tuple[int, int, int, int]:
    side = max(8, min(int(round(side)), w, h))
    x0 = int(round(min(max(cx - side / 2, 0), w - side)))
    y0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return x0, y0, x0 + side, y0 + side


def _resize(image: np.ndarray, box: Tuple[int, int, int, int], size: int) -> np.ndarray:
    x0, y0, x1, y1 = box
    return cv2.resize(image[y0:y1, x0:x1], (size, size), interpolation=cv2.INTER_AREA)


def coco_crops(root: str, split: str, size: int, rng: np.random.Generator,
               per_instance: int = 2) -> Tuple[List[np.ndarray], List[int]]:
    """Crops of a COCO-format demo split: around each instance, and object-free background.

    Args:
        root (str): Dataset root with ``annotations/instances_{split}.json`` and ``{split}/``.
        split (str): 'train' or 'val'.
        size (int): Output crop side.
        rng (np.random.Generator): Random stream for jitter.
        per_instance (int): Jittered crops per instance. Defaults to 2.

    Returns:
        tuple: List of (size, size, 3) uint8 RGB crops and their class ids in :data:`CLASSES`.
    """
    with open(os.path.join(root, 'annotations', f'instances_{split}.json'), encoding='utf-8') as f:
        coco = json.load(f)
    names = {c['id']: c['name'] for c in coco['categories']}
    by_image: Dict[int, list] = {}
    for ann in coco['annotations']:
        by_image.setdefault(ann['image_id'], []).append(ann)
    crops, labels = [], []
    for info in coco['images']:
        image = cv2.cvtColor(cv2.imread(os.path.join(root, split, info['file_name'])),
                             cv2.COLOR_BGR2RGB)
        h, w = image.shape[:2]
        anns = by_image.get(info['id'], [])
        for ann in anns:
            x, y, bw, bh = ann['bbox']
            for _ in range(per_instance):
                side = max(bw, bh) * rng.uniform(1.1, 1.6)
                cx = x + bw / 2 + rng.uniform(-0.1, 0.1) * side
                cy = y + bh / 2 + rng.uniform(-0.1, 0.1) * side
                crops.append(_resize(image, _square(cx, cy, side, w, h), size))
                labels.append(CLASSES.index(names[ann['category_id']]))
        boxes = np.array([a['bbox'] for a in anns], np.float32).reshape(-1, 4)
        for _ in range(per_instance * 2):  # background: patches that miss every box
            side = rng.uniform(0.15, 0.35) * min(w, h)
            box = _square(rng.uniform(0, w), rng.uniform(0, h), side, w, h)
            ix = np.minimum(box[2], boxes[:, 0] + boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
            iy = np.minimum(box[3], boxes[:, 1] + boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
            if ((ix > 0) & (iy > 0)).any():
                continue
            crops.append(_resize(image, box, size))
            labels.append(CLASSES.index('background'))
    return crops, labels


def ade_crops(root: str, split: str, size: int, rng: np.random.Generator,
              per_image: int = 6, purity: float = 0.7) -> Tuple[List[np.ndarray], List[int]]:
    """Patches of an ADE-layout demo split where one class covers >= ``purity`` of the pixels.

    Args:
        root (str): Dataset root with ``images/{split}`` and ``annotations/{split}``.
        split (str): 'training' or 'validation'.
        size (int): Output crop side.
        rng (np.random.Generator): Random stream.
        per_image (int): Patches tried per image. Defaults to 6.
        purity (float): Minimum fraction of the majority class. Defaults to 0.7.

    Returns:
        tuple: List of (size, size, 3) uint8 RGB crops and their class ids in :data:`CLASSES`.
    """
    seg_classes = STUFF + SHAPES  # label value v in the PNGs is seg_classes[v - 1]
    img_dir = os.path.join(root, 'images', split)
    crops, labels = [], []
    for name in sorted(os.listdir(img_dir)):
        image = cv2.cvtColor(cv2.imread(os.path.join(img_dir, name)), cv2.COLOR_BGR2RGB)
        label = cv2.imread(os.path.join(root, 'annotations', split,
                                        os.path.splitext(name)[0] + '.png'), cv2.IMREAD_GRAYSCALE)
        h, w = label.shape
        for _ in range(per_image):
            side = rng.uniform(0.12, 0.35) * min(w, h)
            x0, y0, x1, y1 = _square(rng.uniform(0, w), rng.uniform(0, h), side, w, h)
            counts = np.bincount(label[y0:y1, x0:x1].ravel(), minlength=len(seg_classes) + 1)
            best = int(counts[1:].argmax()) + 1
            if counts[best] < purity * counts.sum():
                continue
            crops.append(_resize(image, (x0, y0, x1, y1), size))
            labels.append(CLASSES.index(seg_classes[best - 1]))
    return crops, labels


def _to_tensor(crops: List[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()  # uint8 NCHW


def _normalise(batch: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (batch.float() - mean) / std


def _augment(batch: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(batch.shape[0], generator=gen) < 0.5
    batch = torch.where(flip.view(-1, 1, 1, 1), batch.flip(-1), batch)
    # brightness / contrast jitter, per sample
    scale = 1 + 0.2 * (torch.rand(batch.shape[0], 1, 1, 1, generator=gen) - 0.5)
    shift = 0.2 * (torch.rand(batch.shape[0], 1, 1, 1, generator=gen) - 0.5)
    return batch * scale + shift


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on uint8 ``images``."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        logits = model(_normalise(images[i:i + batch_size]))
        correct += int((logits.argmax(1) == labels[i:i + batch_size]).sum())
    model.train()
    return correct / max(1, len(images))


def _read_arch(config: str) -> dict:
    cfg = cli.read_config(config)
    arch = cfg.model.backbone.arch
    return arch.to_dict() if hasattr(arch, 'to_dict') else arch


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', help='take the backbone arch from this demo config')
    parser.add_argument('--arch', help="backbone arch as JSON, e.g. "
                        "'{\"depths\": [2, 2, 6, 2], \"dims\": [32, 64, 128, 256]}'")
    parser.add_argument('--coco', default='data/demo_coco', help='COCO-format demo dataset')
    parser.add_argument('--ade', default='data/demo_ade', help="ADE-layout demo dataset ('' "
                        'to skip)')
    parser.add_argument('--out', required=True, help='checkpoint file to write')
    parser.add_argument('--crop', type=int, default=48, help='crop side in px (>= 32)')
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--lr', type=float, default=2e-3)
    parser.add_argument('--weight-decay', type=float, default=0.05)
    parser.add_argument('--drop-path', type=float, default=0.05)
    parser.add_argument('--warmup', type=int, default=50)
    parser.add_argument('--threads', type=int, default=2, help='torch CPU threads')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--log-interval', type=int, default=50)
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> float:
    """Run the pretraining; returns the held-out crop accuracy."""
    args = parse_args(argv)
    if (args.config is None) == (args.arch is None):
        errors.fail('give exactly one of --config and --arch')
    if args.crop < 32:
        errors.fail(f'--crop {args.crop} is too small: ConvNeXt needs >= 32 px')
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    arch = _read_arch(args.config) if args.config else json.loads(args.arch)
    start = time.time()
    rng = np.random.default_rng(args.seed)
    sets = {}
    for split, (coco_split, ade_split) in {'train': ('train', 'training'),
                                           'val': ('val', 'validation')}.items():
        crops, labels = coco_crops(args.coco, coco_split, args.crop, rng)
        if args.ade:
            more, more_labels = ade_crops(args.ade, ade_split, args.crop, rng)
            crops += more
            labels += more_labels
        sets[split] = (_to_tensor(crops), torch.tensor(labels))
    images, labels = sets['train']
    counts = torch.bincount(labels, minlength=len(CLASSES)).tolist()
    print(f'[pretrain] {len(images)} train / {len(sets["val"][0])} val crops of {args.crop} px '
          f'in {time.time() - start:.1f} s; per class: '
          + ', '.join(f'{c} {n}' for c, n in zip(CLASSES, counts)), flush=True)

    model = ConvNeXtClassifier(arch, len(CLASSES), args.drop_path)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    no_decay = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.AdamW([dict(params=decay, weight_decay=args.weight_decay),
                                   dict(params=no_decay, weight_decay=0.)], lr=args.lr)

    def lr_at(it: int) -> float:  # linear warm-up, then cosine to 0
        if it < args.warmup:
            return args.lr * (it + 1) / args.warmup
        progress = (it - args.warmup) / max(1, args.iters - args.warmup)
        return args.lr * 0.5 * (1 + math.cos(math.pi * progress))

    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    for it in range(args.iters):
        for group in optimizer.param_groups:
            group['lr'] = lr_at(it)
        idx = torch.randint(len(images), (args.batch_size,), generator=gen)
        batch = _augment(_normalise(images[idx]), gen)
        loss = F.cross_entropy(model(batch), labels[idx], label_smoothing=0.1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (it + 1) % args.log_interval == 0 or it + 1 == args.iters:
            print(f'[pretrain] iter {it + 1}/{args.iters} loss {loss.item():.4f} '
                  f'lr {lr_at(it):.2e} {time.time() - start:.0f} s', flush=True)
    accuracy = evaluate(model, *sets['val'])
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(dict(model=model.official_state_dict(),
                    meta=dict(arch=dict(depths=list(model.backbone.depths),
                                        dims=list(model.backbone.dims)),
                              classes=list(CLASSES), crop=args.crop, iters=args.iters,
                              val_accuracy=accuracy)), args.out)
    print(f'[pretrain] held-out crop accuracy {accuracy:.3f}; wrote {args.out} '
          f'({time.time() - start:.0f} s)', flush=True)
    return accuracy


if __name__ == '__main__':
    main()
    sys.exit(0)
