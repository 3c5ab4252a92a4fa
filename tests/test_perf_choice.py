"""Per-machine decisions: fast paths are kept only where faster, bf16 is never a trap."""
import os
import sys
import time
import warnings

import pytest
import torch
import torch.nn.functional as F

from convnext_backbone import ConvNeXt, machine, ops, tuning

pytestmark = pytest.mark.core

AVX2_ONLY = {'fpu', 'sse4_2', 'avx', 'avx2', 'fma', 'f16c'}
AVX512_BF16 = AVX2_ONLY | {'avx512f', 'avx512bw', 'avx512_bf16'}


@pytest.fixture(autouse=True)
def _fresh_state(fresh_decisions):
    machine._WARNED.clear()


def _inputs(rows=96, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, rows, 1, channels, generator=gen)
    shortcut = torch.randn(1, rows, 1, channels, generator=gen)
    params = [torch.randn(shape, generator=gen) for shape in
              ((4 * channels, channels), (4 * channels,), (channels, 4 * channels), (channels,))]
    return x, params, shortcut, torch.rand(channels, generator=gen)


def _slowed(fn, calls):
    def slow(*args, **kwargs):
        calls.append(fn.__name__)
        time.sleep(0.01)
        return fn(*args, **kwargs)
    return slow


def _expected(x, params, shortcut, scale):
    return torch.addcmul(shortcut, F.linear(F.gelu(F.linear(x, *params[:2])), *params[2:]), scale)


def _one_block(x):
    """The one-block kernel (oneDNN on packed weights), a candidate where weights pack."""
    return {ops.blocked(ops.row_count(x))} if ops.weight_packing_available(torch.float32) else set()


def test_a_forced_slow_probe_falls_back_to_the_plain_ops(monkeypatch):
    if not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN: only the plain ops exist here')
    calls = []
    monkeypatch.setattr(ops, 'block_sizes', lambda *args, **kwargs: [16])
    monkeypatch.setattr(ops, 'blocked_residual_mlp', _slowed(ops.blocked_residual_mlp, calls))
    monkeypatch.setattr(ops, 'linear_gelu', _slowed(ops.linear_gelu, calls))
    x, params, shortcut, scale = _inputs()
    with torch.no_grad():
        first = ops.residual_mlp(x, *params, shortcut, scale)
        probed = set(calls)
        calls.clear()
        again = ops.residual_mlp(x, *params, shortcut, scale)
    (decision,) = tuning.decisions().values()
    assert probed == {'blocked_residual_mlp', 'linear_gelu'}  # the fast candidates were timed
    assert decision.kernel == ops.PLAIN and decision.source == 'probe'
    assert set(decision.seconds) == {ops.PLAIN, ops.ONEDNN, ops.ONEDNN_ADD, ops.blocked(16),
                                     *_one_block(x)}
    assert calls == []                                         # and are not run any more
    expected = _expected(x, params, shortcut, scale)
    for got in (first, again):
        assert (got - expected).norm() / expected.norm() < 1e-5


def _slowed_kernels(monkeypatch, delays):
    """ops.run_inference sleeping delays[kernel is plain] seconds before each run."""
    run_inference = ops.run_inference

    def slowed(kernel, *args):
        time.sleep(delays[kernel == ops.PLAIN])
        return run_inference(kernel, *args)
    monkeypatch.setattr(ops, 'run_inference', slowed)


def test_a_drift_where_the_plain_ops_now_win_makes_the_class_probe_again(monkeypatch):
    if not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN: only the plain ops exist here')
    delays = {True: 0.01, False: 0.0}                 # the plain candidate is the slow one
    _slowed_kernels(monkeypatch, delays)
    x, params, shortcut, scale = _inputs()
    with torch.no_grad():
        ops.residual_mlp(x, *params, shortcut, scale)
        ((shape, decision),) = tuning.decisions().items()
        assert decision.kernel != ops.PLAIN
        delays.update({True: 0.0, False: 0.02})       # now the chosen kernel is the slow one
        for _ in range(tuning.SLOW_CALLS):
            ops.residual_mlp(x, *params, shortcut, scale)
    assert tuning.decided(shape) is None               # the next call times them again


