"""Time the ConvNeXt backbone (and a detector or segmentor built from a config) on the CPU.

Usage::

    # backbone inference, fp32 and bf16 autocast, with the fast paths and with the plain ops
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

- Every candidate runs once per round, candidates interleaved (each round starting one candidate
  later, so each runs in every position alike), for ``--warmup`` rounds that are
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
import functools
import os
import os.path as osp
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from convnext_backbone import ConvNeXt, cli, convert_state_dict, machine, ops, precision, tuning
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
#: The device of this run (``--device``). CUDA work is asynchronous: each timed call is bracketed
#: by :func:`sync`, so the wall time is the device's.
DEVICE = torch.device('cpu')
#: Autocast dtypes by precision name.
AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}


def sync() -> None:
    """Wait for the device (CUDA) to finish what was queued; nothing on the CPU."""
    if DEVICE.type == 'cuda':
        torch.cuda.synchronize(DEVICE)


def interleaved(fns: Dict[Any, Callable[[], object]], warmup: int,
                repeat: int) -> Tuple[Dict[Any, float], Dict[Any, float]]:
    """Median and best wall time in seconds of each function, run in interleaved rounds.

    Each round starts one function later than the one before, so that every function runs in
    every position of a round equally often (whatever the one before it leaves behind, e.g.
    freed memory to fault in again, is spread over all of them)."""
    times: Dict[Any, List[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(warmup + repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return ({name: statistics.median(ts) for name, ts in times.items()},
            {name: min(ts) for name, ts in times.items()})


def rel_err(outs: Outputs, refs: Outputs) -> float:
    """Worst relative error ``||a - b|| / ||b||`` over the output maps."""
    return max(((a.float() - b.float()).norm() / b.float().norm()).item()
               for a, b in zip(outs, refs))


def autocast(dtype: str):
    """The context of a precision on :data:`DEVICE`: nothing for fp32, autocast for bf16 / fp16."""
    if dtype == 'fp32':
        return nullcontext()
    return torch.autocast(DEVICE.type, AUTOCAST_DTYPES[dtype])


def on_device(module_or_tensor: Any, channels_last: bool = False) -> Any:
    """``module_or_tensor`` on :data:`DEVICE`, in channels-last memory format if asked."""
    moved = module_or_tensor.to(DEVICE)
    return moved.to(memory_format=torch.channels_last) if channels_last else moved


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


# -- an earlier checkout, side by side -------------------------------------------------------------
#: The worker of :class:`EarlierCheckout`: builds the backbone of the checkout on its PYTHONPATH
#: with the given weights and runs it on request ("run|save DTYPE [PATH]" lines on stdin).
_WORKER = r"""
import os
import sys
# the protocol keeps the original stdout; anything the checkout prints or logs goes to stderr
proto = os.fdopen(os.dup(1), 'w')
os.dup2(2, 1)
sys.stdout = sys.stderr
import torch
from contextlib import nullcontext
torch.set_num_threads(int(sys.argv[2]))
from convnext_backbone import ConvNeXt
setup = torch.load(sys.argv[1], weights_only=True)
model = ConvNeXt(setup['arch'], layer_scale_init_value=1.0)
model.load_state_dict(setup['state'])
train = setup['train']
model.train(train)
if setup['fuse']:
    model.fuse()
x = setup['x']
def run(dtype):
    ctx = torch.autocast('cpu', torch.bfloat16) if dtype == 'bf16' else nullcontext()
    if not train:
        with torch.no_grad(), ctx:
            return list(model(x))
    model.zero_grad(set_to_none=True)
    outs = model(x)
    sum((o * w).sum() for o, w in zip(outs, setup['weights'])).backward()
    return {n: p.grad for n, p in model.named_parameters()}
print('ready', hasattr(ConvNeXt, 'fuse'), file=proto, flush=True)
for line in sys.stdin:
    cmd, dtype, *path = line.split()
    result = run(dtype)
    if cmd == 'save':
        torch.save(result, path[0])
    print('ok', file=proto, flush=True)
