"""bf16 inference of whole detectors and segmentors: autocast everywhere, float32 where needed.

Under CPU bf16 autocast (``torch.autocast('cpu', torch.bfloat16)``, what mmengine's test loop
runs with ``test_cfg.fp16=True`` on a CPU) every convolution and Linear layer computes in bf16.
Two things of an OpenMMLab model must not:

- **mmcv's ops**: its CPU ``nms`` takes float32 boxes only ("expected scalar type Float but found
  BFloat16"), its ``RoIAlign`` has no bf16 kernel ("ROIAlign_forward not implemented for
  'BFloat16'");
- **the layers whose outputs are decoded**: box deltas and class scores in bf16 (8 bits of
  mantissa) would move an 800-pixel box by several pixels.

:func:`prepare_bf16` therefore wraps, in place, each mmcv op module (``RoIAlign``,
``RoIPool`` ...) and each head's output layer (:data:`OUTPUT_LAYERS`: RPN, box and mask heads
of mmdet, ``conv_seg`` of mmseg's decode heads) in :class:`Float32`, which gives them float32
inputs and runs them with autocast off. Everything else (backbone, neck, the heads' inner
layers) computes in bf16, as autocast makes of it. ``tools/test.py --bf16`` and
``tools/infer.py --bf16`` use it; ``tools/benchmark.py --e2e`` times it.

Note:
    Only for inference: the wrapped modules keep their weights, but their state-dict keys gain
    a ``.module`` level, so prepare a model after its weights are loaded and do not save it.
"""
import contextlib
from typing import Any, Iterator, List

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

from . import compat, machine
from .errors import UserError
from .registry import HOOKS

__all__ = ['OUTPUT_LAYERS', 'BF16Error', 'Float32', 'check_bf16', 'prepare_bf16',
           'bf16_autocast', 'BF16TestHook', 'use_bf16']

#: Names of the layers whose outputs are decoded into boxes, scores, masks or labels: mmdet's
#: ``RPNHead`` (rpn_cls, rpn_reg), ``ConvFCBBoxHead`` (fc_cls, fc_reg), ``FCNMaskHead``
#: (conv_logits), ``RetinaHead`` (retina_cls, retina_reg), ``FCOSHead``-like heads (conv_cls,
#: conv_reg, conv_centerness), mmseg's ``BaseDecodeHead`` (conv_seg).
OUTPUT_LAYERS = ('rpn_cls', 'rpn_reg', 'fc_cls', 'fc_reg', 'conv_logits', 'retina_cls',
                 'retina_reg', 'conv_cls', 'conv_reg', 'conv_centerness', 'conv_seg')


class BF16Error(UserError, RuntimeError):
    """bf16 inference was asked for where it cannot run well."""


class Float32(nn.Module):
    """Run ``module`` in float32 with autocast off, whatever precision its inputs come in.

    Args:
        module (nn.Module): The wrapped module (called as a module: its hooks fire).
        cast_back (bool): Return floating-point outputs in the dtype of the first
            floating-point input (for mmcv's ops, whose callers write the result into tensors
            of their input's dtype, e.g. mmdet's ``SingleRoIExtractor``); otherwise outputs stay
            float32 (for the output layers). Defaults to False.
    """

    def __init__(self, module: nn.Module, cast_back: bool = False) -> None:
        super().__init__()
        self.module = module
        self.cast_back = cast_back

    def __getattr__(self, name: str) -> Any:
        """Attributes of the wrapped module (e.g. ``RoIAlign.output_size``, which mmdet's
        ``SingleRoIExtractor`` reads) are the wrapper's."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules['module'], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's forward on float32 copies of the floating-point tensors."""
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        device = tensors[0].device.type if tensors else 'cpu'
        dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)
        args = tuple(_cast(a, torch.float32) for a in args)
        kwargs = {k: _cast(v, torch.float32) for k, v in kwargs.items()}
        with torch.autocast(device_type=device, enabled=False):
            out = self.module(*args, **kwargs)
        if not self.cast_back or dtype == torch.float32:
            return out
        if isinstance(out, (tuple, list)):
            return type(out)(_cast(o, dtype) for o in out)
        return _cast(out, dtype)


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.to(dtype)
    return value


