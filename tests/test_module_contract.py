"""The backbone behaves like any nn.Module: its blocks call their modules, so hooks, swapped or
wrapped modules and quantization take effect; the fast path runs only where it computes the same
function, and runs are reproducible (deterministic mode, pinned kernel decisions)."""
import copy
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT
from reference import RefConvNeXt, randomise_
from torch import nn

from convnext_backbone import ConvNeXt, fast_path, native, ops, tuning

pytestmark = [pytest.mark.core, pytest.mark.usefixtures('fresh_decisions')]

V1 = dict(depths=(2, 1, 3, 1), dims=(16, 24, 32, 48))
V2 = dict(V1, use_grn=True)
ARCHS = pytest.mark.parametrize('arch', [V1, V2], ids=['v1', 'v2'])
ONEDNN = pytest.mark.skipif(not ops.mkldnn_linear_available(torch.float32),
                            reason='no oneDNN here: there is no fast path to guard')


def _pair(arch, seed=0, act=None):
    ref = randomise_(RefConvNeXt(arch['depths'], arch['dims'], v2=arch.get('use_grn', False),
                                 act=act), seed)
    model = ConvNeXt(arch)
    model.load_state_dict(ref.state_dict(), strict=True)
    return model, ref


def _rel(outs, refs):
    return max(((a.float() - b.float()).norm() / b.float().norm()).item()
               for a, b in zip(outs, refs))


def _blocks(model):
    return [block for stage in model.stages for block in stage]


# -- the fast path is real, and taken where nothing rules it out ----------------------------------
@ONEDNN
def test_an_unmodified_block_in_eval_takes_the_fast_path():
    model, ref = _pair(V1)
    x = torch.randn(1, 3, 64, 64)
    block = model.stages[0][0]
    with torch.no_grad():
        assert block.why_not_fast_path(torch.randn(1, 16, 16, 16)) == ''
        outs = model.eval()(x)
    assert {shape.op for shape in tuning.decisions()} == (
        {'inference', 'head', 'output'} if native.available() else {'inference'})
    assert _rel(outs, ref(x)) < 1e-5


# -- hooks ----------------------------------------------------------------------------------------
@ARCHS
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_forward_hooks_fire_on_every_module_of_every_block(arch, mode):
    model, ref = _pair(arch)
    names = ['dwconv', 'norm', 'pwconv1', 'act', 'pwconv2'] + (['grn'] if arch.get('use_grn')
                                                              else [])
    calls = {name: 0 for name in names}
    for block in _blocks(model):
        for name in names:
            getattr(block, name).register_forward_hook(
                lambda module, args, out, name=name: calls.__setitem__(name, calls[name] + 1))
    x = torch.randn(2, 3, 64, 64)
    getattr(model, mode)()
    ref.train(mode == 'train')
    with torch.set_grad_enabled(mode == 'train'):
        outs = model(x)
    assert calls == {name: len(_blocks(model)) for name in names}
    assert _rel(outs, ref(x)) < 1e-5


def test_a_hook_on_one_module_sees_what_the_next_module_receives():
    model, _ = _pair(V1)
    block = model.stages[0][0]
    seen = {}
    block.act.register_forward_hook(lambda m, args, out: seen.__setitem__('act', out))
    block.pwconv2.register_forward_pre_hook(lambda m, args: seen.__setitem__('pw2', args[0]))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, 32, 32))
    assert torch.equal(seen['act'], seen['pw2'])


# -- swapped and wrapped modules, quantization ----------------------------------------------------
@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_a_swapped_activation_changes_the_output(mode):
    model, _ = _pair(V1)
    _, relu_ref = _pair(V1, act=F.relu)
    x = torch.randn(1, 3, 64, 64)
    getattr(model, mode)()
    with torch.set_grad_enabled(mode == 'train'):
        gelu_outs = model(x)
        for block in _blocks(model):
            block.act = nn.ReLU()
        relu_outs = model(x)
    assert _rel(relu_outs, gelu_outs) > 1e-2
    assert _rel(relu_outs, relu_ref.train(mode == 'train')(x)) < 1e-5