"""


class EarlierCheckout:
    """Our backbone as an earlier checkout of this repository computes it, in a worker process.

    Two versions of one package cannot be imported into one process, so the earlier one runs
    in a worker of its own (``PYTHONPATH`` = the checkout) that builds the same arch with the
    same weights and input and runs it when asked; :func:`interleaved` times each request
    beside the current code's runs, in the same rounds.

    Args:
        path (str): The checkout (e.g. ``git worktree add /tmp/before 85cd133``).
        arch (str): The arch.
        state (dict): The weights (our state dict).
        x (torch.Tensor): The input.
        train (bool): Time a training step (needs ``weights``) instead of inference.
        weights (list[torch.Tensor], optional): The loss weights of the training step.
        fuse (bool): Call the earlier backbone's ``fuse()`` first (it had one).
    """

    def __init__(self, path: str, arch: str, state: dict, x: torch.Tensor, train: bool = False,
                 weights: Optional[List[torch.Tensor]] = None, fuse: bool = False) -> None:
        import subprocess
        import tempfile
        self._dir = tempfile.mkdtemp(prefix='convnext-before-')
        setup = osp.join(self._dir, 'setup.pt')
        torch.save(dict(arch=arch, state=state, x=x, train=train, weights=weights, fuse=fuse),
                    setup)
        env = dict(os.environ, PYTHONPATH=osp.abspath(path))
        self._proc = subprocess.Popen(
            [sys.executable, '-c', _WORKER, setup, str(torch.get_num_threads())],
            cwd=self._dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._proc.stdout.readline().split()
        if not ready or ready[0] != 'ready':
            raise RuntimeError(f'the checkout at {path} did not start its backbone (see above)')
        #: Whether the earlier backbone has ``fuse()``.
        self.has_fuse = ready[1:] == ['True']

    def _ask(self, line: str) -> None:
        self._proc.stdin.write(line + '\n')
        self._proc.stdin.flush()
        if self._proc.stdout.readline().strip() != 'ok':
            raise RuntimeError('the earlier checkout\'s worker failed (see above)')

    def __call__(self, dtype: str) -> None:
        """One run (inference or training step) in precision ``dtype``."""
        self._ask(f'run {dtype}')

    def result(self, dtype: str) -> Any:
        """One run's outputs (inference) or weight gradients by name (training)."""
        path = osp.join(self._dir, 'result.pt')
        self._ask(f'save {dtype} {path}')
        return torch.load(path, weights_only=True)


def before_models(args: argparse.Namespace, ours: nn.Module, x: torch.Tensor, train: bool,
                  weights: Optional[List[torch.Tensor]] = None) -> Dict[str, EarlierCheckout]:
    """The ``--before`` checkout's backbone, and its ``fuse()``d one where it had ``fuse()``."""
    state = ours.state_dict()
    models = {'before': EarlierCheckout(args.before, args.arch, state, x, train, weights)}
    if models['before'].has_fuse and not train:
        models['before fused'] = EarlierCheckout(args.before, args.arch, state, x, train,
                                                 weights, fuse=True)
    return models


