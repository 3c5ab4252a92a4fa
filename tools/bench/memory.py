"""``--memory`` (with ``--train``): peak training memory with and without ``with_cp``, and
whether their gradients agree."""
import argparse
from typing import List

import torch
from torch import nn

from convnext_backbone import ConvNeXt

from .common import peak_memory, print_table, train_step


def bench_memory(args: argparse.Namespace, ours: nn.Module, x: torch.Tensor,
                 weights: List[torch.Tensor]) -> bool:
    """Peak training memory with and without with_cp, and whether their gradients agree.

    Args:
        args (argparse.Namespace): The benchmark's options.
        ours (nn.Module): Our backbone, whose weights both models get.
        x (torch.Tensor): The training input.
        weights (list[torch.Tensor]): The loss weights of the training step.

    Returns:
        bool: False when with_cp's weight gradients disagree by 1e-4 or more.
    """
    results = {}
    for with_cp in (False, True):
        model = ConvNeXt(args.arch, layer_scale_init_value=1.0, with_cp=with_cp).train()
        model.load_state_dict(ours.state_dict())

        def step(model: nn.Module = model) -> None:
            train_step(model, x, weights)

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
