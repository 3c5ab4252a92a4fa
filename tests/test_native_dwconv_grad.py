"""The block's depthwise conv in training with our compiled backward (convnext_backbone/native,
depthwise.py): its gradients are autograd's (every border, any C, any input needing none), it
runs only where fast_path.dwconv_reason finds nothing against it, a pinned kernel is the one
that runs in every block, and the backbone's gradients equal the reference's, with_cp too."""
import pytest
import torch
import torch.nn.functional as F
from kernel_helpers import needs_native, ours_and_reference, pin_op, random_block, record_kernels
from torch import nn

from convnext_backbone import depthwise, fast_path, head, tuning

pytestmark = [pytest.mark.core, pytest.mark.onedl_core, pytest.mark.usefixtures('fresh_decisions')]


def _plain(x, weight, bias):
    return F.conv2d(x.permute(0, 3, 1, 2), weight, bias, 1, 3, 1, x.shape[-1]).permute(0, 2, 3, 1)


@needs_native
@pytest.mark.parametrize('shape', [(2, 9, 13, 40), (1, 5, 3, 16), (1, 1, 1, 16), (1, 12, 29, 96),
                                   (2, 4, 11, 8)], ids=str)
@pytest.mark.parametrize('needs', [(True, True, True), (False, True, True), (True, False, False)],
                         ids=['all', 'weights only', 'input only'])
def test_the_gradients_are_autograds_at_every_border_and_width(shape, needs):
    # 40 and 8 channels: a vector remainder; 5x3, 1x1 and 4x11: windows partly outside the image
    gen = torch.Generator().manual_seed(0)
    channels = shape[-1]
    tensors = [torch.randn(shape, generator=gen), torch.randn(channels, 1, 7, 7, generator=gen),
               torch.randn(channels, generator=gen)]
    for t, need in zip(tensors, needs):
        t.requires_grad_(need)
    grad = torch.randn(shape, generator=gen)
    inputs = [t for t in tensors if t.requires_grad]
    got = depthwise.run_dwconv(head.NATIVE, *tensors)
    want = _plain(*tensors)
    assert torch.equal(got, want)  # the same forward
    got_grads = torch.autograd.grad(got, inputs, grad)
    want_grads = torch.autograd.grad(want, inputs, grad)
    for g, w in zip(got_grads, want_grads):
        assert g.shape == w.shape
        assert torch.allclose(g, w, rtol=1e-4, atol=1e-4 * w.abs().max().item())


def _block(seed=0):
    return random_block(seed=seed).train()


@needs_native
def test_an_unmodified_block_in_training_may_run_the_backward():
    assert fast_path.dwconv_reason(_block(), torch.randn(1, 8, 8, 24)) == ''


class MyConv(nn.Conv2d):
    pass


@pytest.mark.parametrize('change, reason', [
    (lambda b: setattr(b, 'dwconv', MyConv(24, 24, 7, padding=3, groups=24)), 'MyConv'),
    (lambda b: setattr(b, 'dwconv', nn.Conv2d(24, 24, 7, padding=3, groups=24, bias=False)),
     'no bias'),
    (lambda b: b.dwconv.register_full_backward_hook(lambda *a: None), 'dwconv has hooks'),
], ids=['subclass', 'no bias', 'backward hook'])
def test_a_changed_dwconv_runs_its_module_in_training_and_says_why(change, reason, monkeypatch):
    block = _block()
    change(block)
    x = torch.randn(1, 8, 8, 24, requires_grad=True)
    assert reason in fast_path.dwconv_reason(block, x)
    calls = []
    real = depthwise.depthwise_conv
    monkeypatch.setattr(depthwise, 'depthwise_conv', lambda *a: calls.append(1) or real(*a))
    block(x).sum().backward()
    assert calls == [] and x.grad is not None


@needs_native
def test_under_autocast_the_dwconv_runs_its_module():
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert 'float32 without autocast' in fast_path.dwconv_reason(
            _block(), torch.randn(1, 8, 8, 24))


def _loss(outs):
    return sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)


@needs_native
@pytest.mark.parametrize('with_cp', [False, True], ids=['', 'with_cp'])
@pytest.mark.parametrize('kernel', [head.PLAIN, head.NATIVE], ids=str)
def test_a_pinned_dwconv_kernel_runs_in_every_block_and_the_gradients_equal_the_reference(
        kernel, with_cp, tmp_path, monkeypatch):
    model, ref = ours_and_reference(with_cp=with_cp)
    model.train(), ref.train()
    x = torch.randn(2, 3, 64, 96)
    path = pin_op(tmp_path, lambda: _loss(model(x)).backward(), 'training_dwconv', kernel)
    model.zero_grad()
    ran = record_kernels(monkeypatch, depthwise, 'run_dwconv')
    with tuning.use_policy(path):
        _loss(model(x)).backward()
    _loss(ref(x)).backward()
    # each of the five blocks, nothing probed; with_cp runs each forward again in backward
    assert ran == [kernel] * (10 if with_cp else 5)
    grads = dict(ref.named_parameters())
    for name, p in model.named_parameters():
        expected = grads[name].grad
        assert (p.grad - expected).norm() / expected.norm() < 1e-4, name