# -- backbone inference ---------------------------------------------------------------------------
def pointwise_flops(model: ConvNeXt, batch: int, shape: Sequence[int]) -> float:
    """FLOPs of the blocks' pointwise layers (2 products of C x 4C per pixel) for one input."""
    flops = 0.
    for i, (depth, dim) in enumerate(zip(model.depths, model.dims)):
        pixels = batch * (shape[0] // 2 ** (i + 2)) * (shape[1] // 2 ** (i + 2))
        flops += depth * 2 * 2 * pixels * dim * 4 * dim
    return flops


GEMM_SIZE = 2048


def square_gemms(dtype: str) -> Dict[str, Callable[[], object]]:
    """``GEMM_SIZE``^2 products in precision ``dtype`` by each library that may run the blocks'
    pointwise layers, timed beside the models for the GEMM-rate floor: ``torch.mm`` (MKL or
    OpenBLAS on the CPU, cuBLAS on CUDA) and, on the CPU, oneDNN (:func:`ops.linear`, what the
    fast paths call). The floor takes the fastest: on AMD EPYCs MKL's float32 product ran at
    half oneDNN's rate.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen).to(DEVICE) for _ in range(2))
    if dtype != 'fp32':
        a, b = a.to(AUTOCAST_DTYPES[dtype]), b.to(AUTOCAST_DTYPES[dtype])
    fns: Dict[str, Callable[[], object]] = {'torch.mm': lambda: torch.mm(a, b)}
    if DEVICE.type == 'cpu' and mkldnn_linear_available(a.dtype):
        bias = torch.zeros(GEMM_SIZE, dtype=a.dtype)
        fns['oneDNN'] = lambda: ops.linear(a, b, bias)
    return fns


def print_floor(dtype: str, flops: float, ours_s: float,
                medians: Dict[Any, float]) -> None:
    """The GEMM-rate floor of precision ``dtype`` and how far ours is from it."""
    rates = {name: 2 * GEMM_SIZE ** 3 / sec for (kind, d, name), sec in
             ((k, v) for k, v in medians.items() if isinstance(k, tuple) and k[0] == 'gemm')
             if d == dtype}
    fastest = max(rates, key=rates.get)
    floor = flops / rates[fastest]
    target = 1.3 if dtype == 'fp32' else 1.5
    print(f'\n{dtype} GEMM-rate floor: {flops / 1e9:.0f} GFLOP of pointwise layers at '
          f'{rates[fastest] / 1e9:.0f} GFLOP/s (the fastest {GEMM_SIZE}^2 product, {fastest}; '
          + ', '.join(f'{n} {r / 1e9:.0f}' for n, r in rates.items())
          + f' GFLOP/s, timed in the same rounds) = {floor:.3f} s; ours = {ours_s:.3f} s = '
          f'{ours_s / floor:.2f}x the floor (target <= {target}x: '
          f'{"met" if ours_s <= target * floor else "NOT met"}). For {target}x everything '
          f'else (depthwise convs, norms, downsampling, copies, and the products below the '
          f'square rate) may take {(target - 1) * floor:.3f} s; here it takes '
          f'{ours_s - floor:.3f} s.')


def print_decisions() -> None:
    """The kernel decided for each shape class and the probe's times."""
    rows = [[str(shape), str(d.kernel), d.source,
             ', '.join(f'{k} {1e3 * t:.2f}' for k, t in d.seconds.items())]
            for shape, d in tuning.decisions().items()]
    print_table('Fast paths decided in this process (tuning.decisions(); probe times in ms, best '
                f'of {tuning.ROUNDS})', ['shape class', 'kernel', 'how', 'candidates'], rows)


def bench_inference(args: argparse.Namespace) -> bool:
    """Time inference with the fast paths and with the plain ops (and the others with --compare,
    or an earlier checkout with --before). Returns False when an fp32 output disagrees by 1e-4
    or more."""
    torch.manual_seed(0)
    ours = randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).eval()
    models: Dict[str, Any] = {'ours': ours}
    if args.compare:
        for name, build in (('timm', build_timm), ('mmpretrain', build_mmpretrain)):
            other = build(args.arch)
            if other is not None:
                load_our_weights(other, ours)
                other.eval()  # mmpretrain's train() returns None
                models[name] = other
    x = on_device(torch.randn(args.batch, 3, *args.shape), args.channels_last)
    models = {name: on_device(m, args.channels_last) for name, m in models.items()}
    ours = models['ours']
    if args.before:
        models.update(before_models(args, ours, x, train=False))

    def run(name: str, dtype: str) -> Outputs:
        policy = 'plain' if name == 'ours plain ops' else 'auto'
        with autocast(dtype), tuning.use_policy(policy):
            return models[name](x) if isinstance(models[name], nn.Module) else models[name](dtype)

    models = {'ours plain ops': ours, **models}
    # Every (precision, model) pair in each round, so that fp32 and bf16 see the same noise.
    pairs = [(dtype, name) for dtype in args.dtypes for name in models]
    fns: Dict[Any, Callable[[], object]] = {(d, n): (lambda d=d, n=n: run(n, d)) for d, n in pairs}
    for dtype in args.dtypes:  # the GEMM rates, measured in the same rounds (the same noise)
        fns.update({('gemm', dtype, name): fn for name, fn in square_gemms(dtype).items()})

    def outputs(name: str, dtype: str) -> Outputs:
        model = models[name]
        return run(name, dtype) if isinstance(model, nn.Module) else model.result(dtype)

    with torch.no_grad():
        reference = run('ours plain ops', 'fp32')
        errors = {(d, n): rel_err(outputs(n, d), reference) for d, n in pairs}
        medians, best = interleaved(fns, args.warmup, args.repeat)
    ok = all(err < 1e-4 for (dtype, _), err in errors.items() if dtype == 'fp32')
    columns = ['ours']
    rows = [[d, n, f'{medians[d, n]:.3f}', f'{best[d, n]:.3f}', f'{args.batch / medians[d, n]:.2f}',
             f'{errors[d, n]:.1e}'] + [f'{medians[d, n] / medians[d, c]:.2f}x' for c in columns]
            for d, n in pairs]
    print_table(f'Backbone inference, ConvNeXt-{args.arch}, {args.batch}x3x{args.shape[0]}x'
                f'{args.shape[1]}{" channels-last" if args.channels_last else ""}, {DEVICE}, '
                f'{torch.get_num_threads()} threads, median of {args.repeat}',
                ['precision', 'model', 'median s', 'best s', 'images/s', 'rel. err vs ours fp32']
                + [f'{c} is faster by' for c in columns], rows)
    print_decisions()
    flops = pointwise_flops(ours, args.batch, args.shape)
    for dtype in args.dtypes:
        print_floor(dtype, flops, medians[dtype, 'ours'], medians)
    if 'fp32' in args.dtypes:
        fastest = medians['fp32', 'ours']
        for other, target in (('timm', 1.5), ('mmpretrain', 1.8)):
            if other in models:
                ratio = medians['fp32', other] / fastest
                print(f'fp32: ours is {ratio:.2f}x {other} (target >= {target}x): '
                      f'{"met" if ratio >= target else "NOT met"}')
    if set(args.dtypes) == {'fp32', 'bf16'}:
        speedups = [[name, f'{medians["fp32", name] / medians["bf16", name]:.2f}x',
                     f'{medians["fp32", "ours"] / medians["bf16", name]:.2f}x']
                    for name in models]
        print_table('bf16 autocast speed-up (median fp32 time / median bf16 time)',
                    ['model', 'over its own fp32', 'over ours fp32'], speedups)
        ratio = medians['fp32', 'ours'] / medians['bf16', 'ours']
        if DEVICE.type == 'cpu' and 'amx_bf16' in machine.cpu_flags():
            print(f'bf16 with AMX: ours bf16 is {ratio:.2f}x ours fp32 (target >= 3x): '
                  f'{"met" if ratio >= 3 else "NOT met"}')
        elif DEVICE.type == 'cpu':
            print(f'bf16: ours bf16 is {ratio:.2f}x ours fp32 (no AMX on this CPU: the 3x target '
                  'is for AMX; AVX512-BF16 products run at about 2x the float32 rate, see the '
                  'floors above)')
    return ok


