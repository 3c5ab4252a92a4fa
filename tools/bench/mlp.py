"""``--mlp``: each stage's block MLP + tail by every inference kernel of ``ops.residual_mlp``."""
import argparse
import functools

import torch

from convnext_backbone import ConvNeXt, ops

from .common import interleaved, print_table


def bench_mlp(args: argparse.Namespace) -> bool:
    """Each stage's block MLP + tail (``shortcut + gamma * fc2(gelu(fc1(x)))``) at the stage's
    size for ``--shape``, by every inference kernel of ``ops.residual_mlp``, interleaved.

    Args:
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: False when a kernel disagrees with the plain ops by 1e-5 or more.
    """
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