def test_a_machine_wide_slowdown_keeps_the_decision_without_probing_again(monkeypatch):
    """Other processes slow every kernel alike: the chosen one still beats the plain ops, so a
    re-probe (every candidate a few runs, under the same load) would only cost time."""
    if not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN: only the plain ops exist here')
    monkeypatch.setattr(tuning, 'NOISY', float('inf'))  # counted runs: no extra rounds
    delays = {True: 0.01, False: 0.0}
    _slowed_kernels(monkeypatch, delays)
    x, params, shortcut, scale = _inputs()
    with torch.no_grad():
        ops.residual_mlp(x, *params, shortcut, scale)
        ((shape, decision),) = tuning.decisions().items()
        version = tuning.version()
        delays.update({True: 0.04, False: 0.03})      # everything 30 ms slower
        runs = []
        run_inference = ops.run_inference
        monkeypatch.setattr(ops, 'run_inference',
                            lambda kernel, *a: (runs.append(kernel), run_inference(kernel, *a))[1])
        for _ in range(2 * tuning.SLOW_CALLS):
            ops.residual_mlp(x, *params, shortcut, scale)
    assert tuning.decided(shape) == decision.kernel and tuning.version() == version
    # one check (plain and the kernel, ROUNDS rounds: the runs agree) after SLOW_CALLS slow
    # calls; then the slower time is the normal one: no more checks, and never a probe of every
    # candidate
    assert runs.count(ops.PLAIN) == tuning.ROUNDS
    assert len(runs) == 2 * tuning.SLOW_CALLS + 2 * tuning.ROUNDS


class _LoadedClock:
    """A clock for the tuner in which each run of a kernel takes its own fixed time, plus what a
    scripted load adds to some of its runs (other processes holding the cores)."""

    def __init__(self, seconds, load):
        self.now = 0.0
        self.seconds = seconds      # kernel name -> seconds of an undisturbed run
        self.load = load            # kernel name -> extra seconds of its n-th run (0 after)
        self.runs = {name: 0 for name in seconds}

    def perf_counter(self):
        return self.now

    def run(self, kernel):
        n = self.runs[kernel.name]
        self.runs[kernel.name] += 1
        extra = self.load.get(kernel.name, [])
        self.now += self.seconds[kernel.name] + (extra[n] if n < len(extra) else 0.0)
        return kernel.name


def _probe_under(monkeypatch, seconds, load):
    clock = _LoadedClock(seconds, load)
    monkeypatch.setattr(tuning, 'time', clock)
    shape = tuning.ShapeClass('inference', 8, 32, 'float32', 'float32', True, False, False, 5, 1)
    kernel, result = tuning.choose(shape, [ops.PLAIN, ops.ONEDNN], clock.run)
    return kernel, result, clock.runs


def test_a_probe_disturbed_by_a_load_keeps_the_kernel_that_is_faster_without_it(monkeypatch):
    """The plain ops take 5 ms, the candidate 8 ms; a load adds 30, 10 and 20 ms to the plain
    kernel's first three timed runs. Its best of three (15 ms) would lose to 8 ms; the spread of
    its runs shows the load, the probe adds rounds, and the undisturbed runs decide."""
    kernel, result, runs = _probe_under(
        monkeypatch, {'plain': 0.005, 'onednn': 0.008}, {'plain': [0.0, 0.030, 0.010, 0.020]})
    assert kernel == ops.PLAIN and result == 'plain'
    assert tuning.ROUNDS + 1 < runs['plain'] <= tuning.MAX_ROUNDS + 1


def test_a_candidate_whose_median_loses_is_not_kept_for_one_lucky_run(monkeypatch):
    """The candidate runs in 4.5 ms once and in 7.5 ms every other time (a load on all its other
    runs), the plain kernel in 5 ms: the best runs say candidate, the medians say plain."""
    kernel, _, _ = _probe_under(
        monkeypatch, {'plain': 0.005, 'onednn': 0.0045},
        {'onednn': [0.003, 0.003, 0.0] + [0.003] * 20})
    assert kernel == ops.PLAIN


def test_a_quiet_probe_takes_rounds_plus_the_warm_one_and_keeps_the_faster(monkeypatch):
    kernel, _, runs = _probe_under(monkeypatch, {'plain': 0.005, 'onednn': 0.004}, {})
    assert kernel == ops.ONEDNN
    assert runs == {'plain': tuning.ROUNDS + 1, 'onednn': tuning.ROUNDS + 1}


@pytest.mark.parametrize('with_scale', [True, False], ids=['layer scale', 'no scale'])
def test_the_residual_add_inside_the_product_is_a_candidate_in_float32_with_or_without_scale(
        monkeypatch, with_scale):
    if not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN: only the plain ops exist here')
    monkeypatch.setattr(ops, 'block_sizes', lambda *args, **kwargs: [16])
    x, params, shortcut, scale = _inputs()
    scale = scale if with_scale else None
    with torch.no_grad():
        got = ops.residual_mlp(x, *params, shortcut, scale)
    ((shape, decision),) = tuning.decisions().items()
    assert shape.layer_scale is with_scale
    expected = {ops.PLAIN, ops.ONEDNN, ops.ONEDNN_ADD, ops.blocked(16), *_one_block(x)}
    assert set(decision.seconds) == expected
    want = _expected(x, params, shortcut, scale if with_scale else torch.ones(8))
    assert (got - want).norm() / want.norm() < 1e-5