class LoRALinear(nn.Module):
    """A LoRA-style wrapper: ``base(x) + up(down(x))``."""

    def __init__(self, base: nn.Linear, rank: int = 2):
        super().__init__()
        self.base = base
        self.down = nn.Linear(base.in_features, rank, bias=False)
        self.up = nn.Linear(rank, base.out_features, bias=False)
        nn.init.normal_(self.up.weight, std=0.5)

    def forward(self, x):
        return self.base(x) + self.up(self.down(x))


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_a_lora_wrapper_around_pwconv1_is_used(mode):
    model, ref = _pair(V1)
    x = torch.randn(1, 3, 64, 64)
    for block, ref_block in zip(_blocks(model), [b for s in ref.stages for b in s]):
        block.pwconv1 = LoRALinear(block.pwconv1)
        with torch.no_grad():  # the same function, merged into the reference's weight
            ref_block.pwconv1.weight += block.pwconv1.up.weight @ block.pwconv1.down.weight
    getattr(model, mode)()
    with torch.set_grad_enabled(mode == 'train'):
        outs = model(x)
    assert _rel(outs, ref(x)) < 1e-5
    if mode == 'train':
        sum(o.sum() for o in outs).backward()
        assert all(b.pwconv1.up.weight.grad.abs().sum() > 0 for b in _blocks(model))


@pytest.mark.skipif('fbgemm' not in torch.backends.quantized.supported_engines
                    and 'x86' not in torch.backends.quantized.supported_engines,
                    reason='this torch has no x86 quantized engine')
def test_dynamic_quantization_of_the_linear_layers_runs_close_to_fp32():
    model, _ = _pair(V1)
    model.eval()
    quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear},
                                                       dtype=torch.qint8)
    assert type(quantized.stages[0][0].pwconv1) is not nn.Linear  # really swapped
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), quantized(x)
    error = _rel(got, expected)
    assert 0 < error < 0.1


# -- each guard condition falls back to the modules ------------------------------------------------
class SubLinear(nn.Linear):
    pass


class SubTensor(torch.Tensor):
    pass


def _swap_linear(model):
    for block in _blocks(model):
        old = block.pwconv1
        block.pwconv1 = SubLinear(old.in_features, old.out_features)
        block.pwconv1.load_state_dict(old.state_dict())


def _drop_bias(model, ref):
    for block, ref_block in zip(_blocks(model), [b for s in ref.stages for b in s]):
        old = block.pwconv2
        block.pwconv2 = nn.Linear(old.in_features, old.out_features, bias=False)
        block.pwconv2.weight = old.weight
        with torch.no_grad():
            ref_block.pwconv2.bias.zero_()


def _hook_every(kind, name):
    def apply(model):
        for block in _blocks(model):
            module = getattr(block, name)
            if kind == 'forward':
                module.register_forward_hook(lambda m, args, out: None)
            elif kind == 'pre':
                module.register_forward_pre_hook(lambda m, args: None)
            else:
                module.register_full_backward_hook(lambda m, gin, gout: None)
    return apply


GUARDS = {
    'pwconv1 subclass': (_swap_linear, 'pwconv1 is a SubLinear, not an nn.Linear'),
    'pwconv2 without bias': (_drop_bias, 'pwconv2 has no bias'),
    'tanh GELU': (None, "act is GELU(approximate='tanh'), not nn.GELU()"),
    'forward hook on pwconv1': (_hook_every('forward', 'pwconv1'), 'pwconv1 has hooks'),
    'pre-forward hook on act': (_hook_every('pre', 'act'), 'act has hooks'),
    'backward hook on pwconv2': (_hook_every('backward', 'pwconv2'), 'pwconv2 has hooks'),
    'global forward hook': (None, 'global module hooks are registered'),
    'deterministic mode': (None, 'deterministic algorithms are on'),
    'plain policy': (None, 'CONVNEXT_FAST_PATHS=plain'),
    'tensor subclass': (None, 'tensor subclass'),
    'float64': (None, 'oneDNN has no torch.float64 kernels here'),
}


