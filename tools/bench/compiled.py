"""``--compile``: the backbone compiled with inductor, checked against eager and timed."""
import argparse
import time

import torch

from convnext_backbone import ConvNeXt

from .common import autocast, device, interleaved, on_device, print_table, randomise_, rel_err, sync


def bench_compile(args: argparse.Namespace) -> bool:
    """Compile the backbone with inductor, check it against eager and time both.

    Args:
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: False when the compiled output disagrees (fp32: by 1e-4 or more).
    """
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
                f'{args.shape[1]}, {device()}', ['precision', 'first call s (compile)', 'eager s',
                                       'compiled s', 'rel. err vs eager fp32'], rows)
    return ok