def bench_mlp(args: argparse.Namespace) -> bool:
    """Each stage's block MLP + tail (``shortcut + gamma * fc2(gelu(fc1(x)))``) at the stage's
    size for ``--shape``, by every inference kernel of ``ops.residual_mlp``, interleaved."""
    from convnext_backbone import ops
    torch.manual_seed(0)
    model = ConvNeXt(args.arch)
    table, ok = [], True
    for i, dim in enumerate(model.dims):
        h, w = args.shape[0] // 2 ** (i + 2), args.shape[1] // 2 ** (i + 2)
        x, shortcut = torch.randn(args.batch, h, w, dim), torch.randn(args.batch, h, w, dim)
        linear1, linear2 = model.stages[i][0].pwconv1, model.stages[i][0].pwconv2
        params = (linear1.weight, linear1.bias, linear2.weight, linear2.bias)
        scale = torch.rand(dim)
        fns = {str(k): functools.partial(ops.run_inference, k, x, *params, shortcut, scale)
               for k in ops.inference_kernels(x, params[0], shortcut, scale, mid=False)}
        with torch.no_grad():
            ref = fns['plain']()
            errors = {n: ((fn() - ref).norm() / ref.norm()).item() for n, fn in fns.items()}
            medians, best = interleaved(fns, args.warmup, args.repeat)
        ok = ok and max(errors.values()) < 1e-5
        flops = 2 * 2 * args.batch * h * w * dim * 4 * dim
        table += [[str(i), f'({args.batch * h * w}, {dim}) x ({dim}, {4 * dim})', n,
                   f'{1e3 * medians[n]:.1f}', f'{1e3 * best[n]:.1f}',
                   f'{flops / medians[n] / 1e9:.0f}', f'{errors[n]:.1e}'] for n in fns]
    print_table(f'Block MLP + tail per stage, {args.batch}x3x{args.shape[0]}x{args.shape[1]}, '
                f'fp32, {torch.get_num_threads()} threads, median of {args.repeat}',
                ['stage', 'first product', 'kernel', 'median ms', 'best ms',
                 'GFLOP/s (median)', 'rel. err vs plain'], table)
    return ok


