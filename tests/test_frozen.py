"""frozen_weights: the inference fast path casts and packs each weight once inside it, computes
the same bits as outside, and reads the weights as they are again once it is left."""
import json

import pytest
import torch
from kernel_helpers import ARCH, ours_and_reference, pin_op

from convnext_backbone import frozen, frozen_weights, native, ops, tuning

pytestmark = pytest.mark.core
BLOCKS = sum(ARCH['depths'])
needs_packing = pytest.mark.skipif(not ops.weight_packing_available(torch.float32),
                                   reason='oneDNN packs no weights here')


def _forward(model, x, dtype):
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == 'bf16'):
        return model(x)


def _count_packs(monkeypatch):
    packs = []
    real = ops.packed
    monkeypatch.setattr(ops, 'packed', lambda w, rows: packs.append(w.shape) or real(w, rows))
    return packs


@needs_packing
@pytest.mark.parametrize('dtype', ['fp32', 'bf16'])
@pytest.mark.parametrize('kernel', [ops.ONEDNN, ops.blocked(16), ops.thread_blocked(16)],
                         ids=str)
def test_frozen_weights_are_packed_once_and_give_the_same_bits(kernel, dtype, tmp_path,
                                                               monkeypatch):
    if dtype == 'bf16' and not ops.weight_packing_available(torch.bfloat16):
        pytest.skip('oneDNN packs no bfloat16 weights here')
    if kernel.name == 'thread_blocked' and not native.available():
        pytest.skip(f'our kernels are not built here: {native.unavailable_reason()}')
    monkeypatch.setattr(ops, 'block_sizes', lambda *args: [16])  # a candidate in every stage
    monkeypatch.setattr(ops, 'thread_block_sizes', lambda *args: [16])
    model, _ = ours_and_reference()
    model.eval()
    x = torch.randn(1, 3, 64, 96)

    def run_frozen():
        with frozen_weights(model):
            return _forward(model, x, dtype)

    pinned = pin_op(tmp_path, lambda: (_forward(model, x, dtype), run_frozen()), 'inference',
                    kernel)
    with tuning.use_policy(pinned):
        packs = _count_packs(monkeypatch)
        expected = _forward(model, x, dtype)
        per_call = len(packs)
        packs.clear()
        with frozen_weights(model):
            first, second = _forward(model, x, dtype), _forward(model, x, dtype)
    assert {d.source for s, d in tuning.decisions().items() if s.op == 'inference'} == {'pinned'}
    assert {s.frozen for s in tuning.decisions() if s.op == 'inference'} == {False, True}
    # oneDNN's own products reorder the weights themselves; the blocked kernels pack them, at
    # every call outside, once for both calls inside
    assert per_call == len(packs) == (0 if kernel == ops.ONEDNN else 2 * BLOCKS)
    for got in (first, second):
        assert all(torch.equal(a, b) for a, b in zip(got, expected))


@needs_packing
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize('width', [16, 40, 48])
def test_products_on_weights_packed_for_other_rows_give_the_same_bits(width, dtype):
    if not ops.weight_packing_available(dtype):
        pytest.skip(f'oneDNN packs no {dtype} weights here')
    gen = torch.Generator().manual_seed(width)
    x, weight, bias = (torch.randn(shape, generator=gen).to(dtype)
                       for shape in ((700, width), (4 * width, width), (4 * width,)))
    outs = [torch.ops.mkldnn._linear_pointwise(x, ops.packed(weight, rows), bias, 'gelu', [],
                                               'none') for rows in (700, 16, 64, 350, 60800)]
    assert all(torch.equal(out, outs[0]) for out in outs[1:])


@needs_packing
def test_weights_changed_after_the_block_are_read_again():
    model, _ = ours_and_reference()
    model.eval()
    x = torch.randn(1, 3, 64, 96)
    with frozen_weights(model):
        before = _forward(model, x, 'fp32')
    with torch.no_grad():
        model.stages[0][0].pwconv1.weight.mul_(2)
    after = _forward(model, x, 'fp32')
    with frozen_weights(model):
        frozen_after = _forward(model, x, 'fp32')
    with tuning.use_policy('plain'):
        plain_after = _forward(model, x, 'fp32')
    assert not torch.allclose(before[0], after[0])
    assert all(torch.equal(a, b) for a, b in zip(after, frozen_after))
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-5) for a, b in zip(after, plain_after))


def test_only_the_weights_of_the_frozen_models_are_kept():
    outer, inner, other = (torch.nn.Linear(2, 2) for _ in range(3))
    made = []

    def make():
        made.append(1)
        return outer.weight * 2

    assert frozen.prepared(outer.weight, 'x2', make) is not frozen.prepared(outer.weight, 'x2',
                                                                             make)
    with frozen_weights(outer):
        with frozen_weights(inner):
            assert frozen.holds(outer.weight) and frozen.holds(inner.bias)
            assert not frozen.holds(other.weight)
            copy = frozen.prepared(outer.weight, 'x2', make)
            assert frozen.prepared(outer.weight, 'x2', make) is copy
        assert not frozen.holds(inner.bias)
        assert frozen.prepared(outer.weight, 'x2', make) is copy
    assert not frozen.holds(outer.weight)
    assert len(made) == 3  # two outside, one inside


def test_frozen_weights_refuse_a_non_module():
    with pytest.raises(TypeError, match='takes an nn.Module, not Tensor'):
        with frozen_weights(torch.zeros(2)):
            pass


def test_a_decisions_file_without_frozen_weights_loads_as_not_frozen(tmp_path):
    shape = tuning.ShapeClass(op='inference', channels=16, hidden=64, dtype='float32',
                              residual='float32', layer_scale=True, grn=False, input_grad=False,
                              rows_log2=9, threads=2)
    entry = dict(shape={k: v for k, v in shape.__dict__.items() if k != 'frozen'},
                 kernel=dict(name='onednn', rows=0))
    path = tmp_path / 'old.json'
    path.write_text(json.dumps(dict(version=tuning.FILE_VERSION, decisions=[entry])))
    with tuning.use_policy(str(path)):
        kernel, _ = tuning.choose(shape, [ops.PLAIN, ops.ONEDNN], lambda k: k)
    assert kernel == ops.ONEDNN and not shape.frozen
    tuning.reset()
