"""Backbone inference (the default mode): ours with the fast paths and with the plain ops, the
peers with ``--compare``, the inference engines with ``--engines``, an earlier checkout with
``--before``, and the GEMM-rate floor of each precision, timed in the same rounds."""
import argparse
import copy
from typing import Any, Callable, Dict, Sequence

import torch
from torch import nn

from convnext_backbone import ConvNeXt, frozen_weights, machine, ops, tuning
from convnext_backbone.ops import mkldnn_linear_available

from .common import (
    AUTOCAST_DTYPES,
    Outputs,
    autocast,
    device,
    interleaved,
    on_device,
    print_decisions,
    print_table,
    randomise_,
    rel_err,
)
from .earlier import before_models
from .engines import ENGINES, engine_peers
from .peers import peer_backbones

GEMM_SIZE = 2048
#: The targets printed beside the figures (issue 27's "done when"): ours at most this many times
#: the GEMM-rate floor of each precision, ...
FLOOR_TARGETS = {'fp32': 1.2, 'bf16': 1.35}
#: ... and ours at least this many times faster than each engine (its median / ours), on an idle
#: machine and beside ``--busy`` processes.
ENGINE_TARGETS = {'idle': 1.15, 'busy': 1.0}
#: Our rows that the targets are printed for: the weights read at every call, and frozen.
OURS_FROZEN = 'ours frozen'
OURS = ('ours', OURS_FROZEN)


def pointwise_flops(model: ConvNeXt, batch: int, shape: Sequence[int]) -> float:
    """FLOPs of the blocks' pointwise layers (2 products of C x 4C per pixel) for one input.

    Args:
        model (ConvNeXt): The backbone (its depths and dims).
        batch (int): Images per input.
        shape (Sequence[int]): Input (H, W).

    Returns:
        float: The FLOPs.
    """
    flops = 0.
    for i, (depth, dim) in enumerate(zip(model.depths, model.dims)):
        pixels = batch * (shape[0] // 2 ** (i + 2)) * (shape[1] // 2 ** (i + 2))
        flops += depth * 2 * 2 * pixels * dim * 4 * dim
    return flops


def square_gemms(dtype: str) -> Dict[str, Callable[[], object]]:
    """``GEMM_SIZE``^2 products in precision ``dtype`` by each library that may run the blocks'
    pointwise layers, timed beside the models for the GEMM-rate floor: ``torch.mm`` (MKL or
    OpenBLAS on the CPU, cuBLAS on CUDA) and, on the CPU, oneDNN (:func:`ops.linear`, what the
    fast paths call). The floor takes the fastest: on AMD EPYCs MKL's float32 product ran at
    half oneDNN's rate.

    Args:
        dtype (str): 'fp32', 'bf16' or 'fp16'.

    Returns:
        dict: Library name -> one product.
    """
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(GEMM_SIZE, GEMM_SIZE, generator=gen).to(device()) for _ in range(2))
    if dtype != 'fp32':
        a, b = a.to(AUTOCAST_DTYPES[dtype]), b.to(AUTOCAST_DTYPES[dtype])
    fns: Dict[str, Callable[[], object]] = {'torch.mm': lambda: torch.mm(a, b)}
    if device().type == 'cpu' and mkldnn_linear_available(a.dtype):
        bias = torch.zeros(GEMM_SIZE, dtype=a.dtype)
        fns['oneDNN'] = lambda: ops.linear(a, b, bias)
    return fns