# -- training -------------------------------------------------------------------------------------
def bench_training(args: argparse.Namespace) -> bool:
    """Time one training step (forward + backward of the four outputs) and compare gradients;
    with --memory also the peak memory with and without with_cp."""
    torch.manual_seed(0)
    ours = randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).train()
    models: Dict[str, Any] = {'ours': ours}
    maps: Dict[str, Dict[str, str]] = {'ours': {k: k for k in ours.state_dict()}}
    if args.compare:
        for name, build in (('timm', build_timm), ('mmpretrain', build_mmpretrain)):
            other = build(args.arch)
            if other is not None:
                maps[name] = load_our_weights(other, ours)
                other.train()
                models[name] = other
    x = on_device(torch.randn(args.train_batch, 3, *args.train_shape), args.channels_last)
    models = {name: on_device(m, args.channels_last) for name, m in models.items()}
    ours = models['ours']
    with torch.no_grad():
        weights = [torch.randn_like(o.contiguous()) for o in ours(x)]
    if args.before:
        for name, model in before_models(args, ours, x, True, weights).items():
            models[name], maps[name] = model, maps['ours']

    def step(model: Any) -> None:
        if isinstance(model, EarlierCheckout):
            return model('fp32')
        model.zero_grad(set_to_none=True)
        outs = model(x)
        sum((o * w).sum() for o, w in zip(outs, weights)).backward()

    def grads(name: str) -> Dict[str, torch.Tensor]:
        model = models[name]
        if isinstance(model, EarlierCheckout):
            return model.result('fp32')
        step(model)
        return {maps[name][n]: p.grad.detach().clone() for n, p in model.named_parameters()}

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
                f'{args.train_batch}x3x{args.train_shape[0]}x{args.train_shape[1]}, {DEVICE}, '
                f'median of {args.repeat}', ['model', 'median s', 'best s', 'images/s',
                                   'max rel. err of weight grads vs ours', 'speed vs ours'], rows)
    if 'timm' in medians:
        ratio = medians['timm'] / medians['ours']
        print(f'\ntraining step: ours is {ratio:.2f}x timm (target >= 1.25x): '
              f'{"met" if ratio >= 1.25 else "NOT met"}')
    print_decisions()
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
    ours = on_device(randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).eval(),
                     args.channels_last)
    compiled = torch.compile(ours, backend='inductor')
    x = on_device(torch.randn(args.batch, 3, *args.shape), args.channels_last)
    rows = []
    ok = True
    with torch.no_grad():
        reference = ours(x)
        for dtype in args.dtypes:
            with autocast(dtype):
                sync()
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
                f'{args.shape[1]}, {DEVICE}', ['precision', 'first call s (compile)', 'eager s',
                                     'compiled s', 'rel. err vs eager fp32'], rows)
    return ok


