"""Frozen weights: inference that prepares each weight once, not at every call.

At every call the block's fast path casts the MLP's weights to the compute dtype (bfloat16
under autocast) and packs them into the blocked layout oneDNN's products read
(``ops.packed``); the head kernel lays out the depthwise conv's weight as it reads it. On a
2-core Zen 5 a bf16 forward of ConvNeXt-T at 800x1216 took 0.337 s that way, and 0.308 s with the
weights frozen (docs/performance.md); fp32, whose casts are no-ops, took the same time either
way. Inside ``with frozen_weights(model):`` these copies are made at their first use and kept
until the ``with`` ends: the way an ONNX Runtime or OpenVINO session, or inductor's freezing
(``torch._inductor.config.freezing``), reads a model's weights once.

The copies compute the same function, to the bit: a weight is cast and packed once as it is at
every call (oneDNN's products on it give the same bits whatever rows it was packed for;
``tests/test_frozen.py`` checks both on each torch).

Note:
    The contract of the ``with`` block, as of those engines: the model's parameters do not
    change inside it. A change made inside (an optimizer step, ``load_state_dict``, a write
    through ``.data``) is not seen by the fast path until the block is left; outside one, every
    call reads the weights as they are. Gradients are unaffected: only the inference kernels
    (no autograd) read the copies. The copies take memory while the block lasts: at most a cast
    and a packed copy of each MLP weight per compute dtype (both where the probe timed kernels
    of both kinds).
"""
import contextlib
import contextvars
from typing import Callable, Dict, Hashable, Iterator, Optional, Tuple

import torch
from torch import nn

__all__ = ['frozen_weights', 'holds', 'prepared']


class _Scope:
    """The weights of one ``frozen_weights`` block and the copies made of them so far."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model  # holds the weights alive: their ids stay theirs while in scope
        self.ids = {id(t) for t in (*model.parameters(), *model.buffers())}
        self.copies: Dict[Tuple[int, Hashable], torch.Tensor] = {}


_SCOPES: contextvars.ContextVar[Tuple[_Scope, ...]] = contextvars.ContextVar(
    'convnext_backbone_frozen_scopes', default=())


@contextlib.contextmanager
def frozen_weights(model: nn.Module) -> Iterator[nn.Module]:
    """Inference in which the fast path prepares each weight of ``model`` once.

    Args:
        model (nn.Module): The model (or backbone) whose parameters and buffers are frozen
            for the duration of the block.

    Yields:
        nn.Module: ``model``.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> with torch.no_grad(), frozen_weights(model):
        ...     outs = [model(x) for x in batches]
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f'frozen_weights takes an nn.Module, not {type(model).__name__}')
    token = _SCOPES.set((*_SCOPES.get(), _Scope(model)))
    try:
        yield model
    finally:
        _SCOPES.reset(token)


def _scope_of(tensor: torch.Tensor) -> Optional[_Scope]:
    for scope in reversed(_SCOPES.get()):
        if id(tensor) in scope.ids:
            return scope
    return None


def holds(tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is a weight (parameter or buffer) frozen by an enclosing
    :func:`frozen_weights`."""
    return _scope_of(tensor) is not None


def prepared(tensor: torch.Tensor, what: Hashable,
             make: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``make()``: made once per ``(tensor, what)`` inside :func:`frozen_weights` of a model
    that holds ``tensor``, at every call otherwise.

    Args:
        tensor (torch.Tensor): The weight ``make`` reads (the key, with ``what``).
        what (Hashable): Which copy of it, e.g. ``('packed', torch.bfloat16)``.
        make (Callable[[], torch.Tensor]): Makes the copy from the weight as it is; no autograd.

    Returns:
        torch.Tensor: The copy.
    """
    scope = _scope_of(tensor)
    if scope is None:
        return make()
    key = (id(tensor), what)
    copy = scope.copies.get(key)
    if copy is None:
        with torch.no_grad():
            copy = scope.copies[key] = make()
    return copy
