"""``--config``: end-to-end inference of one detector / segmentor config with random weights."""
import argparse
import functools
import os.path as osp

import torch

from convnext_backbone import cli

from .common import autocast, interleaved, on_device, print_table
from .models import bf16_model, synthetic_batch


def bench_config(args: argparse.Namespace) -> bool:
    """End-to-end inference (``model.test_step``: preprocessing, backbone, neck, heads,
    post-processing) of a config's model with random weights on one synthetic image.

    Args:
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: True (nothing is compared).
    """
    cfg = cli.read_config(args.config)
    scope = cfg.get('default_scope')
    torch.manual_seed(0)
    model = on_device(cli.build_model(cfg))
    h, w = args.shape
    batch = synthetic_batch(scope, (h, w), 1, train=False)

    def run(dtype: str) -> None:
        with autocast(dtype):
            models[dtype].test_step(batch)

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
