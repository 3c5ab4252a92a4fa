"""``--train``: one training step of the backbone (forward + backward of the four outputs), ours
beside the peers (``--compare``) and an earlier checkout (``--before``), with their gradients
compared; ``--memory`` adds :mod:`.memory`."""
import argparse
from typing import Any, Dict

import torch

from convnext_backbone import ConvNeXt

from .common import (
    device,
    interleaved,
    on_device,
    print_decisions,
    print_table,
    randomise_,
    train_step,
)
from .earlier import EarlierCheckout, before_models
from .memory import bench_memory
from .peers import peer_backbones


def bench_training(args: argparse.Namespace) -> bool:
    """Time one training step (forward + backward of the four outputs) and compare gradients;
    with --memory also the peak memory with and without with_cp.

    Args:
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: False when a weight gradient (or with_cp's) disagrees by 1e-4 or more.
    """
    torch.manual_seed(0)
    ours = randomise_(ConvNeXt(args.arch, layer_scale_init_value=1.0)).train()
    models: Dict[str, Any] = {'ours': ours}
    maps: Dict[str, Dict[str, str]] = {'ours': {k: k for k in ours.state_dict()}}
    if args.compare:
        for name, (other, mapping) in peer_backbones(args.arch, ours, train=True).items():
            models[name], maps[name] = other, mapping
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
        train_step(model, x, weights)

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
                f'{args.train_batch}x3x{args.train_shape[0]}x{args.train_shape[1]}, {device()}, '
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
