"""The block's head dwconv 7x7 -> LayerNorm as our compiled kernel (convnext_backbone/native,
head.py): it computes what the modules compute (float32, bf16 autocast, a bfloat16 model, NaN,
borders, any C), it runs only where fast_path.head_reason finds nothing against it, a pinned
kernel is the one that runs, and where it cannot be built the modules run after one line."""
import os
import subprocess

import pytest
import torch
import torch.nn.functional as F
from helpers import PY, ROOT
from kernel_helpers import needs_native, ours_and_reference, pin_op, random_block, record_kernels
from torch import nn

from convnext_backbone import fast_path, head, native, tuning

pytestmark = [pytest.mark.core, pytest.mark.onedl_core, pytest.mark.usefixtures('fresh_decisions')]


def _modules(x, conv, norm):
    return norm(conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


def _head(channels, seed=0):
    gen = torch.Generator().manual_seed(seed)
    conv, norm = nn.Conv2d(channels, channels, 7, padding=3, groups=channels), nn.LayerNorm(
        channels, eps=1e-6)
    with torch.no_grad():
        for p in (*conv.parameters(), *norm.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return conv, norm


@needs_native
@pytest.mark.parametrize('shape', [(1, 23, 37, 96), (2, 5, 3, 40), (1, 1, 1, 16), (1, 9, 12, 20),
                                   (1, 6, 24, 32), (1, 4, 25, 48)], ids=str)
def test_the_kernel_equals_the_modules_in_float32_at_every_border_and_width(shape):
    # 40 and 20 channels: a vector remainder (a block of 16 channels partly past C); 5x3 and 1x1
    # images: every window column and row falls partly outside the image. Widths: 37 = two
    # tiles of 16 and a narrow one of 8 for the last 5 columns; 24 = 16 + exactly 8; 25 = 16 + a
    # tile of 16 with 9 columns inside the image; 12 and 3: one tile, partly past the image
    conv, norm = _head(shape[-1])
    x = torch.randn(shape)
    with torch.no_grad():
        got = head.run_head(head.NATIVE, x, conv, norm)
        want = _modules(x, conv, norm)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-5, atol=2e-5)


@needs_native
@pytest.mark.parametrize('model_bf16', [False, True], ids=['autocast', 'bfloat16 model'])
def test_the_kernel_rounds_as_bf16_autocast_and_a_bfloat16_model_do(model_bf16):
    conv, norm = _head(48)
    x = torch.randn(2, 13, 17, 48)
    if model_bf16:
        conv, norm, x = conv.bfloat16(), norm.bfloat16(), x.bfloat16()
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16, enabled=not model_bf16):
        got = head.run_head(head.NATIVE, x, conv, norm)
        want = _modules(x, conv, norm)
    assert got.dtype == torch.bfloat16
    diff = (got.float() - want.float()).abs()
    # the same bf16 inputs and conv rounding: only a last-bit flip of a sum taken in another
    # order, on a few elements; computed in float32 (no rounding) far more would differ
    assert (diff > 0).float().mean() < 0.01
    assert (diff <= want.float().abs() * 2 ** -7 + 1e-3).all()
    unrounded = _modules(x.float(), conv.float(), norm.float())
    assert ((unrounded - want.float()).abs() > 0).float().mean() > 0.3


@needs_native
def test_a_nan_reaches_the_same_outputs_as_through_the_modules():
    conv, norm = _head(32)
    x = torch.randn(1, 12, 12, 32)
    x[0, 5, 6, 3] = float('nan')
    with torch.no_grad():
        for autocast in (False, True):
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=autocast):
                got = head.run_head(head.NATIVE, x, conv, norm)
                want = _modules(x, conv, norm)
            assert torch.equal(got.isnan(), want.isnan())
            assert got.isnan().any()


def _block(seed=0):
    return random_block(seed=seed).eval()


@needs_native
def test_an_unmodified_block_in_inference_may_run_the_kernel():
    assert fast_path.head_reason(_block(), torch.randn(1, 8, 8, 24)) == ''


class MyConv(nn.Conv2d):
    pass


@pytest.mark.parametrize('change, reason', [
    (lambda b: setattr(b, 'dwconv', MyConv(24, 24, 7, padding=3, groups=24)), 'MyConv'),
    (lambda b: setattr(b, 'dwconv', nn.Conv2d(24, 24, 7, padding=3, groups=24,
                                               padding_mode='reflect')), 'zero padding 3'),
    (lambda b: setattr(b, 'dwconv', nn.Conv2d(24, 24, 5, padding=2, groups=24)), 'depthwise 7x7'),
    (lambda b: setattr(b, 'dwconv', nn.Conv2d(24, 24, 7, padding=3, groups=24, bias=False)),
     'no bias'),
    (lambda b: setattr(b, 'norm', nn.LayerNorm(24, elementwise_affine=False)), 'weight and bias'),
    (lambda b: b.norm.register_forward_hook(lambda *a: None), 'norm has hooks'),
    (lambda b: b.dwconv.register_forward_pre_hook(lambda *a: None), 'dwconv has hooks'),
], ids=['subclass', 'reflect', '5x5', 'no bias', 'no affine', 'norm hook', 'dwconv hook'])
def test_a_changed_head_runs_its_modules_and_says_why(change, reason, monkeypatch):
    block = _block()
    change(block)
    x = torch.randn(1, 8, 8, 24)
    assert reason in fast_path.head_reason(block, x)
    calls = []
    real = head.dwconv_norm
    monkeypatch.setattr(head, 'dwconv_norm', lambda *a: calls.append(1) or real(*a))
    with torch.no_grad():
        block(x)
    assert calls == []


