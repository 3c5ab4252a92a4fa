"""Time the ConvNeXt backbone (and a detector or segmentor built from a config) on the CPU.

Usage::

    # backbone inference, fp32 and bf16 autocast, plain eval and after fuse()
    python tools/benchmark.py [--arch tiny] [--shape 800 1216] [--batch 1] [--threads 2]
    # the same, beside timm's and mmpretrain's ConvNeXt on the same weights and input
    python tools/benchmark.py --compare
    # training step (forward + backward of the four outputs) and with_cp peak memory
    python tools/benchmark.py --compare --train --train-shape 512 512 --train-batch 2 --memory
    # end-to-end inference of a detector / segmentor config (random weights)
    python tools/benchmark.py --config configs/mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py
    # check that torch.compile (inductor) works on the backbone and time it
    python tools/benchmark.py --compile --shape 512 512

How it measures:

- Every candidate runs once per round, candidates interleaved, for ``--warmup`` rounds that are
  thrown away and ``--repeat`` timed rounds; the table shows the median wall time of each, the
  best one (the least disturbed by other processes) and images/s from the median. Interleaving
  spreads the noise of a shared machine over all candidates alike.
- ``--compare`` builds timm's ConvNeXt (its ``stem`` and ``stages`` plus a timm ``LayerNorm2d`` on
  each stage output, the norms our backbone and the official detection code have) and mmpretrain's
  (``out_indices=(0, 1, 2, 3)``, ``gap_before_final_norm=False``: the same norms) when they are
  installed, gives them our weights (randomised layer scales, so every block counts) through the
  layout converter of ``convnext_backbone.checkpoint``, runs the same input and prints each one's
  relative error against our plain fp32 output (``||a - b|| / ||b||``, worst of the four maps) and
  the time ratios. The training step compares parameter gradients the same way.
- Peak memory (``--memory``): the most bytes of tensors alive at once during one training step,
  on top of what existed before it (weights, input), from the CPU allocator's allocation and free
  events recorded by ``torch.profiler`` (``profile_memory=True``): every event's own bytes
  (allocations minus frees), summed in time order. Gradients of the weights are included.

Note:
    timm and mmpretrain are optional, not dependencies. Both import torchvision, whose PyPI wheels
    do not load beside this project's CPU build of torch, so ``--compare`` runs in a separate
    environment (see the README performance section); everything else runs in the project's own.
"""
import argparse
import copy
import os
import os.path as osp
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from convnext_backbone import ConvNeXt, cli, convert_state_dict
from convnext_backbone.ops import mkldnn_linear_available

TIMM_NAMES = {'tiny': 'convnext_tiny', 'small': 'convnext_small', 'base': 'convnext_base',
              'large': 'convnext_large', 'xlarge': 'convnext_xlarge'}
Outputs = Sequence[torch.Tensor]