@ONEDNN
@pytest.mark.parametrize('case', list(GUARDS))
def test_each_guard_condition_runs_the_modules_as_written(case):
    change, reason = GUARDS[case]
    tanh = case == 'tanh GELU'
    model, ref = _pair(V1, act=(lambda t: F.gelu(t, approximate='tanh')) if tanh else None)
    if change is _drop_bias:
        change(model, ref)
    elif change is not None:
        change(model)
    if tanh:
        for block in _blocks(model):
            block.act = nn.GELU(approximate='tanh')
    x = torch.randn(1, 3, 64, 64)
    if case == 'float64':
        model, ref, x = model.double(), ref.double(), x.double()
    handle, previous = None, torch.are_deterministic_algorithms_enabled()
    if case == 'global forward hook':
        handle = torch.nn.modules.module.register_module_forward_hook(lambda m, a, o: None)
    if case == 'deterministic mode':
        torch.use_deterministic_algorithms(True)
    if case == 'tensor subclass':
        x = x.as_subclass(SubTensor)
    try:
        with torch.no_grad(), tuning.use_policy('plain' if case == 'plain policy' else 'auto'):
            block = model.eval().stages[0][0]
            assert reason in block.why_not_fast_path(
                torch.randn(1, 16, 16, 16, dtype=x.dtype).as_subclass(type(x)))
            outs = model(x)
    finally:
        torch.use_deterministic_algorithms(previous)
        if handle is not None:
            handle.remove()
    # no block kernel was chosen: the blocks' modules ran; a change to a block's modules
    # leaves the stage outputs (norm{i}) free to run their own kernel
    whole_model = case in ('global forward hook', 'deterministic mode', 'plain policy',
                           'tensor subclass', 'float64')
    assert {s.op for s in tuning.decisions()} <= (set() if whole_model else {'output'})
    assert _rel([o.as_subclass(torch.Tensor) for o in outs], ref.eval()(
        x.as_subclass(torch.Tensor))) < 1e-5


# -- the one decision: which path the block's tail takes -------------------------------------------
@ONEDNN
def test_the_path_follows_gradients_drop_path_and_grn():
    v1, v2 = _pair(V1)[0].stages[0][0].eval(), _pair(V2)[0].stages[0][0].eval()
    x = torch.randn(1, 16, 16, 16)
    with torch.no_grad():
        assert fast_path.decide(v1, x) == (fast_path.INFERENCE, '', False)
        assert fast_path.decide(v2, x) == (fast_path.INFERENCE, '', False)  # GRN in the kernel
        for block in (v1, v2):
            block.train().drop_path = 0.1     # a drop path, nothing needs a gradient
        assert fast_path.decide(v1, x) == (fast_path.TRAINING, '', False)
        assert 'GRN with gradients or drop path' in fast_path.decide(v2, x).reason
    v1.drop_path = v2.drop_path = 0.
    grad_x = x.clone().requires_grad_()
    assert fast_path.decide(v1, grad_x) == (fast_path.TRAINING, '', True)
    assert 'GRN with gradients' in fast_path.decide(v2, grad_x).reason
    with torch.autocast('cpu', torch.bfloat16):
        assert 'no training kernel' in fast_path.decide(v1, grad_x).reason
    assert 'not contiguous' in fast_path.decide(v1, x.transpose(1, 2)).reason
    assert v1.why_not_fast_path(x.double()) == 'oneDNN has no torch.float64 kernels here'


@pytest.mark.parametrize('mode', ['eval', 'train'])
def test_a_layer_scale_trained_alone_gets_its_gradient(mode):
    model, ref = _pair(V1)
    for net in (model, ref):
        for name, p in net.named_parameters():
            p.requires_grad_(name.endswith('gamma'))
        getattr(net, mode)()
    x = torch.randn(1, 3, 64, 64)
    for net in (model, ref):
        sum((o * o).mean() for o in net(x)).backward()
    expected = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        if name.endswith('gamma'):
            assert (p.grad - expected[name].grad).norm() / expected[name].grad.norm() < 1e-4, name


