"""``--e2e``: whole models, our config beside the peer library's own ConvNeXt config with the same
weights (and mmdet's Swin-T Mask R-CNN beside ours), test step and with ``--train`` training
step, times per part."""
import argparse
import copy
import os.path as osp
import statistics
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from convnext_backbone import cli

from .common import all_ok, autocast, device, interleaved, on_device, print_table, randomise_
from .models import PARTS, PartTimes, bf16_model, build_random, prepare_inference, synthetic_batch
from .peers import import_mmpretrain, key_map

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: task -> (our config, the peer library's own ConvNeXt-T config, test image (H, W)).
E2E = {'seg': ('configs/upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py',
               'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py', (512, 683)),
       'det': ('configs/mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py',
               'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
               (800, 1216))}
#: task -> (label, config) of other detectors timed beside ours (random weights, fp32): mmdet's
#: Swin-T Mask R-CNN, which Table 3 of the paper compares ConvNeXt-T with.
E2E_OTHERS = {'det': (
    ('mmdet Swin-T', 'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_amp-ms-crop-3x_coco.py'),)}


def build_pair(task: str) -> Tuple[nn.Module, Optional[nn.Module], str]:
    """Our config's model and the peer config's (None without mmpretrain), same weights.

    Args:
        task (str): A key of :data:`E2E`.

    Returns:
        tuple: Our model, the peer's (or None) and our config's ``default_scope``.
    """
    ours_cfg, peer_cfg, _ = E2E[task]
    cfg = cli.read_config(osp.join(ROOT, ours_cfg))
    torch.manual_seed(0)
    ours = cli.build_model(cfg)
    randomise_(ours)
    peer = None
    if import_mmpretrain():
        peer = build_random(peer_cfg)  # its weights are replaced by ours below
        mapping = key_map(peer.backbone)
        src = ours.state_dict()
        state = {}
        for key, value in peer.state_dict().items():
            name = (f'backbone.{mapping[key[len("backbone."):]]}' if key.startswith('backbone.')
                    else key)
            state[key] = src[name].reshape(value.shape)
        peer.load_state_dict(state, strict=True)
        peer.eval()
    return ours, peer, cfg.get('default_scope')


def bench_e2e(args: argparse.Namespace) -> bool:
    """Whole-model test step (and training step with --train): our config beside the peer
    library's own ConvNeXt config, same weights, one process; times per part.

    Args:
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: False when a test output disagrees by 1e-4 or more.
    """
    return all_ok(args.e2e, lambda task: bench_e2e_test(task, args))


def bench_e2e_test(task: str, args: argparse.Namespace) -> bool:
    """One task of :func:`bench_e2e`.

    Args:
        task (str): A key of :data:`E2E`.
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: False when a test output disagrees by 1e-4 or more.
    """
    ours, peer, scope = build_pair(task)
    shape = args.shape or E2E[task][2]
    models: Dict[str, nn.Module] = {'ours': ours,
                                    'ours prepared': prepare_inference(copy.deepcopy(ours))}
    if peer is not None:
        models['peer'] = peer
    # (the reduced-precision copies are made before PartTimes wraps the parts' methods)
    dtypes = {name: 'fp32' for name in models}
    for dtype in (d for d in args.dtypes if d != 'fp32'):
        models[f'ours prepared {dtype}'] = bf16_model(models['ours prepared'])
        dtypes[f'ours prepared {dtype}'] = dtype
        if peer is not None:
            models[f'peer {dtype}'] = bf16_model(peer)
            dtypes[f'peer {dtype}'] = dtype
    others = {label: build_random(config) for label, config in E2E_OTHERS.get(task, ())}
    models.update(others)
    dtypes.update({label: 'fp32' for label in others})
    models = {name: on_device(m) for name, m in models.items()}
    parts = {name: PartTimes(m) for name, m in models.items()}
    batch = synthetic_batch(scope, shape, 1, train=False)

    def test_step(name: str) -> Any:
        parts[name].last = {}
        with autocast(dtypes[name]):
            return models[name].test_step(batch)

    with torch.no_grad():
        outs = {name: test_step(name) for name in models}
        errors = {name: e2e_error(out, outs['ours']) for name, out in outs.items()
                  if name not in others}
        times: Dict[str, List[Dict[str, float]]] = {name: [] for name in models}

        def run(name: str) -> None:
            start = time.perf_counter()
            test_step(name)
            times[name].append(dict(parts[name].last, total=time.perf_counter() - start))

        medians, _ = interleaved({name: (lambda n=name: run(n)) for name in models},
                                 args.warmup, args.repeat)
    print_e2e(f'{task}: test_step, 1x3x{shape[0]}x{shape[1]}, {device()}', models, times,
              medians, errors, args)
    for label in others:
        ratio = medians[label] / medians['ours prepared']

        def features(name: str) -> float:
            kept = times[name][args.warmup:] or times[name]
            return statistics.median(t.get('backbone', 0.) + t.get('neck', 0.) for t in kept)
        print(f'{task}: ours prepared (ConvNeXt-T) is {ratio:.2f}x {label} in fp32, '
              f'{features(label) / features("ours prepared"):.2f}x in backbone + neck (Table 3 of '
              'the paper, A100: 25.6 / 23.1 FPS = 1.11x; with random weights the heads\' time '
              'depends on how many boxes each model proposes)')
    for name, dtype in dtypes.items():
        if dtype != 'fp32':
            base = name[:-len(dtype) - 1]
            print(f'{task}: {base} under {dtype} autocast is {medians[base] / medians[name]:.2f}x '
                  f'its fp32 test step')
    if args.train:
        bench_e2e_train(task, scope, ours, peer, args)
    return all(err < 1e-4 for name, err in errors.items() if dtypes[name] == 'fp32')


def e2e_error(out: Any, ref: Any) -> float:
    """Relative error of segmentation logits, or of detection boxes and scores.

    Args:
        out (list): A test step's data samples.
        ref (list): The reference test step's.

    Returns:
        float: The largest relative error (inf for another number of boxes).
    """
    a, b = out[0], ref[0]
    if hasattr(b, 'seg_logits'):
        pairs = [(a.seg_logits.data, b.seg_logits.data)]
    else:
        pairs = [(a.pred_instances.bboxes, b.pred_instances.bboxes),
                 (a.pred_instances.scores, b.pred_instances.scores)]
    if any(x.shape != y.shape for x, y in pairs):
        return float('inf')  # another number of boxes: printed as such
    return max(((x.float() - y.float()).norm() / y.float().norm().clamp_min(1e-12)).item()
               for x, y in pairs)


def print_e2e(title: str, models: Dict[str, nn.Module], times: Dict[str, List[Dict[str, float]]],
              medians: Dict[str, float], errors: Optional[Dict[str, float]],
              args: argparse.Namespace) -> None:
    """One row per model: median total, median per part, rel. error, ratios.

    Args:
        title (str): The table's title (the thread count and rounds are added).
        models (dict): The models, by name (row order).
        times (dict): Each model's runs: seconds per part and 'total'.
        medians (dict): Each model's median total seconds.
        errors (dict, optional): Each model's relative error vs ours (None: not shown).
        args (argparse.Namespace): The benchmark's options (``warmup``, ``repeat``).
    """
    names = [p for p in PARTS if any(p in t for ts in times.values() for t in ts)]
    rows = []
    for name in models:
        kept = times[name][args.warmup:] or times[name]
        part = {p: statistics.median(t.get(p, 0.) for t in kept) for p in names}
        rest = medians[name] - sum(part.values())
        ratio = (f'{medians["peer"] / medians[name]:.2f}x' if 'peer' in medians else '')
        err = (errors or {}).get(name)
        err_text = ('' if err is None else 'other box count' if err == float('inf')
                    else f'{err:.1e}')
        rows.append([name, f'{medians[name]:.3f}'] + [f'{part[p]:.3f}' for p in names]
                    + [f'{rest:.3f}', err_text, ratio])
    print_table(f'{title}, {torch.get_num_threads()} threads, median of {args.repeat} (parts: '
                'median seconds inside each)', ['model', 'total s'] + [f'{p} s' for p in names]
                + ['rest s', 'rel. err vs ours', 'speed vs peer config'], rows)


def bench_e2e_train(task: str, scope: str, ours: nn.Module, peer: Optional[nn.Module],
                    args: argparse.Namespace) -> None:
    """One training step (forward with losses + backward) of each model, same batch.

    Args:
        task (str): A key of :data:`E2E`.
        scope (str): Our config's ``default_scope``.
        ours (nn.Module): Our model.
        peer (nn.Module, optional): The peer config's model (None: ours alone).
        args (argparse.Namespace): The benchmark's options.
    """
    models = {'ours': ours} if peer is None else {'ours': ours, 'peer': peer}
    models = {name: on_device(m) for name, m in models.items()}
    parts = {name: PartTimes(m) for name, m in models.items()}
    batch = synthetic_batch(scope, args.train_shape, args.train_batch, train=True)
    times: Dict[str, List[Dict[str, float]]] = {name: [] for name in models}

    def step(name: str) -> None:
        model = models[name].train()
        model.zero_grad(set_to_none=True)
        parts[name].last = {}
        start = time.perf_counter()
        data = model.data_preprocessor(batch, True)
        loss, _ = model.parse_losses(model(**data, mode='loss'))
        loss.backward()
        times[name].append(dict(parts[name].last, total=time.perf_counter() - start))

    medians, _ = interleaved({name: (lambda n=name: step(n)) for name in models},
                             args.warmup, args.repeat)
    print_e2e(f'{task}: training step (forward + backward; parts: forward with losses), '
              f'{args.train_batch}x3x{args.train_shape[0]}x{args.train_shape[1]}', models, times,
              medians, None, args)