@pytest.mark.parametrize('rows', [16, 10_000], ids=['blocks', 'one block'])
def test_the_blocked_kernel_packs_each_weight_once_per_call_and_equals_the_plain_ops(
        monkeypatch, rows):
    if not ops.weight_packing_available(torch.float32):
        pytest.skip('oneDNN does not pack weights here')
    packed = []
    real = ops.packed
    monkeypatch.setattr(ops, 'packed',
                        lambda w, r: packed.append((tuple(w.shape), r)) or real(w, r))
    x, params, shortcut, scale = _inputs()
    with torch.no_grad():
        got = ops.run_inference(ops.blocked(rows), x, *params, shortcut, scale)
    n = ops.row_count(x)
    assert n > 16 * 2  # several blocks of 16
    assert packed == [((32, 8), min(rows, n)), ((8, 32), min(rows, n))]  # not once per block
    want = _expected(x, params, shortcut, scale)
    assert (got - want).norm() / want.norm() < 1e-5


def test_the_plain_policy_runs_no_fast_path(monkeypatch):
    calls = []
    monkeypatch.setattr(ops, 'linear_gelu', _slowed(ops.linear_gelu, calls))
    x, params, shortcut, scale = _inputs()
    with torch.no_grad(), tuning.use_policy('plain'):
        ops.residual_mlp(x, *params, shortcut, scale)
    assert calls == [] and tuning.decisions() == {}
    monkeypatch.setenv('CONVNEXT_FAST_PATHS', 'fastest')
    with pytest.raises(ValueError, match="CONVNEXT_FAST_PATHS='fastest' is neither.*auto, plain"):
        tuning.policy()


def test_training_choice_times_forward_and_backward_without_touching_the_weights(monkeypatch):
    monkeypatch.setattr(tuning, 'NOISY', float('inf'))  # counted runs: no extra rounds
    if not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN: only the plain ops exist here')
    monkeypatch.setattr(ops, 'block_sizes', lambda *args, **kwargs: [16])
    backward_rows = []
    backward = ops._MLP.backward
    monkeypatch.setattr(ops._MLP, 'backward', staticmethod(
        lambda ctx, grad: backward_rows.append(ctx.rows) or backward(ctx, grad)))
    x, params, _, _ = _inputs(rows=50)
    x.requires_grad_()
    for p in params:
        p.requires_grad_()
    out = ops.mlp(x, *params)
    ((shape, decision),) = tuning.decisions().items()
    assert shape.op == 'training' and shape.input_grad
    assert set(decision.seconds) == {ops.PLAIN, ops.ONEDNN, ops.blocked(16)}
    # every round ran the backward of each fast candidate: onednn (one block of 50 rows), blocked
    assert sorted(set(backward_rows)) == [16, 50]
    assert len(backward_rows) == 2 * (tuning.ROUNDS + 1)
    assert decision.kernel in decision.seconds
    assert x.grad is None and all(p.grad is None for p in params)
    out.sum().backward()
    expected = torch.autograd.grad(
        F.linear(F.gelu(F.linear(x, *params[:2])), *params[2:]).sum(), params)
    for p, e in zip(params, expected):
        assert (p.grad - e).norm() / e.norm() < 1e-5


@pytest.mark.parametrize('flags,isa,native', [
    (AVX2_ONLY, None, False),
    (AVX512_BF16, None, True),
    (AVX512_BF16, 'AVX2', False),             # oneDNN kept off the bf16 instructions
    (AVX2_ONLY | {'amx_bf16'}, 'ALL', True),
])
def test_native_bf16_needs_the_flag_and_a_onednn_allowed_to_use_it(monkeypatch, flags, isa,
                                                                   native):
    monkeypatch.delenv('DNNL_MAX_CPU_ISA', raising=False)
    if isa is None:
        monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    else:
        monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', isa)
    with machine.simulate_cpu(flags):
        assert machine.native_bf16() is native


