"""The thread-blocked MLP (``native/thread_blocks.cpp``, ``ops.thread_blocked_residual_mlp``):
each block of rows computed whole by one thread gives the blocked MLP's result, bit for bit."""
import pytest
import torch
from kernel_helpers import needs_native

from convnext_backbone import ops

pytestmark = [pytest.mark.core, needs_native,
              pytest.mark.skipif(not ops.mkldnn_linear_available(torch.float32),
                                 reason='no oneDNN here: only the plain ops exist')]


def _inputs(channels=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 19, 25, channels, generator=gen)  # 950 rows: a partial last block
    shortcut = torch.randn(2, 19, 25, channels, generator=gen)
    weights = (torch.randn(4 * channels, channels, generator=gen) * 0.2,
               torch.randn(4 * channels, generator=gen),
               torch.randn(channels, 4 * channels, generator=gen) * 0.2,
               torch.randn(channels, generator=gen))
    return x, weights, shortcut, torch.rand(channels, generator=gen)


@pytest.mark.parametrize('bf16', [False, True], ids=['fp32', 'bf16-autocast'])
@pytest.mark.parametrize('layer_scale', [True, False], ids=['scale', 'no-scale'])
def test_thread_blocks_equal_the_blocked_mlp(bf16, layer_scale):
    x, weights, shortcut, scale = _inputs()
    scale = scale if layer_scale else None
    with torch.no_grad(), torch.autocast('cpu', enabled=bf16):
        want = ops.blocked_residual_mlp(x, *weights, shortcut, scale, 96)
        got = ops.thread_blocked_residual_mlp(x, *weights, shortcut, scale, 96)
    assert got.dtype == want.dtype == torch.float32 and got.shape == shortcut.shape
    assert torch.equal(got, want)


def test_thread_blocks_run_under_inference_mode_and_with_a_bfloat16_residual():
    x, weights, shortcut, scale = _inputs()
    x, shortcut = x.bfloat16(), shortcut.bfloat16()
    with torch.inference_mode(), torch.autocast('cpu'):
        want = ops.blocked_residual_mlp(x, *weights, shortcut, scale, 64)
        got = ops.thread_blocked_residual_mlp(x, *weights, shortcut, scale, 64)
    assert got.dtype == want.dtype and torch.equal(got, want)


def test_thread_blocks_do_not_depend_on_the_thread_count():
    x, weights, shortcut, scale = _inputs()
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 2, 3):
            torch.set_num_threads(count)
            with torch.no_grad():
                results.append(ops.thread_blocked_residual_mlp(x, *weights, shortcut, scale, 100))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(results[0], r) for r in results[1:])


def test_thread_block_sizes_share_out_evenly_and_need_two_threads():
    sizes = ops.thread_block_sizes(60800, 384, 2, threads=2)
    assert sizes and sizes == sorted(sizes)
    for rows in sizes:
        assert -(-60800 // rows) % 2 == 0  # as many blocks for each thread
    assert ops.thread_block_sizes(60800, 384, 2, threads=1) == []


def test_thread_blocks_reject_a_bad_block_size():
    x, weights, shortcut, scale = _inputs()
    with pytest.raises(ValueError, match='rows=0'):
        ops.thread_blocked_residual_mlp(x, *weights, shortcut, scale, 0)
