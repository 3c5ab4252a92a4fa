"""A stage output norm{i}(x) as NCHW memory by our compiled kernel (convnext_backbone/native,
outputs.py): it computes what the module and the copy compute (float32 at any width and tile
remainder, bfloat16, NaN), it runs only where fast_path.output_reason finds nothing against it,
and a pinned kernel is the one that runs in every output."""
import pytest
import torch
from kernel_helpers import needs_native, ours_and_reference, pin_op, record_kernels
from torch import nn

from convnext_backbone import fast_path, head, outputs, tuning

pytestmark = [pytest.mark.core, pytest.mark.onedl_core, pytest.mark.usefixtures('fresh_decisions')]


def _norm(channels, seed=0):
    norm = nn.LayerNorm(channels, eps=1e-6)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        norm.weight.copy_(torch.rand(channels, generator=gen) + 0.5)
        norm.bias.copy_(torch.randn(channels, generator=gen))
    return norm


def _module(x, norm):
    return norm(x).permute(0, 3, 1, 2).contiguous()


@needs_native
@pytest.mark.parametrize('shape', [(1, 7, 37, 96), (2, 3, 16, 32), (1, 1, 1, 16), (2, 5, 19, 20),
                                   (1, 4, 3, 8)], ids=str)
def test_the_kernel_equals_the_module_and_copy_in_float32_at_every_width(shape):
    # W 37 and 19: a partial tile of pixels; C 20 and 8: a partial tile of channels
    norm, x = _norm(shape[-1]), torch.randn(shape) * 3 + 1
    with torch.no_grad():
        got = outputs.run_output(head.NATIVE, x, norm)
        want = _module(x, norm)
    assert got.dtype == torch.float32 and got.shape == want.shape and got.is_contiguous()
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


@needs_native
@pytest.mark.parametrize('norm_bf16', [False, True], ids=['float32 norm', 'bfloat16 norm'])
def test_a_bfloat16_input_gives_the_modules_bfloat16_values(norm_bf16):
    norm, x = _norm(48), (torch.randn(2, 6, 35, 48) * 3 + 1).bfloat16()
    if norm_bf16:
        norm = norm.bfloat16()
    with torch.no_grad():
        got = outputs.run_output(head.NATIVE, x, norm)
        want = _module(x, norm)
    assert got.dtype == torch.bfloat16 and got.is_contiguous()
    diff = (got.float() - want.float()).abs()
    # statistics in float32 both ways: only a last-bit flip where a sum's order rounds otherwise
    assert (diff > 0).float().mean() < 0.01
    assert (diff <= want.float().abs() * 2 ** -7 + 1e-6).all()


@needs_native
def test_a_nan_reaches_the_same_outputs_as_through_the_module():
    norm, x = _norm(32), torch.randn(1, 5, 21, 32)
    x[0, 2, 17, 3] = float('nan')
    with torch.no_grad():
        got = outputs.run_output(head.NATIVE, x, norm)
        want = _module(x, norm)
    assert got.isnan().any() and torch.equal(got.isnan(), want.isnan())


class MyNorm(nn.LayerNorm):
    pass


@pytest.mark.parametrize('change, reason', [
    (lambda n, x: (MyNorm(24), x), 'MyNorm'),
    (lambda n, x: (nn.LayerNorm(24, elementwise_affine=False), x), 'weight and bias'),
    (lambda n, x: (n.register_forward_hook(lambda *a: None) and n, x), 'norm has hooks'),
    (lambda n, x: (n, x.double()), 'float64'),
    (lambda n, x: (n, x.transpose(1, 2)), 'not contiguous'),
    (lambda n, x: (n, x.requires_grad_()), 'gradients are needed'),
], ids=['subclass', 'no affine', 'hook', 'float64', 'strided', 'grad'])
def test_a_changed_output_runs_its_module_and_says_why(change, reason, monkeypatch):
    norm, x = change(_norm(24), torch.randn(1, 8, 8, 24))
    norm = norm.double() if x.dtype == torch.float64 else norm
    ran = []
    monkeypatch.setattr(outputs, 'run_output', lambda *a: ran.append(1))
    with torch.set_grad_enabled(reason == 'gradients are needed'):
        assert reason in fast_path.output_reason(norm, x)
        got = outputs.stage_output(x, norm)
        assert ran == [] and got.is_contiguous()
        assert torch.allclose(got, _module(x, norm))


@needs_native
def test_deterministic_mode_runs_the_module():
    torch.use_deterministic_algorithms(True)
    try:
        assert 'deterministic' in fast_path.output_reason(_norm(24), torch.randn(1, 8, 8, 24))
    finally:
        torch.use_deterministic_algorithms(False)


@needs_native
@pytest.mark.parametrize('kernel', [head.PLAIN, head.NATIVE], ids=str)
def test_a_pinned_output_kernel_runs_in_every_output_and_the_backbone_equals_the_reference(
        kernel, tmp_path, monkeypatch):
    model, ref = ours_and_reference()
    model.eval()
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        path = pin_op(tmp_path, lambda: model(x), 'output', kernel)
        ran = record_kernels(monkeypatch, outputs, 'run_output')
        with tuning.use_policy(path):
            outs = model(x)
        assert ran == [kernel] * 4  # each of the four outputs, nothing probed
        for got, want in zip(outs, ref(x)):
            assert got.is_contiguous()
            assert ((got - want).norm() / want.norm()).item() < 1e-5