def test_bf16_autocast_warns_once_on_a_cpu_without_native_bf16(monkeypatch):
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    model = ConvNeXt(dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
        with machine.simulate_cpu(AVX2_ONLY):
            with pytest.warns(RuntimeWarning, match='without native bf16') as record:
                model(x)
            with warnings.catch_warnings():
                warnings.simplefilter('error')
                model(x)                          # once per process
        message = next(str(w.message) for w in record if 'native bf16' in str(w.message))
        assert 'avx512_bf16 or amx_bf16' in message
        assert f'{machine.BF16_SLOWDOWN_WITHOUT_NATIVE}x slower' in message
        machine._WARNED.clear()
        with machine.simulate_cpu(AVX512_BF16), warnings.catch_warnings():
            warnings.simplefilter('error')
            model(x)                              # native bf16: no warning
    with machine.simulate_cpu(AVX2_ONLY), warnings.catch_warnings():
        warnings.simplefilter('error')
        model(x)                                  # float32: no warning


@pytest.mark.parametrize('flags,expected', [(AVX2_ONLY, ['fp32']),
                                            (AVX512_BF16, ['fp32', 'bf16'])])
def test_the_benchmark_chooses_bf16_only_where_it_is_native(monkeypatch, flags, expected):
    monkeypatch.delenv('ONEDNN_MAX_CPU_ISA', raising=False)
    sys.modules.pop('benchmark', None)
    import benchmark
    with machine.simulate_cpu(flags):
        assert benchmark.parse_args([]).dtypes == expected


def test_cache_sizes_and_the_block_rows_follow_the_machine(monkeypatch):
    l2 = os.sysconf('SC_LEVEL2_CACHE_SIZE') if 'SC_LEVEL2_CACHE_SIZE' in os.sysconf_names else 0
    if l2 > 0 and os.path.isdir('/sys/devices/system/cpu/cpu0/cache'):
        assert machine.cache_bytes(2) == l2  # the kernel's L2 size, as the C library reads it
    monkeypatch.setattr(machine, 'cache_bytes', lambda level: 2**20)
    # (rows, 384) float32 blocks filling 2 x 1 MiB of L2: 1365 rows, down to a multiple of 64.
    assert ops.block_rows(384, 4, threads=2) == 1344
    assert ops.block_rows(3072, 4, threads=1) == 64  # at least one 64-row block


def test_the_training_probe_inside_with_cp_leaves_gradients_equal():
    # The first training forward probes inside torch.utils.checkpoint; its recomputation must
    # still match the original forward.
    arch = dict(depths=(2, 1, 1, 1), dims=(16, 16, 16, 16))
    cp = ConvNeXt(arch, with_cp=True).train()
    plain = ConvNeXt(arch).train()
    plain.load_state_dict(cp.state_dict())
    x = torch.randn(2, 3, 64, 64)
    for model in (cp, plain):
        sum(o.sum() for o in model(x)).backward()
    assert tuning.decisions()
    for (name, a), b in zip(cp.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-5, atol=1e-6), name


def test_the_probe_times_several_block_sizes_around_the_l2_size(monkeypatch):
    monkeypatch.setattr(ops, 'block_rows', lambda *args, **kwargs: 128)
    assert ops.block_sizes(10_000, 384, 4) == [64, 128, 256, 512]
    assert ops.block_sizes(600, 384, 4) == [64, 128, 256]  # at least two blocks each
    assert ops.block_sizes(100, 384, 4) == []
    if not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN: only the plain ops exist here')
    x, params, shortcut, scale = _inputs(rows=600)
    with torch.no_grad():
        ops.residual_mlp(x, *params, shortcut, scale)
    ((_, decision),) = tuning.decisions().items()
    assert set(decision.seconds) == {ops.PLAIN, ops.ONEDNN, ops.ONEDNN_ADD, ops.blocked(64),
                                     ops.blocked(128), ops.blocked(256), *_one_block(x)}


def test_training_decisions_are_kept_through_a_slow_drift_and_with_cp_recomputation(
        monkeypatch):
    """A training kernel replaced between a with_cp forward and its recomputation in backward
    would save other tensors (torch.utils.checkpoint refuses that): training decisions are not
    re-probed, however slow their calls get."""
    if not ops.mkldnn_linear_available(torch.float32):
        pytest.skip('no oneDNN: only the plain ops exist here')
    run_training = ops.run_training

    def slow_plain(kernel, *args):  # a fast kernel is chosen: only those are watched
        if kernel == ops.PLAIN:
            time.sleep(0.01)
        return run_training(kernel, *args)
    monkeypatch.setattr(ops, 'run_training', slow_plain)
    model = ConvNeXt(dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8)), with_cp=True).train()
    x = torch.randn(1, 3, 64, 64)
    with tuning.use_policy('auto'):
        sum(o.sum() for o in model(x)).backward()             # decides each shape class
        decided = tuning.decisions()
        assert any(shape.op == 'training' and d.kernel != ops.PLAIN
                   for shape, d in decided.items())
        version = tuning.version()
        monkeypatch.setattr(tuning, 'DRIFT', 0.0)               # every call counts as slow
        monkeypatch.setattr(tuning, 'SLOW_CALLS', 1)
        for _ in range(3):
            sum(o.sum() for o in model(x)).backward()
    assert tuning.version() == version
    assert {s: d.kernel for s, d in tuning.decisions().items()} == \
        {s: d.kernel for s, d in decided.items()}
