"""The worker of :class:`bench.earlier.EarlierCheckout`: builds the backbone of the checkout on
its ``PYTHONPATH`` with the given weights and runs it on request.

Usage (by :class:`~bench.earlier.EarlierCheckout` only)::

    PYTHONPATH=CHECKOUT python earlier_worker.py SETUP.pt THREADS

It answers ``ready HAS_FUSE`` once built, then ``ok`` after each request line read from stdin:
``run DTYPE`` (one run) or ``save DTYPE PATH`` (one run, its result saved to PATH). It imports
nothing of the benchmark, only the checkout's ``convnext_backbone``, so it runs against any
earlier checkout.
"""
import os
import sys
from contextlib import nullcontext
from typing import Any, Dict, TextIO


def protocol_stream() -> TextIO:
    """The original stdout, for the protocol; anything the checkout prints or logs (to the
    process's stdout, file descriptor 1) goes to stderr from now on."""
    proto = os.fdopen(os.dup(1), 'w')
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def build(convnext: type, setup: Dict[str, Any]) -> Any:
    """The checkout's backbone with the setup's arch, weights, mode and ``fuse()``."""
    model = convnext(setup['arch'], layer_scale_init_value=1.0)
    model.load_state_dict(setup['state'])
    model.train(setup['train'])
    if setup['fuse']:
        model.fuse()
    return model


def run(model: Any, setup: Dict[str, Any], dtype: str) -> Any:
    """One inference (the output maps) or training step (the weight gradients by name)."""
    import torch
    x = setup['x']
    ctx = torch.autocast('cpu', torch.bfloat16) if dtype == 'bf16' else nullcontext()
    if not setup['train']:
        with torch.no_grad(), ctx:
            return list(model(x))
    model.zero_grad(set_to_none=True)
    outs = model(x)
    sum((o * w).sum() for o, w in zip(outs, setup['weights'])).backward()
    return {n: p.grad for n, p in model.named_parameters()}


def main() -> None:
    """Build the backbone, say ``ready``, then answer each request line."""
    # A script's own folder is sys.path[0]: drop it, so that nothing of tools/bench shadows
    # what the checkout (on PYTHONPATH) imports.
    del sys.path[0]
    proto = protocol_stream()  # before torch and the checkout are imported
    import torch
    torch.set_num_threads(int(sys.argv[2]))
    from convnext_backbone import ConvNeXt
    setup = torch.load(sys.argv[1], weights_only=True)
    model = build(ConvNeXt, setup)
    print('ready', hasattr(ConvNeXt, 'fuse'), file=proto, flush=True)
    for line in sys.stdin:
        cmd, dtype, *path = line.split()
        result = run(model, setup, dtype)
        if cmd == 'save':
            torch.save(result, path[0])
        print('ok', file=proto, flush=True)


if __name__ == '__main__':
    main()
