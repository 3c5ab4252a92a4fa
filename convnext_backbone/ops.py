"""oneDNN kernels for the ConvNeXt block's pointwise layers, with plain PyTorch fallbacks.

oneDNN (``torch.ops.mkldnn._linear_pointwise``, a private op that PyTorch's own inductor uses on
CPU) computes a Linear layer with its bias and a following GELU, or a following residual add, inside
the matrix product: no separate pass writes the bias into the output first, none reads it back for
the GELU or the add. We detect the op once (it exists, runs, and agrees with the plain ops on a tiny
input) and otherwise fall back to the plain ops, which give the same results.

The fused ops have no autograd formula: ``linear``, ``linear_gelu`` and ``linear_add`` use them only
when no gradient is needed (``torch.no_grad()``, or nothing requires grad), on CPU, outside
``torch.compile`` (inductor does its own fusion), and fall back to the autograd-correct plain ops
otherwise. ``mlp`` also covers training: its autograd function runs the forward products in oneDNN
and writes the backward with the same formulas autograd would use.
"""
import functools

import torch
import torch.nn.functional as F

__all__ = ['linear', 'linear_add', 'linear_gelu', 'mkldnn_linear_available', 'mlp']


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


def _fused_dtype(x: torch.Tensor, *params: torch.Tensor):
    """The compute dtype if oneDNN may run this Linear, else None."""
    if (x.device.type != 'cpu' or x.dtype == torch.float64 or torch.compiler.is_compiling()
            or torch.jit.is_tracing()):
        # (autocast leaves float64 alone; tracers, e.g. FLOP counters, must see plain ops)
        return None
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in params)):
        return None
    dtype = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else x.dtype
    return dtype if mkldnn_linear_available(dtype) else None


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``linear(x, weight, bias)``, the bias added inside the product when oneDNN may run it.

    Under CPU autocast the product runs in the autocast dtype, as ``F.linear`` would.

    Args:
        x (torch.Tensor): (..., in_features), contiguous.
        weight (torch.Tensor): (out_features, in_features).
        bias (torch.Tensor): (out_features,).

    Returns:
        torch.Tensor: (..., out_features).
    """
    return _linear_pointwise(x, weight, bias, gelu=False)


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``gelu(linear(x, weight, bias))`` (exact, erf GELU), fused by oneDNN when it may be.

    Arguments, result and autocast behaviour as :func:`linear`.
    """
    return _linear_pointwise(x, weight, bias, gelu=True)


def _linear_pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                      gelu: bool) -> torch.Tensor:
    dtype = _fused_dtype(x, weight, bias)
    if dtype is None:
        y = F.linear(x, weight, bias)
        return F.gelu(y) if gelu else y
    attr, algorithm = ('gelu', 'none') if gelu else ('none', '')
    return torch.ops.mkldnn._linear_pointwise(
        x.to(dtype), weight.to(dtype), bias.to(dtype), attr, [], algorithm)


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               other: torch.Tensor) -> torch.Tensor:
    """``other + linear(x, weight, bias)``, the add fused into the product when it may be.

    Fused only when ``other`` already has the compute dtype (under bf16 autocast with a float32
    residual the sum is a separate pass, so it stays float32 as autocast would make it).

    Args:
        x (torch.Tensor): (..., in_features), contiguous.
        weight (torch.Tensor): (out_features, in_features).
        bias (torch.Tensor): (out_features,).
        other (torch.Tensor): (..., out_features), the residual, contiguous.

    Returns:
        torch.Tensor: (..., out_features).
    """
    dtype = _fused_dtype(x, weight, bias, other)
    if dtype is None or other.dtype != dtype or not other.is_contiguous():
        return other + linear(x, weight, bias)
    return torch.ops.mkldnn._linear_pointwise.binary(
        x.to(dtype), other, weight.to(dtype), bias.to(dtype), 'add')


class _MLP(torch.autograd.Function):
    """``linear(gelu(linear(x, w1, b1)), w2, b2)`` on 2-D x with oneDNN products and a hand-written
    backward: the same formulas as autograd's, but the GELU gradient is written into the buffer
    of the incoming gradient instead of a new (N, 4C) tensor, one allocation and page-fault pass
    fewer per block."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        op = torch.ops.mkldnn._linear_pointwise
        h = op(x, w1, b1, 'none', [], '')                         # (M, 4C)
        a = F.gelu(h)
        ctx.save_for_backward(x, w1, w2, h, a)
        return op(a, w2, b2, 'none', [], '')                      # (M, C)

    @staticmethod
    def backward(ctx, grad):
        x, w1, w2, h, a = ctx.saved_tensors
        op = torch.ops.mkldnn._linear_pointwise
        grad = grad.contiguous()
        grad_a = op(grad, w2.t().contiguous(), None, 'none', [], '')  # (M, 4C)
        grad_w2, grad_b2 = torch.mm(grad.t(), a), grad.sum(0)
        # d gelu(h) / dh, in place: grad_a is ours alone.
        grad_h = torch.ops.aten.gelu_backward.grad_input(grad_a, h, grad_input=grad_a)
        grad_x = (op(grad_h, w1.t().contiguous(), None, 'none', [], '')
                  if ctx.needs_input_grad[0] else None)
        return grad_x, torch.mm(grad_h.t(), x), grad_h.sum(0), grad_w2, grad_b2


def mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
        b2: torch.Tensor) -> torch.Tensor:
    """The block's ``linear(gelu(linear(x, w1, b1)), w2, b2)``, with oneDNN where it may run.

    Without gradients: :func:`linear_gelu` then :func:`linear`. With gradients (float32 CPU
    tensors, no autocast, not compiling): an autograd function with oneDNN forward products.
    Otherwise the plain ops.

    Args:
        x (torch.Tensor): (..., C), contiguous.
        w1 (torch.Tensor): (4C, C). b1 (torch.Tensor): (4C,).
        w2 (torch.Tensor): (C, 4C). b2 (torch.Tensor): (C,).

    Returns:
        torch.Tensor: (..., C).
    """
    params = (w1, b1, w2, b2)
    if _fused_dtype(x, *params) is not None:
        return linear(linear_gelu(x, w1, b1), w2, b2)
    if (x.device.type != 'cpu' or torch.compiler.is_compiling() or torch.jit.is_tracing()
            or torch.is_autocast_enabled('cpu')
            or any(t.dtype != torch.float32 for t in (x, *params))
            or not mkldnn_linear_available(torch.float32) or not x.is_contiguous()):
        return F.linear(F.gelu(F.linear(x, w1, b1)), w2, b2)
    return _MLP.apply(x.reshape(-1, x.shape[-1]), *params).view(*x.shape[:-1], w2.shape[0])
