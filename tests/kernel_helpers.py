"""What the tests of our compiled kernels share (test_native_head.py, test_native_output.py,
test_native_dwconv_grad.py, test_native_gelu.py, test_native_transpose.py; test_fast_paths.py
pins its kernels with pin_op too): a block of random weights, our backbone beside the reference
with the same weights, a decisions file pinning one op's kernel, a record of the kernels run,
and the ops a training MLP's forward and backward called."""
import dataclasses
import json

import pytest
import torch
from reference import RefConvNeXt

from convnext_backbone import ConvNeXt, native, ops, tuning
from convnext_backbone.convnext import Block

needs_native = pytest.mark.skipif(
    not native.available(), reason=f'our kernel is not built here: {native.unavailable_reason()}')
#: Blocks of different widths in every stage, one with a width that is not a multiple of 16.
ARCH = {'depths': [2, 1, 1, 1], 'dims': [16, 40, 32, 48]}


def random_block(width=24, seed=0):
    """A ``Block`` of ``width`` channels, every parameter random (scale 0.2)."""
    block = Block(width)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    return block


def ours_and_reference(arch=None, **kwargs):
    """Our backbone (all four outputs) and the reference (``tests/reference.py``) holding the
    same random weights."""
    arch = arch or ARCH
    ref = RefConvNeXt(arch['depths'], arch['dims'])
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    model = ConvNeXt(arch, out_indices=(0, 1, 2, 3), **kwargs)
    model.load_state_dict(ref.state_dict(), strict=True)
    return model, ref


def pin_op(tmp_path, run, op, kernel):
    """A decisions file of what ``run()`` decides, with ``kernel`` (a ``tuning.Kernel``, its
    rows too) for every shape class of ``op``; the others keep their decided kernels. The
    decisions are forgotten after."""
    with tuning.use_policy('auto'):
        run()
    path = tmp_path / f'{op}-{kernel.name}.json'
    tuning.save(str(path))
    data = json.loads(path.read_text())
    for entry in data['decisions']:
        if entry['shape']['op'] == op:
            entry['kernel'] = dataclasses.asdict(kernel)
    path.write_text(json.dumps(data))
    tuning.reset()
    return str(path)


def record_kernels(monkeypatch, module, name):
    """The kernels ``module.name(kernel, ...)`` is called with from now on (a list that grows)."""
    ran = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda kernel, *args: ran.append(kernel) or real(kernel,
                                                                                       *args))
    return ran


def training_mlp_ops(rows, total=950, width=16):
    """The names of the ops (``torch.autograd.profiler``) that the forward and backward of
    ``ops.blocked_mlp`` on ``total`` random rows of ``width`` channels in blocks of ``rows``
    called."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(total, width, generator=gen, requires_grad=True)
    shapes = ((4 * width, width), (4 * width,), (width, 4 * width), (width,))
    params = [torch.randn(shape, generator=gen).requires_grad_() for shape in shapes]
    with torch.autograd.profiler.profile() as prof:
        ops.blocked_mlp(x, *params, rows=rows).sum().backward()
    return [event.name for event in prof.function_events]