def check_bf16(device: str = 'cpu') -> None:
    """Refuse bf16 inference, in one line, where bf16 is not native.

    Args:
        device (str): 'cpu' or 'cuda'.

    Raises:
        BF16Error: The CPU has no bf16 instructions (or oneDNN may not use them), or the GPU
            does not support bf16.
    """
    if device.startswith('cuda'):
        if not (torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
            raise BF16Error('--bf16: this GPU does not support bfloat16; run without --bf16')
        return
    lacks = machine.why_not_native_bf16()
    if lacks:
        raise BF16Error(f'--bf16 needs native bf16 ({lacks}); without it bf16 runs about '
                        f'{machine.BF16_SLOWDOWN_WITHOUT_NATIVE}x slower than float32: run '
                        'without --bf16')


def _is_mmcv_op(module: nn.Module) -> bool:
    return type(module).__module__.startswith('mmcv.ops')


def prepare_bf16(model: nn.Module) -> List[str]:
    """Wrap the mmcv op modules and head output layers of ``model`` in :class:`Float32`.

    Idempotent (a wrapped module is not wrapped again).

    Args:
        model (nn.Module): A detector or segmentor, weights loaded.

    Returns:
        list[str]: The names of the wrapped modules.
    """
    wrapped = []
    for parent_name, parent in list(model.named_modules()):
        if isinstance(parent, Float32):
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, Float32) or not (_is_mmcv_op(child) or name in OUTPUT_LAYERS):
                continue
            setattr(parent, name, Float32(child, cast_back=_is_mmcv_op(child)))
            wrapped.append(f'{parent_name}.{name}' if parent_name else name)
    return wrapped


@contextlib.contextmanager
def bf16_autocast(device: str = 'cpu') -> Iterator[None]:
    """``torch.autocast`` in bfloat16 on ``device`` ('cpu', 'cuda', 'cuda:1').

    Args:
        device (str): The model's device. Defaults to 'cpu'.
    """
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16):
        yield


@HOOKS.register_module()
class BF16TestHook(Hook):
    """Test in bf16: :func:`check_bf16` and :func:`prepare_bf16` before testing starts.

    mmengine's ``TestLoop(fp16=True)`` runs each test step under mmengine's ``autocast``, which
    computes in bfloat16 on a CPU and, on CUDA, in the dtype set with
    ``torch.set_autocast_dtype`` (float16 by default: this hook sets bfloat16 for the test and
    puts the previous dtype back after it). :func:`use_bf16` adds this hook and sets the flag.
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._cuda_dtype = None

    def before_test(self, runner: Any) -> None:
        """Refuse where bf16 is not native, wrap the float32 parts, set CUDA's autocast dtype."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        device = next(model.parameters()).device.type
        check_bf16(device)
        wrapped = prepare_bf16(model)
        if device == 'cuda':
            self._cuda_dtype = compat.autocast_dtype('cuda')
            compat.set_autocast_dtype('cuda', torch.bfloat16)
        print_log(f'bf16 test: autocast bfloat16 on {device}; {len(wrapped)} modules run in '
                  'float32 (mmcv ops and output layers)', logger='current')

    def after_test(self, runner: Any) -> None:
        """Put CUDA's autocast dtype back."""
        if self._cuda_dtype is not None:
            compat.set_autocast_dtype('cuda', self._cuda_dtype)
            self._cuda_dtype = None


def use_bf16(cfg: Any, device: str) -> None:
    """Make a config's test run in bf16: ``test_cfg.fp16=True`` and a :class:`BF16TestHook`.

    Args:
        cfg (mmengine.Config): An mmdet or mmseg config, changed in place.
        device (str): Where the test will run ('cpu', 'cuda').

    Raises:
        BF16Error: bf16 is not native on ``device`` (:func:`check_bf16`).
    """
    check_bf16(device)
    cfg.test_cfg = dict(cfg.get('test_cfg') or {}, fp16=True)
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('convnext_backbone.BF16TestHook', BF16TestHook) for h in hooks):
        hooks.append(dict(type='convnext_backbone.BF16TestHook'))
    cfg.custom_hooks = hooks