# -- detector / segmentor -------------------------------------------------------------------------
def bench_config(args: argparse.Namespace) -> bool:
    """End-to-end inference (``model.test_step``: preprocessing, backbone, neck, heads,
    post-processing) of a config's model with random weights on one synthetic image."""
    cfg = cli.read_config(args.config)
    scope = cfg.get('default_scope')
    torch.manual_seed(0)
    model = on_device(cli.build_model(cfg))
    h, w = args.shape
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.), pad_shape=(h, w))
    if scope == 'mmseg':
        from mmseg.structures import SegDataSample as Sample
    else:
        from mmdet.structures import DetDataSample as Sample

    def run(dtype: str) -> None:
        with autocast(dtype):
            models[dtype].test_step(dict(inputs=[image], data_samples=[Sample(metainfo=meta)]))

    models = {dtype: model if dtype == 'fp32' else bf16_model(model) for dtype in args.dtypes}
    with torch.no_grad():
        medians, best = interleaved({k: functools.partial(run, k) for k in models},
                                    args.warmup, args.repeat)
    rows = [[dtype, f'{sec:.3f}', f'{best[dtype]:.3f}', f'{1 / sec:.2f}']
            for dtype, sec in medians.items()]
    print_table(f'End-to-end inference ({type(model).__name__}, test_step), '
                f'{osp.basename(args.config)}, 1x3x{h}x{w}, random weights, '
                f'median of {args.repeat}',
                ['precision', 'median s', 'best s', 'images/s'], rows)
    return True


# -- whole models beside the peer libraries' own ConvNeXt configs ---------------------------------
ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
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
#: Submodules timed separately (forward of the first two, predict/loss of the heads).
PARTS = ('backbone', 'neck', 'decode_head', 'auxiliary_head', 'rpn_head', 'roi_head')


def import_mmpretrain() -> bool:
    """Make ``mmpretrain.models`` importable in this environment, for the peer configs.

    mmpretrain 1.2.0 is pure Python: installed with ``pip install --no-deps --target
    .venv-bench/mmpretrain-only mmpretrain==1.2.0 ...`` and run with
    ``PYTHONPATH=.venv-bench/mmpretrain-only`` (docs/performance.md), it imports here. Its
    ``models`` package imports ``torchvision.ops.boxes`` in two modules
    (``mmpretrain/models/utils/box_utils.py``, ``mmpretrain/evaluation/metrics/
    visual_grounding_eval.py``) that the ConvNeXt backbone never calls; where torchvision cannot
    load, a placeholder module stands in whose every attribute raises, so a real use would fail
    loudly. Its multimodal models (``mmpretrain/models/multimodal/__init__.py``: imported when
    ``WITH_MULTIMODAL``) are switched off: they do not import with transformers 5.
    """
    import types
    try:
        import torchvision  # noqa: F401
    except ImportError:
        class Placeholder(types.ModuleType):
            def __getattr__(self, name: str) -> Any:
                if name.startswith('__'):
                    raise AttributeError(name)
                raise ImportError(f'{self.__name__}.{name}: torchvision is not installed here')
        names = ('torchvision', 'torchvision.ops', 'torchvision.ops.boxes')
        modules = {name: Placeholder(name) for name in names}
        modules['torchvision'].ops = modules['torchvision.ops']
        modules['torchvision.ops'].boxes = modules['torchvision.ops.boxes']
        sys.modules.update(modules)
    try:
        # Its multimodal models need transformers < 5 and are not used here.
        from mmpretrain.utils import dependency
        dependency.WITH_MULTIMODAL = False
        import mmpretrain.models  # noqa: F401
        return True
    except ImportError as err:
        print(f'# mmpretrain skipped: {type(err).__name__}: {err} (docs/performance.md: '
              'PYTHONPATH=.venv-bench/mmpretrain-only)')
        return False


class PartTimes:
    """Wall time spent in the model's main parts (``PARTS``) during each run.

    Args:
        model (nn.Module): A detector or segmentor.
    """

    def __init__(self, model: nn.Module) -> None:
        self.last: Dict[str, float] = {}
        for name in PARTS:
            part = getattr(model, name, None)
            if isinstance(part, nn.Module):
                for method in ('forward',) if name in ('backbone', 'neck') else ('predict', 'loss'):
                    setattr(part, method, self._timed(name, getattr(part, method)))

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.last[name] = self.last.get(name, 0.) + time.perf_counter() - start
        return timed