def test_a_float64_input_runs_the_modules():
    block = _block().double()
    assert 'float64' in fast_path.head_reason(block, torch.randn(1, 8, 8, 24).double())


@needs_native
@pytest.mark.parametrize('kernel', [head.PLAIN, head.NATIVE], ids=str)
def test_a_pinned_head_kernel_runs_in_every_block_and_the_backbone_equals_the_reference(
        kernel, tmp_path, monkeypatch):
    model, ref = ours_and_reference()
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        path = pin_op(tmp_path, lambda: model(x), 'head', kernel)
        ran = record_kernels(monkeypatch, head, 'run_head')
        with tuning.use_policy(path):
            outs = model(x)
        assert ran == [kernel] * 5  # each of the five blocks, nothing probed
        for got, want in zip(outs, ref(x)):
            assert ((got - want).norm() / want.norm()).item() < 1e-5


def test_without_a_compiler_the_modules_run_after_one_logged_line(tmp_path):
    # a fresh cache folder and a compiler that does not exist: the build fails, one warning
    # line, and the backbone computes what the modules compute
    script = '''
import torch
from convnext_backbone import ConvNeXt, fast_path, native, tuning
model = ConvNeXt({'depths': [1, 1, 1, 1], 'dims': [16, 16, 16, 16]}, out_indices=(0,)).eval()
x = torch.randn(1, 3, 32, 32)
with torch.no_grad():
    fast = model(x)[0]
    with tuning.use_policy('plain'):
        plain = model(x)[0]
print('REASON', fast_path.head_reason(model.stages[0][0], torch.randn(1, 8, 8, 16)))
print('HEADS', sum(s.op == 'head' for s in tuning.decisions()))
print('EQUAL', torch.allclose(fast, plain, rtol=1e-5, atol=1e-5))
'''
    env = dict(os.environ, CONVNEXT_NATIVE_CACHE=str(tmp_path / 'cache'),
               CXX=str(tmp_path / 'no-such-compiler'), PYTHONPATH=ROOT)
    proc = subprocess.run([PY, '-c', script], env=env, capture_output=True, text=True,
                          timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    warnings = [line for line in out.splitlines()
                if 'WARNING' in line and 'kernels are not available' in line]
    assert len(warnings) == 1, out[-3000:]
    assert 'pip install ninja' in warnings[0] and len(warnings[0]) < 500
    assert 'not compatible with the compiler' not in out  # torch's banner, kept quiet
    assert 'REASON our compiled kernels are not available' in out
    assert 'HEADS 0' in out and 'EQUAL True' in out


def test_convnext_native_0_turns_the_kernel_off_without_building(tmp_path):
    env = dict(os.environ, CONVNEXT_NATIVE='0', CONVNEXT_NATIVE_CACHE=str(tmp_path / 'cache'),
               PYTHONPATH=ROOT)
    proc = subprocess.run(
        [PY, '-c', 'from convnext_backbone import native; print(native.unavailable_reason())'],
        env=env, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.stdout.strip() == 'CONVNEXT_NATIVE=0', proc.stderr[-2000:]
    assert not (tmp_path / 'cache').exists()


def test_the_cache_folder_is_keyed_by_torch_python_and_source(monkeypatch, tmp_path):
    monkeypatch.setenv('CONVNEXT_NATIVE_CACHE', str(tmp_path))
    first = native.cache_dir()
    assert os.path.dirname(first) == str(tmp_path)
    assert f'torch{torch.__version__}' in first
    monkeypatch.setattr(torch, '__version__', '9.9.9')
    assert native.cache_dir() != first


def test_plain_head_is_f_conv2d_and_f_layer_norm():
    # the plain kernel is the modules' own functional math
    conv, norm = _head(24)
    x = torch.randn(1, 9, 9, 24)
    with torch.no_grad():
        got = head.run_head(head.PLAIN, x, conv, norm)
        want = F.layer_norm(F.conv2d(x.permute(0, 3, 1, 2), conv.weight, conv.bias, padding=3,
                                     groups=24).permute(0, 2, 3, 1), (24,), norm.weight,
                            norm.bias, 1e-6)
    assert torch.equal(got, want)


def test_plain_head_under_autocast_gives_what_the_products_read():
    # both candidates hand the products bfloat16 (autocast's layer_norm gives float32 on some
    # torch versions), so the probe times the same work for both
    conv, norm = _head(24)
    x = torch.randn(1, 9, 9, 24)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        got = head.run_head(head.PLAIN, x, conv, norm)
        modules = norm(conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))
    assert got.dtype == torch.bfloat16
    assert torch.equal(got, modules.to(torch.bfloat16))
