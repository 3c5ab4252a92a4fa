"""``torch.compile`` for validation and testing: mmengine's ``compile=True`` wraps ``train_step``
only (``mmengine/runner/runner.py``: ``Runner.train`` calls ``self._maybe_compile('train_step')``,
``Runner.val`` and ``Runner.test`` compile nothing), so a test run with it stays eager. This
hook compiles chosen submodules (the backbone by default) for ``val`` and ``test`` and restores
them afterwards.

Enable it in a config (or with ``--cfg-options``)::

    custom_hooks = [dict(type='convnext_backbone.CompileForTestHook')]
"""
import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn.functional as F
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from torch import nn

from ..registry import HOOKS

__all__ = ['CompiledForward', 'CompileForTestHook']


class CompiledForward:
    """A module's forward, compiled for at most ``max_shapes`` input shapes, eager beyond.

    Installed as the instance attribute ``module.forward`` (state-dict keys and the module
    itself stay as they are; :meth:`remove` deletes the attribute). With ``pad_to`` every input
    of at most that size is padded with zeros at the bottom and right to exactly that size
    (one shape, one compilation) and every output map is cropped back to
    ``ceil(input size / its stride)``.

    Args:
        module (nn.Module): Its first positional argument is an (N, C, H, W) tensor; it
            returns a tensor or a tuple/list of (N, C', h, w) maps.
        backend (str): ``torch.compile`` backend. Defaults to 'inductor'.
        max_shapes (int): Input shapes to compile for; further shapes run eager. Defaults to 4.
        pad_to (tuple[int, int], optional): Fixed (H, W) to pad inputs to. Defaults to None.
        compile_kwargs (dict, optional): More ``torch.compile`` arguments (e.g. ``mode``).

    Note:
        Padding changes the maps near the bottom and right edges a little (the padded zeros
        enter the receptive fields there, as mmdet's own padding to a multiple of 32 does), so
        it is off by default: without it the compiled model computes the eager one's function.
    """

    def __init__(self, module: nn.Module, backend: str = 'inductor', max_shapes: int = 4,
                 pad_to: Optional[Tuple[int, int]] = None,
                 compile_kwargs: Optional[Dict[str, Any]] = None) -> None:
        _check(max_shapes, pad_to)
        self.module = module
        self.eager: Callable[..., Any] = functools.partial(type(module).forward, module)
        self.compiled = torch.compile(self.eager, backend=backend, dynamic=False,
                                      **(compile_kwargs or {}))
        self.max_shapes = max_shapes
        self.pad_to = tuple(pad_to) if pad_to is not None else None
        self.shapes: Set[Tuple[int, ...]] = set()
        module.forward = self

    def __call__(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Run the compiled forward when ``x``'s (padded) shape is one of the compiled ones or
        a slot is free, else the eager one."""
        height, width = x.shape[-2:]
        padded = x
        if self.pad_to is not None and height <= self.pad_to[0] and width <= self.pad_to[1]:
            padded = F.pad(x, (0, self.pad_to[1] - width, 0, self.pad_to[0] - height))
        shape = tuple(padded.shape)
        if shape not in self.shapes and len(self.shapes) >= self.max_shapes:
            return self.eager(x, *args, **kwargs)
        self.shapes.add(shape)
        out = self.compiled(padded, *args, **kwargs)
        return out if padded is x else _crop(out, padded.shape[-2:], (height, width))

    def remove(self) -> None:
        """Bring back the module's own (eager) forward."""
        if self.module.__dict__.get('forward') is self:
            del self.module.forward


def _check(max_shapes: int, pad_to: Optional[Tuple[int, int]]) -> None:
    if not isinstance(max_shapes, int) or max_shapes < 1:
        raise ValueError(f'max_shapes={max_shapes!r} must be an int >= 1')
    if pad_to is not None and (len(pad_to) != 2 or min(pad_to) < 1):
        raise ValueError(f'pad_to={pad_to!r} must be None or (H, W) with H, W >= 1')


def _crop(out: Any, padded: Sequence[int], size: Sequence[int]) -> Any:
    if isinstance(out, torch.Tensor):
        stride_h, stride_w = padded[0] / out.shape[-2], padded[1] / out.shape[-1]
        return out[..., :-(-size[0] // int(stride_h)), :-(-size[1] // int(stride_w))]
    return type(out)(_crop(o, padded, size) for o in out)


@HOOKS.register_module()
class CompileForTestHook(Hook):
    """Compile submodules of the model with ``torch.compile`` for validation and testing.

    Before each val/test loop the named submodules (``modules``) get a :class:`CompiledForward`
    (compiled once per input shape, at most ``max_shapes`` shapes, eager beyond); after the loop
    their eager forward comes back, so training stays as configured. Compiled code is kept
    between validation rounds (weights are inputs of the compiled graphs, not constants).

    Args:
        modules (Sequence[str]): Attribute names of the submodules to compile, e.g.
            ``('backbone', 'neck')``. Defaults to ``('backbone',)``.
        backend (str): ``torch.compile`` backend. Defaults to 'inductor'.
        max_shapes (int): Compiled input shapes per submodule. Defaults to 4.
        pad_to (tuple[int, int], optional): Pad every input to this fixed (H, W) so that one
            compilation serves all images (see :class:`CompiledForward`). Defaults to None.
        compile_kwargs (dict, optional): More ``torch.compile`` arguments.

    Note:
        Not in the official code or in mmengine. The first image of each new shape pays the
        compilation (about a minute for ConvNeXt-T on 2 cores); docs/performance.md gives the
        gain per machine, which can be a loss.
    """

    priority = 'LOW'

    def __init__(self, modules: Sequence[str] = ('backbone',), backend: str = 'inductor',
                 max_shapes: int = 4, pad_to: Optional[Tuple[int, int]] = None,
                 compile_kwargs: Optional[Dict[str, Any]] = None) -> None:
        if isinstance(modules, str) or not modules:
            raise ValueError(f'modules={modules!r} must be a non-empty list of submodule names')
        self.modules = tuple(modules)
        self.options = dict(backend=backend, max_shapes=max_shapes, pad_to=pad_to,
                            compile_kwargs=compile_kwargs)
        _check(max_shapes, pad_to)
        self._forwards: Dict[str, CompiledForward] = {}
        self._installed: List[CompiledForward] = []

    def _install(self, runner: Runner) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        for name in self.modules:
            module = getattr(model, name, None)
            if not isinstance(module, nn.Module):
                raise ValueError(f'CompileForTestHook: the model ({type(model).__name__}) has '
                                 f'no submodule {name!r}; modules={self.modules!r}')
            forward = self._forwards.get(name)
            if forward is None or forward.module is not module:
                forward = self._forwards[name] = CompiledForward(module, **self.options)
            else:
                module.forward = forward
            self._installed.append(forward)

    def _remove(self, runner: Runner) -> None:
        while self._installed:
            self._installed.pop().remove()

    def before_val(self, runner: Runner) -> None:
        """Compile the submodules for validation."""
        self._install(runner)

    def after_val(self, runner: Runner) -> None:
        """Back to eager forwards for training."""
        self._remove(runner)

    def before_test(self, runner: Runner) -> None:
        """Compile the submodules for testing."""
        self._install(runner)

    def after_test(self, runner: Runner) -> None:
        """Back to eager forwards."""
        self._remove(runner)