def synthetic_batch(scope: str, shape: Sequence[int], batch: int, train: bool,
                    seed: int = 0) -> dict:
    """A data batch as the data loader gives it: uint8 images, samples with metainfo (and random
    ground truth for training)."""
    from mmengine.structures import InstanceData, PixelData
    gen = torch.Generator().manual_seed(seed)
    h, w = shape
    meta = dict(img_shape=(h, w), ori_shape=(h, w), scale_factor=(1., 1.), pad_shape=(h, w),
                batch_input_shape=(h, w))
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen))
        if scope == 'mmseg':
            from mmseg.structures import SegDataSample
            sample = SegDataSample(metainfo=meta)
            if train:
                labels = torch.randint(0, 150, (1, h, w), generator=gen)
                sample.gt_sem_seg = PixelData(data=labels)
        else:
            from mmdet.structures import DetDataSample
            from mmdet.structures.mask import BitmapMasks
            sample = DetDataSample(metainfo=meta)
            if train:
                xy = torch.rand(8, 2, generator=gen) * torch.tensor([w * .6, h * .6])
                wh = torch.rand(8, 2, generator=gen) * torch.tensor([w * .3, h * .3]) + 16
                boxes = torch.cat([xy, xy + wh], 1)
                masks = torch.zeros(8, h, w, dtype=torch.uint8)
                for i, (x0, y0, x1, y1) in enumerate(boxes.round().long().tolist()):
                    masks[i, y0:y1, x0:x1] = 1
                sample.gt_instances = InstanceData(
                    bboxes=boxes, labels=torch.randint(0, 80, (8,), generator=gen),
                    masks=BitmapMasks(masks.numpy(), h, w))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def build_pair(task: str) -> Tuple[nn.Module, Optional[nn.Module], str]:
    """Our config's model and the peer config's (None without mmpretrain), same weights."""
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


def prepare_inference(model: nn.Module) -> nn.Module:
    """Our inference preparation of a whole model: mmcv's ``fuse_conv_bn`` (each BatchNorm after
    a conv folded into it). Returns the model."""
    from mmcv.cnn import fuse_conv_bn
    return fuse_conv_bn(model)


def bf16_model(model: nn.Module) -> nn.Module:
    """A copy of a detector / segmentor prepared for reduced-precision autocast as
    ``tools/test.py --bf16`` runs it (:func:`convnext_backbone.precision.prepare_bf16`: mmcv's
    ops and the heads' output layers in float32)."""
    copied = copy.deepcopy(model)
    precision.prepare_bf16(copied)
    return copied


def build_random(config: str) -> nn.Module:
    """The model of a config (``pkg::path`` or a file) with random weights, eval mode."""
    if '::' in config:
        package, rel = config.split('::')
        config = osp.join(osp.dirname(__import__(package).__file__), '.mim', 'configs', rel)
    torch.manual_seed(0)
    return cli.build_model(cli.read_config(config))


def bench_e2e(args: argparse.Namespace) -> bool:
    """Whole-model test step (and training step with --train): our config beside the peer
    library's own ConvNeXt config, same weights, one process; times per part."""
    ok = True
    for task in args.e2e:
        ok = bench_e2e_test(task, args) and ok
    return ok


