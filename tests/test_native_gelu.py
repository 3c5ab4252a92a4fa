"""The training MLP's GELU backward (``native/gelu.cpp``, ``ops._gelu_backward_``): the gradient
through the exact GELU in place, its column sums and the GELU itself in one pass, equal to ATen's
``gelu_backward``, ``sum`` and ``gelu`` to float rounding, and the same whatever the thread count.
"""
import pytest
import torch
import torch.nn.functional as F
from kernel_helpers import needs_native, training_mlp_ops

pytestmark = [pytest.mark.core, needs_native]


def _inputs(rows=950, cols=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, cols, generator=gen), torch.randn(rows, cols, generator=gen) * 3


def _ours(grad, x, gelu=None):
    grad = grad.clone()
    sums = torch.ops.convnext_backbone.gelu_backward_sum_(grad, x, gelu)
    return grad, sums


@pytest.mark.parametrize('rows,cols', [(950, 96), (37, 23), (64, 16)],
                         ids=['partial-row-block', 'partial-vector', 'one-block'])
def test_gelu_backward_sums_and_gelu_equal_atens_to_rounding(rows, cols):
    grad, x = _inputs(rows, cols)
    gelu = torch.empty_like(x)
    got, sums = _ours(grad, x, gelu)
    want = torch.ops.aten.gelu_backward(grad, x)
    assert torch.allclose(got, want, rtol=1e-5, atol=2e-6)
    assert torch.allclose(gelu, F.gelu(x), rtol=1e-5, atol=2e-6)
    exact = got.double().sum(0)
    assert sums.shape == (cols,) and torch.allclose(sums.double(), exact, rtol=1e-5, atol=1e-4)


def test_gelu_backward_takes_the_limits_and_keeps_nan():
    x = torch.tensor([[0.0, -0.0, 30.0, -30.0, 200.0, -200.0, 1e-30, float('nan')] * 2])
    grad = torch.ones_like(x)
    got, _ = _ours(grad, x)
    want = torch.ops.aten.gelu_backward(grad, x)
    assert torch.allclose(got, want, atol=1e-6, equal_nan=True)
    assert torch.isnan(got[0, 7]) and torch.equal(got[0, 2:6], torch.tensor([1.0, 0.0, 1.0, 0.0]))


@pytest.mark.parametrize('threads', [1, 3])
def test_gelu_backward_is_the_same_whatever_the_thread_count(threads):
    grad, x = _inputs(1000, 48)
    want = _ours(grad, x)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = _ours(grad, x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_gelu_backward_of_no_rows_sums_to_zeros():
    grad, x = torch.empty(0, 32), torch.empty(0, 32)
    assert torch.equal(_ours(grad, x)[1], torch.zeros(32))


@pytest.mark.parametrize('bad', ['double', 'transposed', 'shape'])
def test_gelu_backward_refuses_what_it_cannot_read(bad):
    grad, x = _inputs(40, 32)
    if bad == 'double':
        grad = grad.double()
    elif bad == 'transposed':
        grad = torch.randn(32, 40).t()
    else:
        grad = grad[:, :16].contiguous()
    with pytest.raises(RuntimeError, match='convnext_backbone GELU'):
        _ours(grad, x)


@pytest.mark.parametrize('rows', [950, 96], ids=['one-block', 'blocked'])
def test_the_training_mlp_backward_runs_our_gelu_kernel(rows):
    names = training_mlp_ops(rows)
    assert names.count('convnext_backbone::gelu_backward_sum_') == -(-950 // rows)
    assert 'aten::gelu_backward' not in names
