"""Fast paths agree with the plain reference: oneDNN products, blocked MLPs, bf16, compile.

A test of a kernel pins it (a decisions file, or ``ops.run_inference`` / ``ops.run_training``
with that kernel) and checks, through the ``ran`` fixture, that it is what ran, the training
backward included, not silently the plain ops.
"""
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from kernel_helpers import pin_op, training_mlp_ops
from reference import RefConvNeXt, randomise_

from convnext_backbone import ConvNeXt, native, ops, tuning

pytestmark = [pytest.mark.core, pytest.mark.usefixtures('fresh_decisions')]

V1 = dict(depths=(2, 1, 3, 1), dims=(16, 24, 32, 48))
V2 = dict(V1, use_grn=True)
BLOCKS = sum(V1['depths'])
ARCHS = pytest.mark.parametrize('arch', [V1, V2], ids=['v1', 'v2'])
ONEDNN = pytest.mark.skipif(not ops.mkldnn_linear_available(torch.float32),
                            reason='no oneDNN here: only the plain ops exist')


@pytest.fixture
def ran(monkeypatch):
    """``(name, rows per block, rows)`` of every call of ops' oneDNN entry points and of the
    training kernels' backward, in order (rows 0 where there are no blocks)."""
    calls = []

    def spy(name, real):
        def call(*args, **kwargs):
            if 'blocked' in name:
                x, rows = args[0], kwargs.get('rows', args[-1])
                calls.append((name, rows, x.numel() // x.shape[-1]))
            else:
                calls.append((name, 0, 0))
            return real(*args, **kwargs)
        return call

    for name in ('linear', 'linear_gelu', 'linear_add', 'blocked_residual_mlp', 'blocked_mlp',
                 'thread_blocked_residual_mlp'):
        monkeypatch.setattr(ops, name, spy(name, getattr(ops, name)))
    backward = ops._MLP.backward

    def spy_backward(ctx, grad):
        calls.append(('backward', ctx.rows, grad.shape[0]))
        return backward(ctx, grad)

    monkeypatch.setattr(ops._MLP, 'backward', staticmethod(spy_backward))
    return calls


def _names(calls):
    return {name for name, _, _ in calls}


def _pair(arch, seed=0):
    """Our backbone and the plain reference, holding the same random weights."""
    ref = randomise_(RefConvNeXt(arch['depths'], arch['dims'], v2=arch.get('use_grn', False)),
                     seed)
    model = ConvNeXt(arch)
    model.load_state_dict(ref.state_dict(), strict=True)
    return model, ref


def _rel(outs, refs):
    return max(((a.float() - b.float()).norm() / b.float().norm()).item()
               for a, b in zip(outs, refs))


def _loss(outs):
    # Different weights per map and position, so that every output element matters.
    return sum((o.float() * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


#: What each inference kernel calls per block (the plain one: no oneDNN at all).
INFERENCE_CALLS = {'plain': set(), 'onednn': {'linear_gelu', 'linear'},
                   'onednn_add': {'linear_gelu', 'linear_add'}, 'blocked': {'blocked_residual_mlp'},
                   'thread_blocked': {'thread_blocked_residual_mlp'}}


@pytest.mark.parametrize('arch,kernel', [
    (V1, ops.PLAIN), (V1, ops.ONEDNN), (V1, ops.ONEDNN_ADD), (V1, ops.blocked(16)),
    (V1, ops.thread_blocked(16)),
    (V2, ops.PLAIN), (V2, ops.ONEDNN), (V2, ops.ONEDNN_ADD),  # V2: no layer scale, GRN: no blocks
], ids=['v1-plain', 'v1-onednn', 'v1-onednn_add', 'v1-blocked', 'v1-thread_blocked', 'v2-plain',
        'v2-onednn', 'v2-onednn_add'])
def test_inference_by_each_kernel_matches_reference(arch, kernel, ran, tmp_path, monkeypatch):
    if kernel != ops.PLAIN and not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN here: only the plain ops exist')
    if kernel.name == 'thread_blocked' and not native.available():
        pytest.skip(f'our kernels are not built here: {native.unavailable_reason()}')
    monkeypatch.setattr(ops, 'block_sizes', lambda *args: [16])  # a candidate in every stage
    monkeypatch.setattr(ops, 'thread_block_sizes', lambda *args: [16])
    model, ref = _pair(arch)
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        pinned = pin_op(tmp_path, lambda: model(x), 'inference', kernel)
        ran.clear()
        with tuning.use_policy(pinned):
            outs = model(x)
        expected = ref(x)
    decisions = tuning.decisions()
    assert {(s.op, d.kernel, d.source) for s, d in decisions.items()
            if s.op not in ('head', 'output')} == {('inference', kernel, 'pinned')}
    assert _names(ran) == INFERENCE_CALLS[kernel.name]
    assert len(ran) == BLOCKS * len(INFERENCE_CALLS[kernel.name])  # in every block
    assert all(rows == kernel.rows for name, rows, _ in ran if 'blocked' in name)
    assert _rel(outs, expected) < 1e-5


@pytest.mark.parametrize('kernel', [ops.PLAIN, ops.ONEDNN, ops.blocked(16)], ids=str)
def test_training_by_each_kernel_matches_reference_gradients(kernel, ran, tmp_path, monkeypatch):
    if kernel != ops.PLAIN and not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN here: only the plain ops exist')
    monkeypatch.setattr(ops, 'block_sizes', lambda *args: [16])  # a candidate in every stage
    model, ref = _pair(V1)
    x = torch.randn(2, 3, 64, 64)
    pinned = pin_op(tmp_path, lambda: _loss(copy.deepcopy(model).train()(x)).backward(),
                    'training', kernel)
    ran.clear()
    with tuning.use_policy(pinned):
        _loss(model.train()(x)).backward()
    _loss(ref.train()(x)).backward()
    assert {(s.op, d.kernel, d.source) for s, d in tuning.decisions().items()
            if s.op != 'training_dwconv'} == {('training', kernel, 'pinned')}
    if kernel == ops.PLAIN:
        assert ran == []
    else:  # each block's forward and backward ran the kernel, in blocks of its rows
        assert sorted(name for name, _, _ in ran) == ['backward'] * BLOCKS + [
            'blocked_mlp'] * BLOCKS
        for _, rows, total in ran:
            assert rows >= total if kernel == ops.ONEDNN else rows == kernel.rows
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        expected = grads[name].grad
        assert (p.grad - expected).norm() / expected.norm() < 1e-4, name


@ARCHS
def test_training_gradients_match_reference_under_the_kernels_chosen_here(arch):
    model, ref = _pair(arch)
    x = torch.randn(2, 3, 64, 64)
    _loss(model.train()(x)).backward()
    _loss(ref.train()(x)).backward()
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        expected = grads[name].grad
        assert (p.grad - expected).norm() / expected.norm() < 1e-4, name


#: The training kernels, on 3 * 5 * 7 = 105 rows: blocks of 7 and 16 leave a partial last block,
#: 1000 is one block.
TRAINING_KERNELS = [ops.PLAIN, ops.ONEDNN, ops.blocked(1), ops.blocked(7), ops.blocked(16),
                    ops.blocked(1000)]


@pytest.mark.parametrize('kernel', TRAINING_KERNELS, ids=str)
@pytest.mark.parametrize('input_grad', [True, False])
def test_each_training_kernel_runs_its_own_forward_and_backward(kernel, input_grad, ran):
    if kernel != ops.PLAIN and not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN here: only the plain ops exist')
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 12, generator=gen).requires_grad_(input_grad)
    params = _mlp_params(12, gen, requires_grad=True)
    grad = torch.randn(3, 5, 7, 12, generator=gen)
    inputs = [x] + params if input_grad else params
    got = ops.run_training(kernel, x, *params)
    got_grads = torch.autograd.grad(got, inputs, grad)
    expected = F.linear(F.gelu(F.linear(x, *params[:2])), *params[2:])
    expected_grads = torch.autograd.grad(expected, inputs, grad)
    rows = {'plain': 0, 'onednn': 105}.get(kernel.name, kernel.rows)
    assert ran == ([] if kernel == ops.PLAIN else
                   [('blocked_mlp', rows, 105), ('backward', rows, 105)])
    assert (got - expected).norm() / expected.norm() < 1e-5
    for a, b in zip(got_grads, expected_grads):
        assert (a - b).norm() / b.norm() < 1e-5


@ONEDNN
@pytest.mark.parametrize('fn,args', [
    (ops.linear, ()), (ops.linear_gelu, ()), (ops.linear_add, ('other',))])
def test_onednn_linear_ops_equal_the_plain_ops(fn, args):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, generator=gen)
    weight, bias = torch.randn(16, 8, generator=gen), torch.randn(16)
    other = torch.randn(3, 4, 16, generator=gen)
    expected = F.linear(x, weight, bias)
    expected = {ops.linear: expected, ops.linear_gelu: F.gelu(expected),
                ops.linear_add: other + expected}[fn]
    with torch.no_grad():
        got = fn(x, weight, bias, *[other for _ in args])
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_oneDNN_probe_answers_per_dtype():
    assert ops.mkldnn_linear_available(torch.float16) is False
    assert ops.mkldnn_linear_available(torch.float64) is False
    assert isinstance(ops.mkldnn_linear_available(torch.float32), bool)


@ARCHS
def test_bf16_autocast_inference_is_close_to_the_fp32_reference(arch):
    model, ref = _pair(arch)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)
        with torch.autocast('cpu', torch.bfloat16):
            outs = model(x)
    assert all(torch.isfinite(o).all() for o in outs)
    assert _rel(outs, expected) < 3e-2
    if not arch.get('use_grn'):
        # V1: the float32 layer scale keeps the residual stream and the outputs in float32,
        # as autocast makes of the official code.
        assert all(o.dtype == torch.float32 for o in outs)


@ARCHS
def test_bf16_autocast_training_gradients_are_close_to_fp32(arch):
    model, ref = _pair(arch)
    x = torch.randn(2, 3, 64, 64)
    _loss(ref.train()(x)).backward()
    with torch.autocast('cpu', torch.bfloat16):
        loss = _loss(model.train()(x))
    loss.backward()
    grads = dict(ref.named_parameters())
    for name in ('downsample_layers.0.0.weight', 'stages.2.1.pwconv1.weight', 'norm3.weight'):
        got, expected = dict(model.named_parameters())[name].grad, grads[name].grad
        assert got.dtype == torch.float32
        assert (got - expected).norm() / expected.norm() < 5e-2, name


def test_torch_compile_matches_reference():
    # aot_eager traces the model through dynamo and AOTAutograd as inductor does, without
    # generating C++ (seconds instead of minutes); tools/benchmark.py --compile checks inductor.
    model, ref = _pair(V1)
    model.eval()
    compiled = torch.compile(copy.deepcopy(model), backend='aot_eager', fullgraph=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert _rel(compiled(x), ref(x)) < 1e-5


def test_torch_compile_training_gradients_match_eager():
    model, _ = _pair(V1)
    compiled = torch.compile(copy.deepcopy(model).train(), backend='aot_eager')
    x = torch.randn(1, 3, 64, 64)
    _loss(model.train()(x)).backward()
    _loss(compiled(x)).backward()
    eager = dict(model.named_parameters())
    for name, p in compiled.named_parameters():
        expected = eager[name.replace('_orig_mod.', '')].grad
        assert (p.grad - expected).norm() / expected.norm() < 1e-4, name


def _mlp_params(channels, gen, requires_grad=False):
    shapes = ((4 * channels, channels), (4 * channels,), (channels, 4 * channels), (channels,))
    return [torch.randn(shape, generator=gen).requires_grad_(requires_grad) for shape in shapes]


@pytest.mark.parametrize('kernel', [ops.PLAIN, ops.ONEDNN, ops.ONEDNN_ADD, ops.blocked(3),
                                    ops.blocked(64)], ids=str)
@pytest.mark.parametrize('with_scale', [True, False], ids=['gamma', 'no scale'])
def test_each_inference_kernel_runs_itself_and_equals_the_plain_block_tail(kernel, with_scale,
                                                                           ran):
    if kernel != ops.PLAIN and not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN here: only the plain ops exist')
    gen = torch.Generator().manual_seed(0)
    x, shortcut = torch.randn(2, 3, 11, 20, generator=gen), torch.randn(2, 3, 11, 20, generator=gen)
    params = _mlp_params(20, gen)
    scale = torch.rand(20, generator=gen) if with_scale else None
    expected = F.linear(F.gelu(F.linear(x, *params[:2])), *params[2:])
    expected = shortcut + (expected * scale if with_scale else expected)
    with torch.no_grad():
        got = ops.run_inference(kernel, x, *params, shortcut, scale)
    assert {(name, rows) for name, rows, _ in ran} == {
        (name, kernel.rows) for name in INFERENCE_CALLS[kernel.name]}
    assert got.shape == expected.shape
    assert (got - expected).norm() / expected.norm() < 1e-5


def test_the_residual_add_inside_the_product_refuses_a_layer_scale_outside_float32():
    gen = torch.Generator().manual_seed(0)
    x, shortcut = torch.randn(2, 3, 11, 20, generator=gen), torch.randn(2, 3, 11, 20, generator=gen)
    params, scale = _mlp_params(20, gen), torch.rand(20, generator=gen)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        with pytest.raises(ValueError, match='cannot compute this block tail'):
            ops.run_inference(ops.ONEDNN_ADD, x, *params, shortcut.bfloat16(), scale)
        assert ops.ONEDNN_ADD not in ops.inference_kernels(x, params[0], shortcut.bfloat16(),
                                                            scale, False)


def test_blocked_residual_mlp_under_bf16_autocast_keeps_a_float32_residual_stream():
    gen = torch.Generator().manual_seed(0)
    x, shortcut = torch.randn(1, 4, 9, 16, generator=gen), torch.randn(1, 4, 9, 16, generator=gen)
    params, scale = _mlp_params(16, gen), torch.rand(16, generator=gen)
    expected = shortcut + scale * F.linear(F.gelu(F.linear(x, *params[:2])), *params[2:])
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
        got = ops.blocked_residual_mlp(x, *params, shortcut, scale, rows=8)
    assert got.dtype == torch.float32
    assert (got - expected).norm() / expected.norm() < 3e-2


@pytest.mark.parametrize('rows', [0, -4])
def test_blocked_mlps_refuse_a_non_positive_block(rows):
    x = torch.randn(4, 8)
    params = _mlp_params(8, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=f'rows={rows}'):
        ops.blocked_mlp(x, *params, rows=rows)
    with pytest.raises(ValueError, match=f'rows={rows}'):
        ops.blocked_residual_mlp(x, *params, x, None, rows=rows)


@pytest.mark.skipif(not ops.weight_packing_available(), reason='oneDNN packs no weights here')
@pytest.mark.parametrize('rows', [40, 16], ids=['one-block', 'blocked'])
def test_the_training_mlp_packs_weights_only_where_blocks_share_them(rows):
    names = training_mlp_ops(rows, total=40, width=16)
    reorders = names.count('mkldnn::_reorder_linear_weight')
    assert reorders == 0 if rows == 40 else reorders >= 4  # blocked: w1, w2, then both^T
    assert names.count('_MLPBackward') == 1


# -- saving decisions: a re-probe is written ----------------------------------------------------
def test_a_re_probe_is_saved_and_a_pinned_rerun_repeats_the_new_kernel(tmp_path):
    """A decision replaced by a drift re-probe leaves the number of decisions as it was; the
    work dir's fast_paths.json must still hold the new kernel, and pinning it must run it."""
    import time
    import types

    from mmengine.logging import MMLogger

    from convnext_backbone import tuning
    from convnext_backbone.engine.hooks import FastPathsHook

    shape = tuning.ShapeClass('inference', 8, 32, 'float32', 'float32', True, False, False, 5, 1)
    plain, fused = tuning.Kernel('plain'), tuning.Kernel('onednn')
    delay = {plain: 0.02, fused: 0.0}

    def run(kernel):
        time.sleep(delay[kernel])
        return kernel

    hook = FastPathsHook()
    runner = types.SimpleNamespace(work_dir=str(tmp_path), logger=MMLogger.get_current_instance())
    saved = tmp_path / 'fast_paths.json'

    def file_kernel():
        return [tuning.Kernel(**e['kernel']) for e in json.loads(saved.read_text())['decisions']]

    tuning.reset()
    try:
        with tuning.use_policy('auto'):
            assert tuning.choose(shape, [plain, fused], run)[0] == fused
            hook.after_train_epoch(runner)
            assert file_kernel() == [fused]
            delay[plain], delay[fused] = 0.0, 0.02   # the fused kernel slows down here
            ran = [tuning.choose(shape, [plain, fused], run)[0]
                   for _ in range(tuning.SLOW_CALLS + 1)]
            assert ran[-1] == plain and len(tuning.decisions()) == 1  # re-probed, same count
            hook.after_train_epoch(runner)
        assert file_kernel() == [plain]
        tuning.reset()                                      # a new run, pinned to the file
        with tuning.use_policy(str(saved)):
            assert tuning.choose(shape, [plain, fused], run)[0] == plain
            assert tuning.decisions()[shape].source == 'pinned'
    finally:
        tuning.reset()