def bench_e2e_test(task: str, args: argparse.Namespace) -> bool:
    """One task of :func:`bench_e2e`. Returns False when a test output disagrees by 1e-4."""
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
    print_e2e(f'{task}: test_step, 1x3x{shape[0]}x{shape[1]}, {DEVICE}', models, times,
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
    """Relative error of segmentation logits, or of detection boxes and scores."""
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
    """One row per model: median total, median per part, rel. error, ratios."""
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
    """One training step (forward with losses + backward) of each model, same batch."""
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


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='tiny', help="backbone arch (default 'tiny')")
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='inference input size (default 800 1216; a config: 800 1216 for '
                             'mmdet, 512 512 for mmseg)')
    parser.add_argument('--batch', type=int, default=1, help='inference batch (default 1)')
    parser.add_argument('--dtypes', nargs='+', choices=('fp32', 'bf16', 'fp16'), default=None,
                        help='precisions to time (bf16 / fp16 = autocast; default: fp32, and bf16 '
                             'where the CPU computes bf16 natively; on CUDA fp32, fp16 and bf16 '
                             'where supported)')
    parser.add_argument('--device', default='cpu',
                        help="'cpu' (default) or a CUDA device ('cuda', 'cuda:1')")
    parser.add_argument('--channels-last', action='store_true',
                        help='backbone input and weights in channels-last memory format')
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
    parser.add_argument('--mlp', action='store_true',
                        help='time the block MLP candidates (plain, oneDNN, blocked) per stage')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile (inductor) the backbone: check and time it')
    parser.add_argument('--config', help='a detector/segmentor config: time its test_step')
    parser.add_argument('--before', metavar='CHECKOUT',
                        help='also time the backbone of an earlier checkout of this repository '
                             '(e.g. made by git worktree add), in a worker process, same rounds')
    parser.add_argument('--save-fast-paths', metavar='FILE',
                        help='write the fast-path decisions of this run to FILE, to pin them '
                             'later with CONVNEXT_FAST_PATHS=FILE')
    parser.add_argument('--e2e', nargs='+', choices=tuple(E2E), default=None,
                        help="whole models: our UperNet-T (seg) / Mask R-CNN-T (det) config beside "
                             "mmseg's / mmdet's own ConvNeXt-T config, same weights (+ --train)")
    args = parser.parse_args(argv)
    if args.arch not in TIMM_NAMES and args.compare:
        parser.error(f'--compare supports the V1 archs {sorted(TIMM_NAMES)}, got {args.arch!r}')
    cuda = args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: CUDA is not available here')
    if not cuda and args.device != 'cpu':
        parser.error(f"--device {args.device}: use 'cpu' or 'cuda[:N]'")
    if cuda and args.before:
        parser.error('--before runs the earlier checkout on the CPU only')
    if args.dtypes is None and cuda:
        args.dtypes = ['fp32', 'fp16'] + (['bf16'] if torch.cuda.is_bf16_supported() else [])
    elif args.dtypes is None:
        args.dtypes = ['fp32', 'bf16'] if machine.native_bf16() else ['fp32']
    if not cuda and 'fp16' in args.dtypes:
        parser.error('--dtypes fp16: CPU autocast computes in bf16 only; use bf16')
    if args.shape is None and not args.e2e:
        scope_is_seg = bool(args.config) and 'upernet' in osp.basename(args.config)
        args.shape = [512, 512] if scope_is_seg else [800, 1216]
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    global DEVICE
    args = parse_args(argv)
    DEVICE = torch.device(args.device)
    torch.set_num_threads(args.threads)
    print(f'# {machine.describe()}')
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN fused Linear: '
          f'fp32 {mkldnn_linear_available(torch.float32)}, '
          f'bf16 {mkldnn_linear_available(torch.bfloat16)}, fast paths: {tuning.policy()}, '
          f'THP_MEM_ALLOC_ENABLE={os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")}, load average '
          f'at start: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    if 'bf16' in args.dtypes and not machine.native_bf16():
        print('# bf16 was asked for on a CPU without native bf16: expect it to be ~'
              f'{machine.BF16_SLOWDOWN_WITHOUT_NATIVE}x slower than fp32')
    ok = True
    if args.e2e:
        ok = bench_e2e(args)
    elif args.config:
        ok = bench_config(args)
    elif args.mlp:
        ok = bench_mlp(args)
    elif args.compile:
        ok = bench_compile(args)
    else:
        if not args.no_inference:
            ok = bench_inference(args)
        if args.train:
            ok = bench_training(args) and ok
    if args.save_fast_paths:
        count = tuning.save(args.save_fast_paths)
        print(f'\n{count} fast-path decisions written to {args.save_fast_paths} (pin them with '
              f'CONVNEXT_FAST_PATHS={args.save_fast_paths})')
    if not ok:
        print('\nFAILED: an output or gradient disagrees beyond the tolerance (see the tables)')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
