"""The ConvNeXt block's pointwise MLP on the CPU: oneDNN kernels, cache blocking, plain ops.

oneDNN (``torch.ops.mkldnn._linear_pointwise``, a private op that PyTorch's own inductor uses on
CPU) computes a Linear layer with its bias and a following GELU, or a following residual add, inside
the matrix product: no separate pass writes the bias into the output first, none reads it back for
the GELU or the add. We detect the op once per dtype (it exists, runs, and agrees with the plain
ops on a tiny input).

Cache blocking: the block's MLP ``fc2(gelu(fc1(x)))`` makes an (M, 4C) hidden tensor; at stage 0
of a detection image (M = 60,800 rows) it is 93 MB and goes to DRAM and back, so the products run
at half the machine's GEMM rate. Computed over blocks of rows small enough that the hidden block
stays in the caches (:func:`block_sizes`: around the size that fills the threads' L2, the best
one measured), the hidden tensor never leaves the cache; the residual tail (layer scale, add)
is done on each block while it is in cache too. With our compiled library the blocks can also
be shared out among the threads, each block computed whole by one thread
(:func:`thread_blocked_residual_mlp`, ``native/thread_blocks.cpp``).

Each way to compute the MLP is a :class:`~.tuning.Kernel` (plain PyTorch ops, oneDNN, oneDNN
with the residual add fused, cache-blocked with so many rows); which one runs is decided once
per process and shape class by timing them on this machine, or pinned from a file
(``convnext_backbone.tuning``), so none is ever kept where it is slower than the plain ops:
:func:`residual_mlp` (inference) and :func:`mlp` (training) ask the tuner.

These functions take the inputs as they are: whether the block may call them at all (its
modules are exactly what these kernels compute, a dtype oneDNN computes, contiguous CPU tensors,
not tracing, and whether gradients are needed) is decided once per block call, in
``convnext_backbone.fast_path``.
"""
import functools
from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F

from . import compat, frozen, machine, native, tuning

__all__ = ['BLOCK_FACTORS', 'ONEDNN', 'ONEDNN_ADD', 'PLAIN', 'block_rows', 'block_sizes',
           'blocked', 'blocked_mlp', 'blocked_residual_mlp', 'cast', 'compute_dtype', 'dtype_name',
           'inference_kernels', 'inference_shape', 'linear', 'linear_add', 'linear_gelu',
           'mkldnn_linear_available', 'mlp', 'packed', 'packed_operand', 'residual_mlp',
           'row_count', 'run_inference', 'run_training', 'thread_blocked',
           'thread_blocked_residual_mlp', 'thread_block_sizes', 'training_kernels',
           'training_shape', 'weight_packing_available']