def print_floor(dtype: str, flops: float, ours_s: float,
                medians: Dict[Any, float], name: str = 'ours') -> None:
    """The GEMM-rate floor of precision ``dtype`` and how far ours is from it.

    Args:
        dtype (str): The precision.
        flops (float): The pointwise layers' FLOPs (:func:`pointwise_flops`).
        ours_s (float): Our median seconds.
        medians (dict): The medians of the run, with ``('gemm', dtype, library)`` keys.
        name (str): Our row's name. Defaults to 'ours'.
    """
    rates = {name: 2 * GEMM_SIZE ** 3 / sec for (kind, d, name), sec in
             ((k, v) for k, v in medians.items() if isinstance(k, tuple) and k[0] == 'gemm')
             if d == dtype}
    fastest = max(rates, key=rates.get)
    floor = flops / rates[fastest]
    target = FLOOR_TARGETS.get(dtype, FLOOR_TARGETS['bf16'])
    print(f'\n{dtype} GEMM-rate floor: {flops / 1e9:.0f} GFLOP of pointwise layers at '
          f'{rates[fastest] / 1e9:.0f} GFLOP/s (the fastest {GEMM_SIZE}^2 product, {fastest}; '
          + ', '.join(f'{n} {r / 1e9:.0f}' for n, r in rates.items())
          + f' GFLOP/s, timed in the same rounds) = {floor:.3f} s; {name} = {ours_s:.3f} s = '
          f'{ours_s / floor:.2f}x the floor (target <= {target}x: '
          f'{"met" if ours_s <= target * floor else "NOT met"}). For {target}x everything '
          f'else (depthwise convs, norms, downsampling, copies, and the products below the '
          f'square rate) may take {(target - 1) * floor:.3f} s; here it takes '
          f'{ours_s - floor:.3f} s.')


def timed_in(model: Any, dtype: str) -> bool:
    """Whether ``model`` gets a row in precision ``dtype``: a module or an earlier checkout in
    every precision of the run, an engine (:class:`~.engines.EnginePeer`) in those it was
    compiled for.

    Args:
        model: A module, an earlier checkout or an engine.
        dtype (str): The precision.

    Returns:
        bool: Whether it is timed in ``dtype``.
    """
    return dtype in getattr(model, 'precisions', (dtype,))


