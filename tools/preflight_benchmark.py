"""Time and peak memory of building a COCO-sized training dataloader, with and without our checks.

Usage::

    python tools/preflight_benchmark.py [--images 118287] [--instances 860001] [--repeat 3]
        [--data data/preflight]

Writes (once; reused later) a COCO instances file of train2017's size (118,287 images, 860,001
instances with polygon masks and COCO's 80 categories, about as many bytes as
``instances_train2017.json``) and every image it lists (one small JPEG, hard-linked under each
name, so that the check of every image file runs as on real data), then builds the same
``CocoDataset`` dataloader in fresh processes, interleaved, ``--repeat`` times each:

- ``mmengine Runner``: mmengine's ``Runner.build_dataloader`` (mmdet parses the file);
- ``ResumableRunner``: ours, with the dataset checks of ``convnext_backbone.engine.preflight``;
- ``+ json.load``: mmengine's build after a separate ``json.load`` of the file, i.e. what a check
  that parses the file itself (as our first round's did) costs on top.

Prints the median wall time and CPU time (user + system, less sensitive to other processes on a
shared machine) of the build and the median peak resident memory of the process (``ru_maxrss``)
per variant, with the CPU model; for ``ResumableRunner`` also the CPU time of the two parts of its
image check (reading back every image's record from the dataset, and the ``stat`` and tail read
of every image), timed apart after the build. The timed span starts after the Runner is
constructed.
"""
import argparse
import json
import os
import os.path as osp
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import numpy as np

VARIANTS = {'mmengine Runner': 'plain', 'ResumableRunner': 'ours', '+ json.load': 'json'}

def write_data(folder: str, images: int, instances: int, seed: int = 0) -> str:
    """Write ``annotations/instances_big.json`` and its images; returns the root."""
    ann = osp.join(folder, 'annotations', 'instances_big.json')
    if osp.isfile(ann):
        write_images(folder, images)
        return folder
    from mmdet.datasets import CocoDataset
    os.makedirs(osp.join(folder, 'annotations'), exist_ok=True)
    os.makedirs(osp.join(folder, 'train'), exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = CocoDataset.METAINFO['classes']
    categories = [dict(id=i + 1, name=name, supercategory='thing')
                  for i, name in enumerate(classes)]
    width, height = 640, 480
    per_image = np.bincount(rng.integers(0, images, instances), minlength=images)
    tmp = ann + '.partial'
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write('{"info": {"description": "synthetic COCO-sized file"}, "images": [')
        f.write(', '.join(json.dumps(dict(id=i + 1, file_name=f'{i + 1:012d}.jpg', width=width,
                                          height=height)) for i in range(images)))
        f.write('], "annotations": [')
        ann_id = 0
        for image_id, count in enumerate(per_image, start=1):
            for _ in range(count):
                ann_id += 1
                w, h = rng.uniform(8, 200, 2)
                x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
                points = rng.integers(8, 40)
                angles = np.sort(rng.uniform(0, 2 * np.pi, points))
                poly = np.stack([x + w / 2 * (1 + np.cos(angles)),
                                 y + h / 2 * (1 + np.sin(angles))], 1).round(2).ravel()
                record = dict(segmentation=[poly.tolist()], area=round(float(w * h * 0.7), 2),
                              iscrowd=0, image_id=image_id,
                              bbox=[round(float(v), 2) for v in (x, y, w, h)],
                              category_id=int(rng.integers(1, 81)), id=ann_id)
                f.write(('' if ann_id == 1 else ', ') + json.dumps(record))
        f.write('], "categories": ' + json.dumps(categories) + '}')
    os.replace(tmp, ann)
    write_images(folder, images)
    return folder


def write_images(folder: str, images: int) -> None:
    """One 640x480 JPEG as ``train/000000000001.jpg`` and a hard link of it under every other
    image name of the file (a copy where links are not possible).

    Note:
        Every name is the same inode, so after the first read its last bytes are in the page
        cache; on real images with a cold cache each of the check's tail reads is a disk read.
    """
    import shutil

    import cv2
    first = osp.join(folder, 'train', f'{1:012d}.jpg')
    if not osp.isfile(first):
        cv2.imwrite(first, np.zeros((480, 640, 3), np.uint8))
    for i in range(2, images + 1):
        path = osp.join(folder, 'train', f'{i:012d}.jpg')
        if osp.exists(path):
            continue
        try:
            os.link(first, path)
        except OSError:
            shutil.copyfile(first, path)


def run_child(variant: str, root: str) -> Dict[str, float]:
    """Build the dataloader once in a fresh process; its wall time and peak RSS."""
    code = f'''
import json, sys, time
import torch
from mmengine.runner import Runner
from convnext_backbone.engine import ResumableRunner
root, variant = {root!r}, {variant!r}
loader = dict(batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
              dataset=dict(type='CocoDataset', data_root=root,
                           ann_file='annotations/instances_big.json',
                           data_prefix=dict(img='train/'), pipeline=[],
                           filter_cfg=dict(filter_empty_gt=True, min_size=32)))
runner_cls = ResumableRunner if variant == 'ours' else Runner
runner = runner_cls(model=torch.nn.Linear(1, 1), work_dir=root + '/work',
                    default_scope='mmdet', train_dataloader=loader,
                    train_cfg=dict(by_epoch=False, max_iters=1),
                    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.1)),
                    log_level='WARNING')
start, cpu_start = time.perf_counter(), time.process_time()
if variant == 'json':
    with open(root + '/annotations/instances_big.json') as f:
        json.load(f)
built = runner.build_dataloader(runner._train_dataloader)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
import resource
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB -> GiB
result = dict(seconds=seconds, cpu=cpu, peak_gib=peak, images=len(built.dataset))
if variant == 'ours':  # the two parts of the image check, timed apart after the build
    from convnext_backbone.engine.preflight import images, walk
    start = time.process_time()
    infos = walk.all_infos(built.dataset)
    result['infos_cpu'] = time.process_time() - start
    start = time.process_time()
    images.check_files([i['img_path'] for i in infos], 'train', 'listed', root, 'prefix', False)
    result['files_cpu'] = time.process_time() - start
print(json.dumps(result))
'''
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f'{variant} failed:\n{proc.stderr[-3000:]}')
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu_model() -> str:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
        for line in f:
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    return 'unknown CPU'