@functools.lru_cache(maxsize=None)
def mkldnn_linear_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's fused Linear kernels run, and agree with the plain ops, for ``dtype``.

    Probed once per dtype on a tiny input; any failure (op missing, no oneDNN build, no bf16
    support on this CPU, a changed signature) means False.

    Args:
        dtype (torch.dtype): Compute dtype, float32 or bfloat16. Defaults to float32.

    Returns:
        bool: True if :func:`linear_gelu` and :func:`linear_add` may use oneDNN for ``dtype``.
    """
    if dtype not in (torch.float32, torch.bfloat16):
        return False
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return False
        op = torch.ops.mkldnn._linear_pointwise
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, 3, 8, generator=gen).to(dtype)
        other = torch.randn(2, 3, 16, generator=gen).to(dtype)
        weight = torch.randn(16, 8, generator=gen).to(dtype)
        bias = torch.randn(16, generator=gen).to(dtype)
        with torch.no_grad(), torch.autocast('cpu', enabled=False):
            biased = op(x, weight, bias, 'none', [], '')
            gelu = op(x, weight, bias, 'gelu', [], 'none')
            add = op.binary(x, other, weight, bias, 'add')
            tol = 1e-5 if dtype == torch.float32 else 5e-2
            plain = F.linear(x.float(), weight.float(), bias.float())
            return bool(gelu.dtype == dtype and add.dtype == dtype and biased.dtype == dtype
                        and torch.allclose(biased.float(), plain, rtol=tol, atol=tol)
                        and torch.allclose(gelu.float(), F.gelu(plain), rtol=tol, atol=tol)
                        and torch.allclose(add.float(), plain + other.float(), rtol=tol, atol=tol))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.lru_cache(maxsize=None)
def weight_packing_available(dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN packs a Linear weight ahead of its products for ``dtype``, and the products
    with the packed weight agree with those with the weight as it is.

    ``torch.ops.mkldnn._reorder_linear_weight`` (the private op PyTorch's inductor packs weights
    with) reorders the weight into the blocked layout oneDNN's product kernels read; given a
    plain weight, each product reorders it again. Probed once per dtype on a tiny input; any
    failure means False.

    Args:
        dtype (torch.dtype): Compute dtype, float32 or bfloat16. Defaults to float32.

    Returns:
        bool: True if :func:`packed` reorders weights of ``dtype``.
    """
    if not mkldnn_linear_available(dtype):
        return False
    try:
        op = torch.ops.mkldnn._linear_pointwise
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(5, 8, generator=gen).to(dtype)
        weight = torch.randn(16, 8, generator=gen).to(dtype)
        bias = torch.randn(16, generator=gen).to(dtype)
        with torch.no_grad(), torch.autocast('cpu', enabled=False):
            want = op(x, weight, bias, 'gelu', [], 'none').float()
            got = op(x, torch.ops.mkldnn._reorder_linear_weight(weight, 5), bias, 'gelu', [],
                     'none')
            tol = 1e-5 if dtype == torch.float32 else 5e-2
            return bool(got.dtype == dtype and torch.allclose(got.float(), want, rtol=tol,
                                                              atol=tol))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def packed(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """``weight`` reordered for oneDNN's products of ``rows`` rows (where
    :func:`weight_packing_available`), or ``weight`` itself. No autograd: the result is only
    for the products of one call of :func:`blocked_residual_mlp` or of :class:`_MLP`.

    Args:
        weight (torch.Tensor): (out_features, in_features), in the compute dtype.
        rows (int): Rows of the products' input (a hint for the layout).

    Returns:
        torch.Tensor: A weight the products take in place of ``weight``.
    """
    if weight_packing_available(weight.dtype):
        return torch.ops.mkldnn._reorder_linear_weight(weight, rows)
    return weight


def cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``tensor.to(dtype)``; inside :func:`~.frozen.frozen_weights` of its model, made once."""
    if tensor.dtype == dtype:
        return tensor
    return frozen.prepared(tensor, ('cast', dtype), lambda: tensor.to(dtype))


def packed_operand(weight: torch.Tensor, dtype: torch.dtype, rows: int) -> torch.Tensor:
    """``weight`` in ``dtype``, :func:`packed` for products of ``rows`` rows (the blocked
    kernels' weights). Inside :func:`~.frozen.frozen_weights` of its model it is made once, for
    the rows of its first use: the products on a weight packed for other rows give the same bits
    (``tests/test_frozen.py`` checks it on each torch).

    Note:
        oneDNN's own products (:func:`linear`, :func:`linear_gelu`, :func:`linear_add`) take
        their weights only cast (:func:`cast`) and reorder them themselves: on a packed weight
        they give other bits on some torch versions (2.1).

    Args:
        weight (torch.Tensor): (out_features, in_features).
        dtype (torch.dtype): The compute dtype.
        rows (int): Rows of the products' input (a hint for the packed layout).

    Returns:
        torch.Tensor: The weight for ``torch.ops.mkldnn._linear_pointwise``.
    """
    def make() -> torch.Tensor:
        with torch.autocast('cpu', enabled=False):
            return packed(weight.to(dtype), rows)

    return frozen.prepared(weight, ('packed', dtype), make)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the products run in: CPU autocast's (which leaves float64 alone), else ``x``'s."""
    if compat.autocast_enabled('cpu') and x.dtype != torch.float64:
        return compat.autocast_dtype('cpu')
    return x.dtype


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``linear(x, weight, bias)`` by oneDNN, the bias added inside the product. No autograd.

    The product runs in :func:`compute_dtype` (under CPU autocast its dtype, as ``F.linear``
    would).

    Args:
        x (torch.Tensor): (..., in_features), contiguous, on the CPU, a dtype for which
            :func:`mkldnn_linear_available`.
        weight (torch.Tensor): (out_features, in_features).
        bias (torch.Tensor): (out_features,).

    Returns:
        torch.Tensor: (..., out_features).
    """
    dtype = compute_dtype(x)
    return torch.ops.mkldnn._linear_pointwise(
        x.to(dtype), cast(weight, dtype), cast(bias, dtype), 'none', [], '')


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(linear(x, weight, bias))`` (exact, erf GELU), the GELU inside oneDNN's product.

    Arguments, result and dtype as :func:`linear`.
    """
    dtype = compute_dtype(x)
    return torch.ops.mkldnn._linear_pointwise(
        x.to(dtype), cast(weight, dtype), cast(bias, dtype), 'gelu', [], 'none')


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               other: torch.Tensor) -> torch.Tensor:
    """``other + linear(x, weight, bias)``, the add inside oneDNN's product. No autograd.

    Args:
        x (torch.Tensor): (..., in_features), as for :func:`linear`.
        weight (torch.Tensor): (out_features, in_features).
        bias (torch.Tensor): (out_features,).
        other (torch.Tensor): (..., out_features), the residual, contiguous, in the compute
            dtype (so that the sum has the dtype autocast gives the plain ops).

    Returns:
        torch.Tensor: (..., out_features).
    """
    dtype = compute_dtype(x)
    return torch.ops.mkldnn._linear_pointwise.binary(
        x.to(dtype), other, cast(weight, dtype), cast(bias, dtype), 'add')


def block_rows(hidden: int, itemsize: int, threads: Optional[int] = None) -> int:
    """Rows per block of the blocked MLP: the (rows, hidden) block fills the L2 caches of the
    threads that compute it (their sum, read from the machine; 1 MiB per thread if unknown).

    Args:
        hidden (int): Width of the hidden layer (4C).
        itemsize (int): Bytes per element of the compute dtype.
        threads (int, optional): Threads computing a block. Defaults to torch's thread count.

    Returns:
        int: A multiple of 64, at least 64.
    """
    threads = threads or torch.get_num_threads()
    l2 = machine.cache_bytes(2) or 2**20
    return max(64, l2 * threads // (hidden * itemsize) // 64 * 64)


#: Block sizes the probe times, as multiples of :func:`block_rows`: the best size depends on
#: the CPU's caches and kernels (e.g. 1.5-3x the L2-filling size on a 2-core AMD EPYC Zen 5,
#: docs/performance.md), so it is measured, not assumed.
BLOCK_FACTORS = (0.5, 1, 2, 4)


def block_sizes(rows: int, hidden: int, itemsize: int) -> List[int]:
    """The rows per block to time for an MLP of ``rows`` rows: :data:`BLOCK_FACTORS` times
    :func:`block_rows`, those that make at least two blocks.

    Args:
        rows (int): Rows of the input (N*H*W).
        hidden (int): Width of the hidden layer (4C).
        itemsize (int): Bytes per element of the compute dtype.

    Returns:
        list[int]: Ascending, possibly empty.
    """
    base = block_rows(hidden, itemsize)
    sizes = {max(1, int(base * factor)) for factor in BLOCK_FACTORS}
    return sorted(size for size in sizes if 2 * size <= rows)


def _tail(shortcut: torch.Tensor, y: torch.Tensor, scale: Optional[torch.Tensor],
          out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``shortcut + y * scale`` (``scale`` None: 1) in one pass."""
    if scale is None:
        return torch.add(shortcut, y, out=out)
    return torch.addcmul(shortcut, y, scale, out=out)


def blocked_residual_mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                         b2: torch.Tensor, shortcut: torch.Tensor, scale: Optional[torch.Tensor],
                         rows: int) -> torch.Tensor:
    """Inference: ``shortcut + scale * fc2(gelu(fc1(x)))`` in blocks of ``rows`` rows, oneDNN
    products, each block's tail computed while the block is in cache. No autograd.

    The weights are packed for oneDNN once per call (:func:`packed`), not reordered again by
    each block's products; with ``rows`` at least the rows of ``x`` (one block) this is the
    ``onednn`` kernel with packed weights.

    Under CPU autocast the products run in the autocast dtype and the tail in the promoted dtype
    of ``shortcut``, the product and ``scale``, as autocast makes of the plain ops.

    Args:
        x (torch.Tensor): (..., C), contiguous.
        w1 (torch.Tensor): (4C, C). b1 (torch.Tensor): (4C,).
        w2 (torch.Tensor): (C, 4C). b2 (torch.Tensor): (C,).
        shortcut (torch.Tensor): (..., C), contiguous, the residual.
        scale (torch.Tensor, optional): (C,), the layer scale; None for 1.
        rows (int): Rows per block, >= 1.

    Returns:
        torch.Tensor: (..., C).
    """
    op = torch.ops.mkldnn._linear_pointwise
    x2, w1, b1, w2, b2, res = _block_inputs(x, w1, b1, w2, b2, shortcut, rows)
    out = torch.empty(res.shape, dtype=_out_dtype(x, shortcut, scale))
    with torch.autocast('cpu', enabled=False):
        for i in range(0, x2.shape[0], rows):
            hidden = op(x2[i:i + rows], w1, b1, 'gelu', [], 'none')          # (rows, 4C), cached
            _tail(res[i:i + rows], op(hidden, w2, b2, 'none', [], ''), scale, out=out[i:i + rows])
    return out.view(shortcut.shape)


def _block_inputs(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                  b2: torch.Tensor, shortcut: torch.Tensor,
                  rows: int) -> Tuple[torch.Tensor, ...]:
    """What the blocked MLPs compute on: ``x`` and the parameters in the compute dtype, the
    weights packed once for all the blocks of ``rows`` rows of this call (:func:`packed`), ``x``
    and ``shortcut`` as (rows, C).

    Raises:
        ValueError: ``rows`` is below 1.
    """
    if rows < 1:
        raise ValueError(f'rows={rows!r} must be a positive int')
    dtype = compute_dtype(x)
    x2 = x.to(dtype).reshape(-1, x.shape[-1])
    block = min(rows, x2.shape[0])
    w1, w2 = (packed_operand(w, dtype, block) for w in (w1, w2))
    b1, b2 = cast(b1, dtype), cast(b2, dtype)
    return x2, w1, b1, w2, b2, shortcut.reshape(-1, shortcut.shape[-1])


def _out_dtype(x: torch.Tensor, shortcut: torch.Tensor,
               scale: Optional[torch.Tensor]) -> torch.dtype:
    """The dtype autocast makes of ``shortcut + scale * product``: the promoted dtype of the
    residual, the compute dtype and the scale."""
    out_dtype = torch.promote_types(shortcut.dtype, compute_dtype(x))
    if scale is not None:
        out_dtype = torch.promote_types(out_dtype, scale.dtype)
    return out_dtype


def thread_block_sizes(rows: int, hidden: int, itemsize: int,
                       threads: Optional[int] = None) -> List[int]:
    """The rows per block to time for :func:`thread_blocked_residual_mlp`: about
    :data:`BLOCK_FACTORS` times the rows whose hidden block fills one thread's L2
    (:func:`block_rows` of one thread), each rounded so that the blocks share out evenly among
    the threads.

    Args:
        rows (int): Rows of the input (N*H*W).
        hidden (int): Width of the hidden layer (4C).
        itemsize (int): Bytes per element of the compute dtype.
        threads (int, optional): Defaults to torch's thread count.

    Returns:
        list[int]: Ascending, possibly empty (one thread: nothing to share out).
    """
    threads = threads or torch.get_num_threads()
    if threads < 2:
        return []
    base = block_rows(hidden, itemsize, threads=1)
    sizes = set()
    for factor in BLOCK_FACTORS:
        per_thread = max(1, round(rows / (threads * base * factor)))
        sizes.add(-(-rows // (threads * per_thread)))
    return sorted(sizes)


def thread_blocked_residual_mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                                w2: torch.Tensor, b2: torch.Tensor, shortcut: torch.Tensor,
                                scale: Optional[torch.Tensor], rows: int) -> torch.Tensor:
    """Inference: :func:`blocked_residual_mlp` with its blocks shared out among the threads,
    each block's products and tail computed by one thread (our compiled
    ``thread_blocked_mlp``: the hidden block stays in that core's L2, no barrier between the
    products). The same products and tail on the same rows: the same result.

    Args:
        x, w1, b1, w2, b2, shortcut, scale, rows: As :func:`blocked_residual_mlp`.

    Returns:
        torch.Tensor: (..., C).

    Raises:
        ValueError: ``rows`` is below 1.
        RuntimeError: Our compiled library is not available (its reason).
    """
    x2, w1, b1, w2, b2, res = _block_inputs(x, w1, b1, w2, b2, shortcut, rows)
    if not native.available():
        raise RuntimeError(native.unavailable_reason())
    with torch.autocast('cpu', enabled=False):
        out = torch.ops.convnext_backbone.thread_blocked_mlp(
            x2, w1, b1, w2, b2, res, scale, rows, _out_dtype(x, shortcut, scale))
    return out.view(shortcut.shape)


#: The kernels of the block's MLP (the plain one first: the fallback).
PLAIN, ONEDNN = tuning.Kernel('plain'), tuning.Kernel('onednn')
ONEDNN_ADD = tuning.Kernel('onednn_add')


def blocked(rows: int) -> tuning.Kernel:
    """The cache-blocked kernel with ``rows`` rows per block."""
    return tuning.Kernel('blocked', rows)


def thread_blocked(rows: int) -> tuning.Kernel:
    """The kernel of :func:`thread_blocked_residual_mlp` with ``rows`` rows per block."""
    return tuning.Kernel('thread_blocked', rows)


def row_count(x: torch.Tensor) -> int:
    """The rows of ``x`` (..., C): N*H*W."""
    return x.numel() // x.shape[-1]


def dtype_name(dtype: torch.dtype) -> str:
    """'float32' for torch.float32: the dtype as shape classes name it."""
    return str(dtype).replace('torch.', '')


def inference_shape(x: torch.Tensor, w1: torch.Tensor, shortcut: torch.Tensor,
                    scale: Optional[torch.Tensor], mid: bool) -> tuning.ShapeClass:
    """The :class:`~.tuning.ShapeClass` of a call of :func:`residual_mlp`."""
    return tuning.ShapeClass(
        op='inference', channels=x.shape[-1], hidden=w1.shape[0],
        dtype=dtype_name(compute_dtype(x)), residual=dtype_name(shortcut.dtype),
        layer_scale=scale is not None, grn=mid, input_grad=False,
        rows_log2=row_count(x).bit_length(), threads=torch.get_num_threads(),
        frozen=frozen.holds(w1))


def _add_inside(x: torch.Tensor, shortcut: torch.Tensor, scale: Optional[torch.Tensor]) -> bool:
    """Whether the residual add may run inside the second product: the residual in the compute
    dtype, and no layer scale or all of float32 (the scale is then folded into the product:
    ``(scale * w2) h + scale * b2`` instead of ``scale * (w2 h + b2)``, equal up to float32
    rounding; in bfloat16 the folded weight would round differently)."""
    dtype = compute_dtype(x)
    if shortcut.dtype != dtype:
        return False
    return scale is None or dtype == scale.dtype == torch.float32


def inference_kernels(x: torch.Tensor, w1: torch.Tensor, shortcut: torch.Tensor,
                      scale: Optional[torch.Tensor], mid: bool) -> List[tuning.Kernel]:
    """The kernels that may compute a call of :func:`residual_mlp`, plain first: ``plain``,
    ``onednn``; ``onednn_add`` with the residual in the compute dtype and no layer scale or all
    of float32; ``blocked`` without ``mid``, for each of :func:`block_sizes`, and with one block
    of all rows where weights are packed (:func:`weight_packing_available`); without ``mid``
    and with our compiled library, ``thread_blocked`` for each of :func:`thread_block_sizes`."""
    kernels = [PLAIN, ONEDNN]
    if _add_inside(x, shortcut, scale):
        kernels.append(ONEDNN_ADD)
    if not mid:
        rows = row_count(x)
        kernels += [blocked(size) for size in block_sizes(rows, w1.shape[0],
                                                          compute_dtype(x).itemsize)]
        if weight_packing_available(compute_dtype(x)):
            kernels.append(blocked(rows))  # one block: oneDNN's products on packed weights
        if native.available():
            kernels += [thread_blocked(size) for size in thread_block_sizes(
                rows, w1.shape[0], compute_dtype(x).itemsize)]
    return kernels


def run_inference(kernel: tuning.Kernel, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                  w2: torch.Tensor, b2: torch.Tensor, shortcut: torch.Tensor,
                  scale: Optional[torch.Tensor] = None,
                  mid: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """``shortcut + scale * fc2(mid(gelu(fc1(x))))`` computed by ``kernel``, without autograd.

    Args:
        kernel (Kernel): One of :func:`inference_kernels` (any ``blocked`` rows).
        x, w1, b1, w2, b2, shortcut, scale, mid: As :func:`residual_mlp`.

    Returns:
        torch.Tensor: (..., C).
    """
    hidden = mid or (lambda h: h)
    if kernel == PLAIN:
        return _tail(shortcut, F.linear(hidden(F.gelu(F.linear(x, w1, b1))), w2, b2), scale)
    if kernel == ONEDNN:
        return _tail(shortcut, linear(hidden(linear_gelu(x, w1, b1)), w2, b2), scale)
    if kernel == ONEDNN_ADD and _add_inside(x, shortcut, scale):
        if scale is not None:  # folded into the product (float32)
            w2 = frozen.prepared(w2, ('scaled', id(scale)), lambda: w2 * scale[:, None])
            b2 = frozen.prepared(b2, ('scaled', id(scale)), lambda: b2 * scale)
        return linear_add(hidden(linear_gelu(x, w1, b1)), w2, b2, shortcut)
    if kernel.name == 'blocked' and mid is None:
        return blocked_residual_mlp(x, w1, b1, w2, b2, shortcut, scale, kernel.rows)
    if kernel.name == 'thread_blocked' and mid is None and native.available():
        return thread_blocked_residual_mlp(x, w1, b1, w2, b2, shortcut, scale, kernel.rows)
    raise ValueError(f'kernel {kernel} cannot compute this block tail (layer scale: '
                     f'{scale is not None}, GRN: {mid is not None})')


def residual_mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                 b2: torch.Tensor, shortcut: torch.Tensor, scale: Optional[torch.Tensor] = None,
                 mid: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    """Inference: the block's tail ``shortcut + scale * fc2(mid(gelu(fc1(x))))`` by the kernel
    decided for its shape class (:func:`~.tuning.choose` over :func:`inference_kernels`).

    No autograd: no input needs a gradient. The inputs are contiguous CPU tensors of a dtype
    oneDNN computes (``fast_path.decide`` checks all of this).

    Args:
        x (torch.Tensor): (..., C), the normed block input.
        w1 (torch.Tensor): (4C, C). b1 (torch.Tensor): (4C,).
        w2 (torch.Tensor): (C, 4C). b2 (torch.Tensor): (C,).
        shortcut (torch.Tensor): (..., C), the residual.
        scale (torch.Tensor, optional): (C,), the layer scale; None for 1.
        mid (Callable, optional): Applied to the whole hidden tensor (V2's GRN); rules out
            blocking.

    Returns:
        torch.Tensor: (..., C).
    """
    args = (x, w1, b1, w2, b2, shortcut, scale, mid)
    shape = inference_shape(x, w1, shortcut, scale, mid is not None)
    kernels = inference_kernels(x, w1, shortcut, scale, mid is not None)
    return tuning.choose(shape, kernels, lambda kernel: run_inference(kernel, *args))[1]


def _onednn_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` (2-D) by oneDNN: ``b`` is read as the transposed weight of a Linear, so views
    such as ``grad.t()`` need no copy.

    Note:
        The weight gradients of the oneDNN training kernels use this instead of ``torch.mm``
        (``a`` a contiguous transposed copy, see :class:`_MLP`): on the AMD EPYCs measured,
        ``torch.mm`` (MKL) ran float32 products at half oneDNN's rate. The training probe times
        these kernels against the plain ops (autograd's ``torch.mm``), so where MKL is faster
        the plain ops are chosen.
    """
    return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, 'none', [], '')


def _onednn_addmm(acc: Optional[torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``acc + a @ b`` (2-D) by oneDNN, the add inside the product (a new tensor); ``acc``
    None: ``a @ b``."""
    if acc is None:
        return _onednn_mm(a, b)
    return torch.ops.mkldnn._linear_pointwise.binary(a, acc, b.t(), None, 'add')


def _transposed(t: torch.Tensor) -> torch.Tensor:
    """``t.t()`` as a contiguous tensor, the same values: by our tiled kernel where it is loaded
    (``native/transpose.cpp``; 2-D contiguous float32), else by ATen's copy.

    Note:
        ATen copies a transposed 2-D view on one thread (``aten/src/ATen/native/Copy.cpp``,
        ``copy_same_type_transpose_``): 0.45 ms for a (2048, 384) gradient on the 2-core Zen 4,
        0.07 ms by ours.
    """
    if native.available() and t.dim() == 2 and t.dtype == torch.float32 and t.is_contiguous():
        return torch.ops.convnext_backbone.transposed(t)
    return t.t().contiguous()


def _gelu_backward_(grad: torch.Tensor, h: torch.Tensor, gelu: Optional[torch.Tensor]
                    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``grad * gelu'(h)`` written over ``grad``, its column sums (``fc1``'s bias gradient) and
    ``gelu(h)`` (``gelu`` where given, else computed): by our kernel in one pass where it is
    loaded (``native/gelu.cpp``), else by ATen's ``gelu_backward``, ``sum`` and ``gelu``.

    Note:
        Our kernel's GELU and its derivative agree with ATen's to float rounding, not bit for
        bit (both approximate erf as ATen's vectorized ``erf``; ours takes ``exp(-h^2/2)`` once
        for both). Measured on the 2-core Zen 4, (2688, 384) with the GELU: 0.76 -> 0.42 ms;
        (2048, 1536) without: 2.0 -> 1.2 ms.

    Args:
        grad (torch.Tensor): (rows, 4C) float32, contiguous, overwritten.
        h (torch.Tensor): (rows, 4C), the pre-GELU activations.
        gelu (Optional[torch.Tensor]): ``gelu(h)`` where the forward kept it, else None.

    Returns:
        Tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ``grad`` itself, the (4C,) sums and
        ``gelu(h)``.
    """
    if native.available():
        out = torch.empty_like(h) if gelu is None else None
        sums = torch.ops.convnext_backbone.gelu_backward_sum_(grad, h, out)
        return grad, sums, gelu if out is None else out
    act = F.gelu(h) if gelu is None else gelu
    grad = torch.ops.aten.gelu_backward.grad_input(grad, h, grad_input=grad)
    return grad, grad.sum(0), act


def _block_weights(first: torch.Tensor, second: Optional[torch.Tensor], block: int,
                   rows: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The two weights of :class:`_MLP`'s products (forward: ``w1, w2``; backward: their
    transposed views): packed once per call (:func:`packed`) where several blocks share them,
    else as they are, views included.

    Note:
        One block of all rows (the ``onednn`` kernel) hands oneDNN the weights as they are,
        transposed views included: its product reorders them itself, faster than a transposed
        copy (ATen's, about 1 ms for a 1536x384 weight on the 2-core Zen 4) and a separate
        reorder. Measured there, forward and backward of one MLP, interleaved: C=768, 512 rows
        104.6 -> 91.2 ms; C=384, 2048 rows 92.2 -> 89.3; C=192 equal.
    """
    if block >= rows:
        return first, second
    return (packed(first.contiguous(), block),
            None if second is None else packed(second.contiguous(), block))


class _MLP(torch.autograd.Function):
    """``linear(gelu(linear(x, w1, b1)), w2, b2)`` on 2-D float32 x over blocks of ``rows`` rows,
    with oneDNN products and a hand-written backward (autograd's formulas).

    Forward: each block's pre-GELU activations are written once (kept for backward); their GELU
    stays in cache. Backward, per block: the GELU is computed again from them and the hidden
    gradient lives in cache only, written into the buffer of the incoming one (no new (rows, 4C)
    tensor); the weight gradients are summed over the blocks. One block of all rows is the
    'onednn' kernel: nothing is copied or summed, and its GELU is kept for backward instead of
    computed again (as fast as a kernel of its own, measured on the 2-core EPYC). Where
    several blocks share the weights, they are packed once per call (:func:`packed`), not
    reordered by every block; one block takes them as they are (:func:`_block_weights`).

    Note:
        The weight gradients ``grad^T gelu`` and ``grad_h^T x`` hand oneDNN the transposed
        gradient as a contiguous input made by :func:`_transposed`: oneDNN's op copies a
        transposed view with ATen's one-threaded copy, which took 49 ms per call at stage 2 of
        a 2x3x512x512 training step on the 2-core Zen 4 (2048x1536), more than the product.
    """

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2, rows):
        op = torch.ops.mkldnn._linear_pointwise
        hidden, outs = [], []
        block = min(rows, x.shape[0])
        pw1, pw2 = _block_weights(w1, w2, block, x.shape[0])
        for i in range(0, x.shape[0], rows):
            hidden.append(op(x[i:i + rows], pw1, b1, 'none', [], ''))        # (rows, 4C)
            gelu = F.gelu(hidden[-1])                                          # in cache
            outs.append(op(gelu, pw2, b2, 'none', [], ''))                   # (rows, C)
        # One block: its GELU is kept too, not computed again in backward.
        ctx.save_for_backward(x, w1, w2, *hidden, *([gelu] if len(hidden) == 1 else []))
        ctx.rows, ctx.blocks = rows, len(hidden)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    @staticmethod
    def backward(ctx, grad):
        x, w1, w2, *saved = ctx.saved_tensors
        hidden, gelus = saved[:ctx.blocks], saved[ctx.blocks:] or [None] * ctx.blocks
        op = torch.ops.mkldnn._linear_pointwise
        grad = grad.contiguous()
        block = min(ctx.rows, x.shape[0])
        w2t, w1t = _block_weights(w2.t(), w1.t() if ctx.needs_input_grad[0] else None, block,
                                  x.shape[0])
        grad_xs = []
        grad_w1 = grad_b1 = grad_w2 = None
        for i, h, a in zip(range(0, x.shape[0], ctx.rows), hidden, gelus):
            g = grad[i:i + ctx.rows]
            grad_a = op(g, w2t, None, 'none', [], '')                         # (rows, 4C)
            # d gelu(h) / dh, in place (grad_a is ours alone), and the GELU where not kept
            grad_h, sums, gelu = _gelu_backward_(grad_a, h, a)
            grad_w2 = _onednn_addmm(grad_w2, _transposed(g), gelu)
            if ctx.needs_input_grad[0]:
                grad_xs.append(op(grad_h, w1t, None, 'none', [], ''))
            grad_w1 = _onednn_addmm(grad_w1, _transposed(grad_h), x[i:i + ctx.rows])
            grad_b1 = sums if grad_b1 is None else grad_b1.add_(sums)
        grad_x = (grad_xs[0] if len(grad_xs) == 1 else torch.cat(grad_xs)) if grad_xs else None
        return grad_x, grad_w1, grad_b1, grad_w2, grad.sum(0), None


def blocked_mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                b2: torch.Tensor, rows: int) -> torch.Tensor:
    """``fc2(gelu(fc1(x)))`` over blocks of ``rows`` rows with oneDNN products, with autograd.

    Same values and gradients as the plain ops up to float rounding (the weight gradients are
    summed block by block). Float32 CPU tensors, oneDNN available.

    Args:
        x (torch.Tensor): (..., C), contiguous.
        w1 (torch.Tensor): (4C, C). b1 (torch.Tensor): (4C,).
        w2 (torch.Tensor): (C, 4C). b2 (torch.Tensor): (C,).
        rows (int): Rows per block, >= 1; at least all rows: one block.

    Returns:
        torch.Tensor: (..., C).
    """
    if rows < 1:
        raise ValueError(f'rows={rows!r} must be a positive int')
    out = _MLP.apply(x.reshape(-1, x.shape[-1]), w1, b1, w2, b2, rows)
    return out.view(*x.shape[:-1], w2.shape[0])


def training_shape(x: torch.Tensor, w1: torch.Tensor) -> tuning.ShapeClass:
    """The :class:`~.tuning.ShapeClass` of a call of :func:`mlp`."""
    return tuning.ShapeClass(
        op='training', channels=x.shape[-1], hidden=w1.shape[0], dtype=dtype_name(x.dtype),
        residual='', layer_scale=False, grn=False, input_grad=x.requires_grad,
        rows_log2=row_count(x).bit_length(), threads=torch.get_num_threads())


def training_kernels(x: torch.Tensor, w1: torch.Tensor) -> List[tuning.Kernel]:
    """The kernels that may compute a call of :func:`mlp`, plain first: ``plain``, ``onednn``
    and ``blocked`` for each of :func:`block_sizes`."""
    return [PLAIN, ONEDNN] + [blocked(rows) for rows in block_sizes(row_count(x), w1.shape[0],
                                                                     x.element_size())]


def run_training(kernel: tuning.Kernel, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                 w2: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """``fc2(gelu(fc1(x)))`` with autograd, computed by ``kernel``: ``plain`` (autograd's),
    ``onednn`` (:class:`_MLP` over one block of all rows) or ``blocked`` (:func:`blocked_mlp`).
    """
    if kernel == PLAIN:
        return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)
    if kernel == ONEDNN:
        return blocked_mlp(x, w1, b1, w2, b2, rows=max(row_count(x), 1))
    if kernel.name == 'blocked':
        return blocked_mlp(x, w1, b1, w2, b2, rows=kernel.rows)
    raise ValueError(f'kernel {kernel} cannot compute a training MLP')


def mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
        b2: torch.Tensor, with_grad: bool = True) -> torch.Tensor:
    """Training: the block's ``fc2(gelu(fc1(x)))`` by the kernel decided for its shape class.

    With gradients: the fastest of :func:`training_kernels`, decided by timing a forward and
    backward on detached copies the first time (the weights' gradients are not touched).
    Without (a block in training mode under ``torch.no_grad``, for its drop path): the oneDNN
    products, nothing to time a backward on. The inputs are contiguous float32 CPU tensors, no
    autocast (``fast_path.decide`` checks all of this).

    Args:
        x (torch.Tensor): (..., C), the normed block input.
        w1 (torch.Tensor): (4C, C). b1 (torch.Tensor): (4C,).
        w2 (torch.Tensor): (C, 4C). b2 (torch.Tensor): (C,).
        with_grad (bool): Whether ``x`` or a weight needs a gradient. Defaults to True.

    Returns:
        torch.Tensor: (..., C).
    """
    if not with_grad:
        return linear(linear_gelu(x, w1, b1), w2, b2)
    return tuning.choose_with_backward(training_shape(x, w1), training_kernels(x, w1),
                                       run_training, (x, w1, b1, w2, b2))