def bench_inference(args: argparse.Namespace) -> bool:
    """Time inference with the fast paths and with the plain ops (and the others with --compare,
    the engines with --engines, or an earlier checkout with --before).

    Args:
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: False when an fp32 output disagrees by 1e-4 or more.
    """
    torch.manual_seed(0)
    ours = randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).eval()
    # ours again, run inside frozen_weights (each weight cast and packed once, as the engines'
    # sessions read theirs); a copy, so that the 'ours' row reads its weights at every call
    models: Dict[str, Any] = {'ours': ours, OURS_FROZEN: copy.deepcopy(ours)}
    if args.compare:
        models.update((name, other) for name, (other, _) in
                      peer_backbones(args.arch, ours, train=False).items())
    x = on_device(torch.randn(args.batch, 3, *args.shape), args.channels_last)
    models = {name: on_device(m, args.channels_last) for name, m in models.items()}
    ours = models['ours']
    if args.before:
        models.update(before_models(args, ours, x, train=False))
    if args.engines is not None:
        models.update(engine_peers(args, ours, x))

    def run(name: str, dtype: str) -> Outputs:
        policy = 'plain' if name == 'ours plain ops' else 'auto'
        with autocast(dtype), tuning.use_policy(policy):
            return models[name](x) if isinstance(models[name], nn.Module) else models[name](dtype)

    models = {'ours plain ops': ours, **models}
    # Every (precision, model) pair in each round, so that fp32 and bf16 see the same noise.
    pairs = [(dtype, name) for dtype in args.dtypes for name in models
             if timed_in(models[name], dtype)]
    fns: Dict[Any, Callable[[], object]] = {(d, n): (lambda d=d, n=n: run(n, d)) for d, n in pairs}
    for dtype in args.dtypes:  # the GEMM rates, measured in the same rounds (the same noise)
        fns.update({('gemm', dtype, name): fn for name, fn in square_gemms(dtype).items()})

    def outputs(name: str, dtype: str) -> Outputs:
        model = models[name]
        return run(name, dtype) if isinstance(model, nn.Module) else model.result(dtype)

    with torch.no_grad(), frozen_weights(models[OURS_FROZEN]):
        reference = run('ours plain ops', 'fp32')
        errors = {(d, n): rel_err(outputs(n, d), reference) for d, n in pairs}
        medians, best = interleaved(fns, args.warmup, args.repeat)
    ok = all(err < 1e-4 for (dtype, _), err in errors.items() if dtype == 'fp32')
    columns = ['ours']
    rows = [[d, n, f'{medians[d, n]:.3f}', f'{best[d, n]:.3f}', f'{args.batch / medians[d, n]:.2f}',
             f'{errors[d, n]:.1e}'] + [f'{medians[d, n] / medians[d, c]:.2f}x' for c in columns]
            for d, n in pairs]
    busy = (f', beside {args.busy} busy process{"es" if args.busy > 1 else ""}' if args.busy
            else '')
    print_table(f'Backbone inference, ConvNeXt-{args.arch}, {args.batch}x3x{args.shape[0]}x'
                f'{args.shape[1]}{" channels-last" if args.channels_last else ""}, {device()}, '
                f'{torch.get_num_threads()} threads, median of {args.repeat}{busy}',
                ['precision', 'model', 'median s', 'best s', 'images/s', 'rel. err vs ours fp32']
                + [f'{c} is faster by' for c in columns], rows)
    print_decisions()
    flops = pointwise_flops(ours, args.batch, args.shape)
    for dtype in args.dtypes:
        for name in OURS:
            print_floor(dtype, flops, medians[dtype, name], medians, name)
    if 'fp32' in args.dtypes:
        fastest = medians['fp32', 'ours']
        for other, target in (('timm', 1.5), ('mmpretrain', 1.8)):
            if other in models:
                ratio = medians['fp32', other] / fastest
                print(f'fp32: ours is {ratio:.2f}x {other} (target >= {target}x): '
                      f'{"met" if ratio >= target else "NOT met"}')
    for dtype, name in ((d, n) for d in args.dtypes for n in OURS):
        for other in ENGINES.values():  # the engines: their median time / ours, in their dtypes
            if (dtype, other) not in medians:
                continue
            ratio = medians[dtype, other] / medians[dtype, name]
            # fp32 answers to 1e-4 (ok above); a lower precision as compiled.py checks inductor
            bound = 1e-4 if dtype == 'fp32' else 3 * errors[dtype, 'ours'] + 1e-2
            wrong = (f'; its output is WRONG: rel. err {errors[dtype, other]:.1e} > {bound:.1e}'
                     if errors[dtype, other] > bound else '')
            target = ENGINE_TARGETS['busy' if args.busy else 'idle']
            print(f'{dtype}: {name} is {ratio:.2f}x {other} (its median time / ours: '
                  f'{"faster" if ratio > 1 else "slower"}{wrong}; target >= {target}x'
                  f'{" beside busy processes" if args.busy else ""}: '
                  f'{"met" if ratio >= target and not wrong else "NOT met"})')
    if set(args.dtypes) == {'fp32', 'bf16'}:
        speedups = [[name, f'{medians["fp32", name] / medians["bf16", name]:.2f}x',
                     f'{medians["fp32", "ours"] / medians["bf16", name]:.2f}x']
                    for name in models if ('fp32', name) in medians and ('bf16', name) in medians]
        print_table('bf16 autocast speed-up (median fp32 time / median bf16 time)',
                    ['model', 'over its own fp32', 'over ours fp32'], speedups)
        ratio = medians['fp32', 'ours'] / medians['bf16', 'ours']
        if device().type == 'cpu' and 'amx_bf16' in machine.cpu_flags():
            print(f'bf16 with AMX: ours bf16 is {ratio:.2f}x ours fp32 (target >= 3x): '
                  f'{"met" if ratio >= 3 else "NOT met"}')
        elif device().type == 'cpu':
            print(f'bf16: ours bf16 is {ratio:.2f}x ours fp32 (no AMX on this CPU: the 3x target '
                  'is for AMX; AVX512-BF16 products run at about 2x the float32 rate, see the '
                  'floors above)')
    return ok