@ONEDNN
def test_tracing_runs_the_modules():
    model, ref = _pair(V1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(model.eval(), x, check_trace=False)
    assert tuning.decisions() == {}
    graph = str(traced.inlined_graph)
    assert 'mkldnn' not in graph and 'aten::gelu' in graph
    with torch.no_grad():
        assert _rel(traced(x), ref(x)) < 1e-5


# -- reproducible results --------------------------------------------------------------------------
_RUN = r'''
import hashlib, json, os, sys
import torch
from reference import RefConvNeXt, randomise_
from convnext_backbone import ConvNeXt, tuning
torch.use_deterministic_algorithms({deterministic})
arch = dict(depths=(2, 2, 2, 2), dims=(32, 48, 64, 96))
model = ConvNeXt(arch)
model.load_state_dict(randomise_(RefConvNeXt(arch['depths'], arch['dims']), 0).state_dict())
x = torch.randn(2, 3, 160, 224, generator=torch.Generator().manual_seed(1))
digest = hashlib.sha256()
with torch.no_grad():
    for out in model.eval()(x):
        digest.update(out.numpy().tobytes())
outs = model.train()(x)
sum((o * o).mean() for o in outs).backward()
for p in model.parameters():
    digest.update(p.grad.numpy().tobytes())
if {save!r}:
    tuning.save({save!r})
print(json.dumps(dict(hash=digest.hexdigest(), kernels=sorted(
    [str(s), str(d.kernel), d.source] for s, d in tuning.decisions().items()))))
'''


# the script imports tests/reference.py and the package from this checkout
_TESTS_AND_ROOT = os.pathsep.join([os.path.join(ROOT, 'tests'), ROOT])


def _run(deterministic=False, save='', env=None):
    code = _RUN.format(deterministic=deterministic, save=save)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          cwd=ROOT,
                          env={**os.environ, 'PYTHONPATH': _TESTS_AND_ROOT, **(env or {})},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_deterministic_mode_gives_bitwise_equal_outputs_in_three_fresh_processes():
    runs = [_run(deterministic=True) for _ in range(3)]
    assert all(run['kernels'] == [] for run in runs)  # no timing, no fast kernel
    assert len({run['hash'] for run in runs}) == 1


@ONEDNN
def test_a_pinned_decisions_file_repeats_the_kernels_and_the_results(tmp_path):
    path = str(tmp_path / 'fast_paths.json')
    first = _run(save=path)
    assert first['kernels'] and all(source == 'probe' for _, _, source in first['kernels'])
    saved = json.loads(open(path).read())
    assert len(saved['decisions']) == len(first['kernels'])
    again = _run(env={'CONVNEXT_FAST_PATHS': path})
    assert [k[:2] for k in again['kernels']] == [k[:2] for k in first['kernels']]
    assert all(source == 'pinned' for _, _, source in again['kernels'])
    assert again['hash'] == first['hash']


@ONEDNN
def test_a_pinned_kernel_runs_with_its_own_block_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(ops, 'block_sizes', lambda *args, **kwargs: [16])
    model, ref = _pair(V1)
    x = torch.randn(1, 3, 64, 64)
    rows = []
    real = ops.blocked_residual_mlp
    monkeypatch.setattr(ops, 'blocked_residual_mlp',
                        lambda *a, **k: rows.append(a[-1]) or real(*a, **k))
    with torch.no_grad():
        model.eval()(x)  # decide every class, then pin stage 0's to blocks of 40 rows
        stage0 = next(s for s in tuning.decisions() if s.channels == 16 and s.op == 'inference')
        path = tmp_path / 'pinned.json'
        tuning.save(str(path))
        data = json.loads(path.read_text())
        for entry in data['decisions']:
            if entry['shape']['channels'] == 16 and entry['shape']['op'] == 'inference':
                entry['kernel'] = dict(name='blocked', rows=40)
        path.write_text(json.dumps(data))
        tuning.reset()
        rows.clear()
        with tuning.use_policy(str(path)):
            outs = model(x)
    assert tuning.decisions()[stage0].kernel == tuning.Kernel('blocked', 40)
    assert tuning.decisions()[stage0].source == 'pinned'
    assert rows == [40, 40]  # stage 0's two blocks ran the pinned kernel
    assert _rel(outs, ref(x)) < 1e-5


@ONEDNN
def test_a_shape_class_missing_from_the_pinned_file_runs_the_plain_ops(tmp_path):
    path = tmp_path / 'empty.json'
    path.write_text(json.dumps(dict(version=tuning.FILE_VERSION, decisions=[])))
    model, ref = _pair(V1)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad(), tuning.use_policy(str(path)):
        outs = model.eval()(x)
    assert {d.kernel for d in tuning.decisions().values()} == {ops.PLAIN}
    assert {d.source for d in tuning.decisions().values()} == {'default'}
    assert _rel(outs, ref(x)) < 1e-5


@pytest.mark.parametrize('value,message', [
    ('fastest', "CONVNEXT_FAST_PATHS='fastest' is neither a fast-path policy"),
    ('{tmp}/broken.json', 'is not a decisions file'),
])
def test_a_bad_fast_path_setting_is_one_line(tmp_path, monkeypatch, value, message):
    (tmp_path / 'broken.json').write_text('{"version": 1}')
    monkeypatch.setenv('CONVNEXT_FAST_PATHS', value.format(tmp=tmp_path))
    model = ConvNeXt(V1).eval()
    with pytest.raises(ValueError, match=message) as err, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    assert '\n' not in str(err.value)


@ONEDNN
def test_every_decision_is_logged_in_one_line(capsys):
    from mmengine.logging import MMLogger
    MMLogger.get_instance('contract_test', log_level='INFO')  # the current logger, as a run's
    with torch.no_grad():
        ConvNeXt(V1).eval()(torch.randn(1, 3, 64, 64))
    lines = [line for line in capsys.readouterr().out.splitlines()
             if 'convnext_backbone fast path for' in line]
    # and the dwconv+LayerNorm head's and the output's, where our kernels are built
    natives = native.available()
    assert len(lines) == len(tuning.decisions()) == (12 if natives else 4)  # per stage's classes
    assert sum('inference MLP C=' in line for line in lines) == 4
    assert sum('dwconv+LayerNorm C=' in line for line in lines) == (4 if natives else 0)
    assert sum('output LayerNorm to NCHW C=' in line for line in lines) == (4 if natives else 0)
    assert all('fastest of plain' in line for line in lines)


class _Images(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return dict(inputs=torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(i)))


@ONEDNN
def test_a_run_saves_its_fast_path_decisions_in_its_work_dir(tmp_path):
    from mmengine.model import BaseModel

    from convnext_backbone.engine import ResumableRunner

    class Toy(BaseModel):
        def __init__(self):
            super().__init__()
            self.backbone = ConvNeXt(V1)

        def forward(self, inputs, mode='tensor'):
            outs = self.backbone(inputs)
            return dict(loss=sum((o * o).mean() for o in outs)) if mode == 'loss' else outs

    runner = ResumableRunner(
        model=Toy(), work_dir=str(tmp_path), train_cfg=dict(by_epoch=False, max_iters=2),
        train_dataloader=dict(dataset=_Images(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=10)))
    runner.train()
    saved = json.loads((tmp_path / 'fast_paths.json').read_text())
    natives = native.available()  # the dwconv's backward too, where our kernels are built
    assert sorted(e['shape']['op'] for e in saved['decisions']) == ['training'] * 4 + (
        ['training_dwconv'] * 4 if natives else [])
    assert {tuning.ShapeClass(**e['shape']) for e in saved['decisions']} == set(tuning.decisions())