# -- the other implementations --------------------------------------------------------------------
class TimmFeatures(nn.Module):
    """timm's ConvNeXt stem and stages with a timm ``LayerNorm2d`` on each stage output.

    Args:
        arch (str): One of ``TIMM_NAMES``.
    """

    def __init__(self, arch: str) -> None:
        super().__init__()
        import timm
        from timm.layers import LayerNorm2d
        model = timm.create_model(TIMM_NAMES[arch], pretrained=False, num_classes=0)
        self.stem, self.stages = model.stem, model.stages
        for i, stage in enumerate(self.stages):
            self.add_module(f'norm{i}', LayerNorm2d(stage.blocks[0].conv_dw.in_channels, eps=1e-6))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """(N, 3, H, W) -> the four normed stage maps, NCHW."""
        x = self.stem(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            outs.append(getattr(self, f'norm{i}')(x))
        return tuple(outs)


def build_timm(arch: str) -> Optional[nn.Module]:
    """timm's ConvNeXt features, or None when timm is not installed or lacks the arch."""
    try:
        return TimmFeatures(arch)
    except (ImportError, KeyError, RuntimeError) as err:
        print(f'# timm skipped: {type(err).__name__}: {err}')
        return None


def build_mmpretrain(arch: str, with_cp: bool = False) -> Optional[nn.Module]:
    """mmpretrain's ConvNeXt with norm0..3, or None when mmpretrain is not installed."""
    try:
        from mmpretrain.models.backbones import ConvNeXt as MMPretrainConvNeXt
        return MMPretrainConvNeXt(arch=arch, out_indices=(0, 1, 2, 3), gap_before_final_norm=False,
                                  layer_scale_init_value=1.0, with_cp=with_cp)
    except (ImportError, KeyError, AssertionError, RuntimeError) as err:
        print(f'# mmpretrain skipped: {type(err).__name__}: {err}')
        return None


def key_map(other: nn.Module) -> Dict[str, str]:
    """Map each state-dict key of another ConvNeXt implementation to our name for it, using the
    package's layout converter (it keeps the order of the keys it renames)."""
    keys = list(other.state_dict())
    converted = convert_state_dict(other.state_dict())
    if converted.unused or len(converted.state_dict) != len(keys):
        raise RuntimeError(f'{type(other).__name__}: keys the converter does not map: '
                           f'{converted.unused[:5]}')
    return dict(zip(keys, converted.state_dict))


def load_our_weights(other: nn.Module, ours: nn.Module) -> Dict[str, str]:
    """Load ``ours``' weights into ``other`` (strictly); returns the key map."""
    mapping = key_map(other)
    src, dst = ours.state_dict(), other.state_dict()
    other.load_state_dict({k: src[mapping[k]].reshape(dst[k].shape) for k in dst}, strict=True)
    return mapping


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random layer scales, norm weights and biases (initialisation leaves them 1e-6, 1 and 0,
    which would hide a wrong mapping or a skipped block)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('gamma'):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
            elif p.dim() == 1:
                base = 1.0 if name.endswith('weight') and 'norm' in name else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
    return model


# -- measuring ------------------------------------------------------------------------------------
def interleaved(fns: Dict[Any, Callable[[], object]], warmup: int,
                repeat: int) -> Tuple[Dict[Any, float], Dict[Any, float]]:
    """Median and best wall time in seconds of each function, run in interleaved rounds."""
    times: Dict[Any, List[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return ({name: statistics.median(ts) for name, ts in times.items()},
            {name: min(ts) for name, ts in times.items()})


def rel_err(outs: Outputs, refs: Outputs) -> float:
    """Worst relative error ``||a - b|| / ||b||`` over the output maps."""
    return max(((a.float() - b.float()).norm() / b.float().norm()).item()
               for a, b in zip(outs, refs))


def autocast(dtype: str):
    """The context of a precision: nothing for fp32, CPU autocast for bf16."""
    return torch.autocast('cpu', torch.bfloat16) if dtype == 'bf16' else nullcontext()


def peak_memory(fn: Callable[[], object]) -> int:
    """Most bytes of tensors alive at once while ``fn`` runs, beyond those alive before it.

    From torch.profiler's memory events: each event's own allocations minus frees, summed in
    the order the events started (the CPU allocator reports every tensor allocation and free).
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage)
    alive = peak = 0
    for _, nbytes in events:
        alive += nbytes
        peak = max(peak, alive)
    return peak


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    print(f'\n### {title}\n')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')


# -- backbone inference ---------------------------------------------------------------------------
def bench_inference(args: argparse.Namespace) -> bool:
    """Time plain and fused inference (and the others with --compare). Returns False when an
    fp32 output disagrees by 1e-4 or more."""
    torch.manual_seed(0)
    ours = randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).eval()
    fused = copy.deepcopy(ours).fuse()
    models: Dict[str, nn.Module] = {'ours': ours, 'ours fused': fused}
    if args.compare:
        for name, build in (('timm', build_timm), ('mmpretrain', build_mmpretrain)):
            other = build(args.arch)
            if other is not None:
                load_our_weights(other, ours)
                other.eval()  # mmpretrain's train() returns None
                models[name] = other
    x = torch.randn(args.batch, 3, *args.shape)

    def run(model: nn.Module, dtype: str) -> Outputs:
        with autocast(dtype):
            return model(x)

    # Every (precision, model) pair in each round, so that fp32 and bf16 see the same noise.
    pairs = [(dtype, name) for dtype in args.dtypes for name in models]
    with torch.no_grad():
        reference = ours(x)
        errors = {(d, n): rel_err(run(models[n], d), reference) for d, n in pairs}
        medians, best = interleaved({(d, n): (lambda d=d, n=n: run(models[n], d))
                                     for d, n in pairs}, args.warmup, args.repeat)
    ok = all(err < 1e-4 for (dtype, _), err in errors.items() if dtype == 'fp32')
    rows = [[d, n, f'{medians[d, n]:.3f}', f'{best[d, n]:.3f}', f'{args.batch / medians[d, n]:.2f}',
             f'{errors[d, n]:.1e}', f'{medians[d, "ours"] / medians[d, n]:.2f}x',
             f'{medians[d, "ours fused"] / medians[d, n]:.2f}x'] for d, n in pairs]
    speedups = []
    if set(args.dtypes) == {'fp32', 'bf16'}:
        speedups = [[name, f'{medians["fp32", name] / medians["bf16", name]:.2f}x',
                     f'{medians["fp32", "ours"] / medians["bf16", name]:.2f}x',
                     f'{medians["fp32", "ours fused"] / medians["bf16", name]:.2f}x']
                    for name in models]
    print_table(f'Backbone inference, ConvNeXt-{args.arch}, {args.batch}x3x{args.shape[0]}x'
                f'{args.shape[1]}, {torch.get_num_threads()} threads, median of {args.repeat}',
                ['precision', 'model', 'median s', 'best s', 'images/s', 'rel. err vs ours fp32',
                 'speed vs ours', 'speed vs ours fused'], rows)
    if speedups:
        print_table('bf16 autocast speed-up (median fp32 time / median bf16 time)',
                    ['model', 'over its own fp32', 'over ours fp32', 'over ours fused fp32'],
                    speedups)
    return ok


# -- training -------------------------------------------------------------------------------------
def bench_training(args: argparse.Namespace) -> bool:
    """Time one training step (forward + backward of the four outputs) and compare gradients;
    with --memory also the peak memory with and without with_cp."""
    torch.manual_seed(0)
    ours = randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).train()
    models: Dict[str, nn.Module] = {'ours': ours}
    maps: Dict[str, Dict[str, str]] = {'ours': {k: k for k in ours.state_dict()}}
    if args.compare:
        for name, build in (('timm', build_timm), ('mmpretrain', build_mmpretrain)):
            other = build(args.arch)
            if other is not None:
                maps[name] = load_our_weights(other, ours)
                other.train()
                models[name] = other
    x = torch.randn(args.train_batch, 3, *args.train_shape)
    with torch.no_grad():
        weights = [torch.randn_like(o.contiguous()) for o in ours(x)]

    def step(model: nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        outs = model(x)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()

    def grads(name: str) -> Dict[str, torch.Tensor]:
        step(models[name])
        return {maps[name][n]: p.grad.detach().clone()
                for n, p in models[name].named_parameters()}

    ref = grads('ours')
    errors = {}
    for name in models:
        got = grads(name)
        errors[name] = max(((got[k].reshape(v.shape) - v).norm() / v.norm()).item()
                           for k, v in ref.items())
    medians, best = interleaved({name: (lambda m=m: step(m)) for name, m in models.items()},
                                args.warmup, args.repeat)
    rows = [[name, f'{sec:.3f}', f'{best[name]:.3f}', f'{args.train_batch / sec:.2f}',
             f'{errors[name]:.1e}',
             f'{medians["ours"] / sec:.2f}x'] for name, sec in medians.items()]
    print_table(f'Training step (fp32, forward + backward), ConvNeXt-{args.arch}, '
                f'{args.train_batch}x3x{args.train_shape[0]}x{args.train_shape[1]}, median of '
                f'{args.repeat}', ['model', 'median s', 'best s', 'images/s',
                                   'max rel. err of weight grads vs ours', 'speed vs ours'], rows)
    ok = all(err < 1e-4 for err in errors.values())
    if args.memory:
        ok = bench_memory(args, ours, x, weights) and ok
    return ok


def bench_memory(args: argparse.Namespace, ours: nn.Module, x: torch.Tensor,
                 weights: List[torch.Tensor]) -> bool:
    """Peak training memory with and without with_cp, and whether their gradients agree."""
    results = {}
    for with_cp in (False, True):
        model = ConvNeXt(args.arch, layer_scale_init_value=1.0, with_cp=with_cp).train()
        model.load_state_dict(ours.state_dict())

        def step(model: nn.Module = model) -> None:
            model.zero_grad(set_to_none=True)
            outs = model(x)
            sum((o * w).sum() for o, w in zip(outs, weights)).backward()

        step()  # warm-up outside the measurement
        results[with_cp] = (peak_memory(step),
                            {n: p.grad.clone() for n, p in model.named_parameters()})
    (plain, g_plain), (cp, g_cp) = results[False], results[True]
    err = max(((g_cp[k] - v).norm() / v.norm()).item() for k, v in g_plain.items())
    print_table(f'Peak training memory, ConvNeXt-{args.arch}, {args.train_batch}x3x'
                f'{args.train_shape[0]}x{args.train_shape[1]} (tensors alive beyond weights and '
                'input, CPU allocator events)',
                ['with_cp', 'peak MiB', 'vs without', 'max rel. err of weight grads'],
                [['False', f'{plain / 2**20:.0f}', '100%', ''],
                 ['True', f'{cp / 2**20:.0f}', f'{100 * cp / plain:.0f}%', f'{err:.1e}']])
    return err < 1e-4


# -- torch.compile --------------------------------------------------------------------------------
def bench_compile(args: argparse.Namespace) -> bool:
    """Compile the backbone with inductor, check it against eager and time both."""
    torch.manual_seed(0)
    ours = randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).eval()
    compiled = torch.compile(ours, backend='inductor')
    x = torch.randn(args.batch, 3, *args.shape)
    rows = []
    ok = True
    with torch.no_grad():
        reference = ours(x)
        for dtype in args.dtypes:
            with autocast(dtype):
                start = time.perf_counter()
                err = rel_err(compiled(x), reference)
                first = time.perf_counter() - start
                eager = rel_err(ours(x), reference)
                medians, _ = interleaved(
                    {'eager': lambda: ours(x), 'compiled': lambda: compiled(x)},
                    args.warmup, args.repeat)
            ok = ok and (err < 1e-4 if dtype == 'fp32' else err < 3 * eager + 1e-2)
            rows.append([dtype, f'{first:.1f}', f'{medians["eager"]:.3f}',
                         f'{medians["compiled"]:.3f}', f'{err:.1e}'])
    print_table(f'torch.compile (inductor), ConvNeXt-{args.arch}, {args.batch}x3x{args.shape[0]}x'
                f'{args.shape[1]}', ['precision', 'first call s (compile)', 'eager s',
                                     'compiled s', 'rel. err vs eager fp32'], rows)
    return ok


class AutocastBackbone(nn.Module):
    """Runs a backbone under CPU bf16 autocast (mmcv's CPU NMS takes float32 boxes only, so the
    heads and post-processing stay in float32).

    Args:
        backbone (nn.Module): The wrapped backbone.
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Image batch -> the backbone's outputs, computed under bf16 autocast."""
        with torch.autocast('cpu', torch.bfloat16):
            return self.backbone(x)


# -- detector / segmentor -------------------------------------------------------------------------
def bench_config(args: argparse.Namespace) -> bool:
    """End-to-end inference (``model.test_step``: preprocessing, backbone, neck, heads,
    post-processing) of a config's model with random weights on one synthetic image."""
    cfg = cli.read_config(args.config)
    scope = cfg.get('default_scope')
    torch.manual_seed(0)
    model = cli.build_model(cfg)
    fused = copy.deepcopy(model)
    if hasattr(fused.backbone, 'fuse'):
        fused.backbone.fuse()
    h, w = args.shape
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.), pad_shape=(h, w))
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    else:
        from mmdet.structures import DetDataSample as Sample

    def run(m: nn.Module) -> None:
        m.test_step(dict(inputs=[image], data_samples=[Sample(metainfo=meta)]))

    models = {('fp32', 'plain'): model, ('fp32', 'fused'): fused}
    if 'bf16' in args.dtypes:
        for name in ('plain', 'fused'):
            wrapped = copy.deepcopy(models['fp32', name])
            wrapped.backbone = AutocastBackbone(wrapped.backbone)
            models['bf16 backbone', name] = wrapped
    models = {k: m for k, m in models.items() if k[0].split()[0] in args.dtypes}
    with torch.no_grad():
        medians, best = interleaved({k: (lambda m=m: run(m)) for k, m in models.items()},
                                    args.warmup, args.repeat)
    rows = [[dtype, name, f'{sec:.3f}', f'{best[dtype, name]:.3f}', f'{1 / sec:.2f}']
            for (dtype, name), sec in medians.items()]
    print_table(f'End-to-end inference ({type(model).__name__}, test_step), '
                f'{osp.basename(args.config)}, 1x3x{h}x{w}, random weights, '
                f'median of {args.repeat}',
                ['precision', 'backbone', 'median s', 'best s', 'images/s'], rows)
    return True


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='tiny', help="backbone arch (default 'tiny')")
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='inference input size (default 800 1216; a config: 800 1216 for '
                             'mmdet, 512 512 for mmseg)')
    parser.add_argument('--batch', type=int, default=1, help='inference batch (default 1)')
    parser.add_argument('--dtypes', nargs='+', choices=('fp32', 'bf16'), default=['fp32', 'bf16'],
                        help='precisions to time (default fp32 bf16; bf16 = CPU autocast)')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds (default 2)')
    parser.add_argument('--repeat', type=int, default=7, help='timed rounds (default 7)')
    parser.add_argument('--compare', action='store_true',
                        help="also time timm's and mmpretrain's ConvNeXt (when installed)")
    parser.add_argument('--no-inference', action='store_true', help='skip backbone inference')
    parser.add_argument('--train', action='store_true', help='time a training step')
    parser.add_argument('--train-shape', type=int, nargs=2, metavar=('H', 'W'),
                        default=[512, 512], help='training input size (default 512 512)')
    parser.add_argument('--train-batch', type=int, default=2, help='training batch (default 2)')
    parser.add_argument('--memory', action='store_true',
                        help='with --train: peak memory with and without with_cp')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile (inductor) the backbone: check and time it')
    parser.add_argument('--config', help='a detector/segmentor config: time its test_step')
    args = parser.parse_args(argv)
    if args.arch not in TIMM_NAMES and args.compare:
        parser.error(f'--compare supports the V1 archs {sorted(TIMM_NAMES)}, got {args.arch!r}')
    if args.shape is None:
        scope_is_seg = bool(args.config) and 'upernet' in osp.basename(args.config)
        args.shape = [512, 512] if scope_is_seg else [800, 1216]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN fused Linear: '
          f'fp32 {mkldnn_linear_available(torch.float32)}, '
          f'bf16 {mkldnn_linear_available(torch.bfloat16)}, THP_MEM_ALLOC_ENABLE='
          f'{os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")}')
    ok = True
    if args.config:
        ok = bench_config(args)
    elif args.compile:
        ok = bench_compile(args)
    else:
        if not args.no_inference:
            ok = bench_inference(args)
        if args.train:
            ok = bench_training(args) and ok
    if not ok:
        print('\nFAILED: an output or gradient disagrees beyond the tolerance (see the tables)')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