def main(argv: List[str] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=118287)
    parser.add_argument('--instances', type=int, default=860001)
    parser.add_argument('--repeat', type=int, default=3)
    parser.add_argument('--data', default='data/preflight')
    args = parser.parse_args(argv)
    start = time.time()
    root = write_data(os.path.abspath(args.data), args.images, args.instances)
    size = osp.getsize(osp.join(root, 'annotations', 'instances_big.json'))
    print(f'{args.images} images, {args.instances} instances: {size / 2 ** 20:.0f} MiB '
          f'(written in {time.time() - start:.0f} s, or reused)')
    results: Dict[str, List[Dict[str, float]]] = {name: [] for name in VARIANTS}
    for _ in range(args.repeat):
        for name, variant in VARIANTS.items():
            results[name].append(run_child(variant, root))
    print(f'CPU: {cpu_model()}, {os.cpu_count()} cores; median of {args.repeat} fresh processes')
    print(f'| {"dataloader build":<16} | {"s":>6} | {"CPU s":>6} | {"peak RSS GiB":>12} |')
    print(f'|{"-" * 18}|{"-" * 8}|{"-" * 8}|{"-" * 14}|')
    for name, runs in results.items():
        seconds = statistics.median(r['seconds'] for r in runs)
        cpu = statistics.median(r['cpu'] for r in runs)
        peak = statistics.median(r['peak_gib'] for r in runs)
        print(f'| {name:<16} | {seconds:>6.1f} | {cpu:>6.1f} | {peak:>12.2f} |')
    ours = results['ResumableRunner']
    print(f"ResumableRunner's image check, timed apart (CPU s): reading back the "
          f"{ours[0]['images']} records {statistics.median(r['infos_cpu'] for r in ours):.1f}, "
          f"stat + tail read of each image {statistics.median(r['files_cpu'] for r in ours):.1f}")


if __name__ == '__main__':
    main()
