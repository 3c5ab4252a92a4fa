"""``--head``: each stage's block head (dwconv 7x7 -> LayerNorm) by every kernel of
``head.dwconv_norm`` (the plain ops, our compiled kernel where it is loaded)."""
import argparse
import functools

import torch

from convnext_backbone import ConvNeXt, head, native

from .common import interleaved, print_table

#: Largest relative error against the plain ops per precision (bf16: the conv output is rounded
#: to bfloat16 in both; a sum taken in another order flips a last bit now and then).
TOLERANCE = {'fp32': 1e-5, 'bf16': 1e-2}


def bench_head(args: argparse.Namespace) -> bool:
    """Each stage's head ``norm(dwconv(x))`` at the stage's size for ``--shape``, by every
    kernel of ``head.run_head``, interleaved, per precision of ``--dtypes`` (bf16: under CPU
    autocast, the float32 input of a block as the stages give it); then the heads of one
    forward (each stage's time times its depth).

    Args:
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: False when a kernel disagrees with the plain ops beyond :data:`TOLERANCE`.
    """
    torch.manual_seed(0)
    model = ConvNeXt(args.arch).eval()
    table, ok = [], True
    for dtype in args.dtypes:
        forward = {str(k): 0.0 for k in native.kernels()}
        for i, (dim, depth) in enumerate(zip(model.dims, model.depths)):
            h, w = args.shape[0] // 2 ** (i + 2), args.shape[1] // 2 ** (i + 2)
            x = torch.randn(args.batch, h, w, dim)
            block = model.stages[i][0]
            fns = {str(k): functools.partial(head.run_head, k, x, block.dwconv, block.norm)
                   for k in native.kernels()}
            with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16,
                                                 enabled=dtype == 'bf16'):
                ref = fns['plain']().float()
                errors = {n: ((fn().float() - ref).norm() / ref.norm()).item()
                          for n, fn in fns.items()}
                medians, best = interleaved(fns, args.warmup, args.repeat)
            ok = ok and max(errors.values()) < TOLERANCE[dtype]
            flops = 2 * 49 * args.batch * h * w * dim
            for n in fns:
                forward[n] += medians[n] * depth
                table.append([dtype, str(i), f'({args.batch}, {h}, {w}, {dim})', n,
                              f'{1e3 * medians[n]:.2f}', f'{1e3 * best[n]:.2f}',
                              f'{flops / medians[n] / 1e9:.0f}', f'{errors[n]:.1e}'])
        table += [[dtype, 'all', f'{sum(model.depths)} blocks', n, f'{1e3 * s:.1f}', '', '', '']
                  for n, s in forward.items()]
    print_table(f'Block head (dwconv 7x7 -> LayerNorm) per stage, {args.batch}x3x{args.shape[0]}x'
                f'{args.shape[1]}, {torch.get_num_threads()} threads, median of {args.repeat}; '
                "'all': one forward's heads (median x depth)",
                ['precision', 'stage', 'input', 'kernel', 'median ms', 'best ms',
                 'GFLOP/s (median)', 'rel. err vs plain'], table)
    return ok
