"""The tiled transposed copy (``native/transpose.cpp``, ``ops._transposed``) of the training
MLP's weight gradients: the same values as ATen's copy of the transposed view, bit for bit."""
import pytest
import torch
from kernel_helpers import needs_native, training_mlp_ops

from convnext_backbone import ops

pytestmark = [pytest.mark.core, needs_native]


@pytest.mark.parametrize('rows,cols', [(16, 16), (5376, 96), (37, 23), (64, 40), (0, 8)],
                         ids=['one-tile', 'stage-0-block', 'edges-only', 'edge-column', 'empty'])
def test_transposed_equals_atens_transposed_copy(rows, cols):
    x = torch.randn(rows, cols, generator=torch.Generator().manual_seed(0))
    got = torch.ops.convnext_backbone.transposed(x)
    assert got.is_contiguous() and torch.equal(got, x.t().contiguous())


@pytest.mark.parametrize('threads', [1, 3])
def test_transposed_is_the_same_whatever_the_thread_count(threads):
    x = torch.randn(300, 200)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        assert torch.equal(torch.ops.convnext_backbone.transposed(x), x.t().contiguous())
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize('bad', [torch.randn(8, 16).t(), torch.randn(16, 8).double(),
                                 torch.randn(2, 4, 4)], ids=['view', 'double', '3-d'])
def test_transposed_refuses_what_it_cannot_read_and_ops_falls_back(bad):
    with pytest.raises(RuntimeError, match='convnext_backbone transposed'):
        torch.ops.convnext_backbone.transposed(bad)
    if bad.dim() == 2:
        assert torch.equal(ops._transposed(bad), bad.t().contiguous())


@pytest.mark.parametrize('rows', [950, 96], ids=['one-block', 'blocked'])
def test_the_training_mlp_backward_transposes_both_gradients_with_our_kernel(rows):
    names = training_mlp_ops(rows)
    assert names.count('convnext_backbone::transposed') == 2 * -(-950 // rows)
