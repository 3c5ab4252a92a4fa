"""May the block run fast kernels? The guard, and the one decision of its path.

A ConvNeXt block's tail (pwconv1 -> act [-> grn] -> pwconv2 -> layer scale -> drop path -> +
shortcut) takes one of three paths, decided once per block call by :func:`decide`:

- ``'inference'``: no tensor needs a gradient and no drop path: the whole tail by the inference
  kernel decided for its shape class (``ops.residual_mlp``);
- ``'training'``: pwconv1 -> act -> pwconv2 by the training kernel decided for its shape class
  (``ops.mlp``), with autograd; the tail after it is the block's own;
- ``'modules'``: the block's modules run as written.

A kernel runs only where every condition below proves that it computes the same function as the
modules: pwconv1/pwconv2 exactly ``nn.Linear`` with bias and act exactly ``nn.GELU()`` (no
subclass, wrapper, swap or quantized module), no hooks on them nor global module hooks, no tensor
subclass, no deterministic mode (``torch.use_deterministic_algorithms``), not under tracing,
compile or export, the ``plain`` policy not set, contiguous CPU tensors of a dtype oneDNN
computes; with gradients, float32 without autocast and no GRN. This is the pattern of
``torch.nn.TransformerEncoderLayer``'s fast path (``torch/nn/modules/transformer.py``).

On the inference path the block's head ``norm(dwconv(x))`` may run as our compiled kernel too
(``head.dwconv_norm``) where :func:`head_reason` finds nothing against it: dwconv exactly an
``nn.Conv2d`` 7x7, depthwise, stride 1, zero padding 3, dilation 1, with bias; norm exactly an
``nn.LayerNorm`` over C with weight and bias; no hooks on either; float32 or bfloat16 compute,
the parameters in the input's dtype outside autocast; the kernel built and loaded.

On the training path with gradients the block's ``dwconv`` may run with our backward
(``depthwise.depthwise_conv``) where :func:`dwconv_reason` finds nothing against it: the same
conv conditions as for the head, float32 without autocast, the kernel loaded.

A stage output ``norm{i}(x)`` as NCHW memory may run as our kernel too (``outputs.stage_output``)
where :func:`output_reason` finds nothing against it: the same context (no tracing, compile,
export or deterministic mode, the CPU), no gradients, norm exactly an ``nn.LayerNorm`` over C
with weight and bias and no hooks, float32 or bfloat16, a contiguous input, the kernel loaded.
"""
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.modules import module as module_hooks

from . import compat, native, ops, tuning

__all__ = ['INFERENCE', 'MODULES', 'TRAINING', 'Path', 'decide', 'dwconv_reason', 'has_hooks',
           'global_module_hooks', 'head_reason', 'native_dwconv', 'native_head', 'output_reason',
           'plain_only']

INFERENCE, TRAINING, MODULES = 'inference', 'training', 'modules'

# The hook tables of torch.nn.Module (torch/nn/modules/module.py), per module and global.
_HOOK_TABLES = ('_forward_hooks', '_forward_pre_hooks', '_backward_hooks', '_backward_pre_hooks')
_GLOBAL_HOOK_TABLES = tuple(f'_global{name}' for name in _HOOK_TABLES)


class Path(NamedTuple):
    """The path of one block call.

    Attributes:
        kind (str): :data:`INFERENCE`, :data:`TRAINING` or :data:`MODULES`.
        reason (str): Why the modules run (the first condition that fails); '' otherwise.
        with_grad (bool): Whether the input or a weight of pwconv1/pwconv2 needs a gradient.
    """
    kind: str
    reason: str = ''
    with_grad: bool = False


def plain_only() -> bool:
    """Whether only plain PyTorch ops may run: under ``torch.jit`` tracing (e.g. FLOP counters),
    ``torch.compile`` (inductor fuses on its own), ``torch.export`` or ONNX export (no private
    ops in the graph)."""
    return (torch.jit.is_tracing() or compat.is_compiling()
            or compat.is_exporting() or torch.onnx.is_in_onnx_export())


def _context_reason(x: torch.Tensor) -> str:
    """Why no kernel of ours may run in this call whatever the module: tracing, compile or
    export, deterministic mode, the 'plain' policy, or ``x`` not on the CPU ('' otherwise)."""
    if plain_only():
        return 'tracing, compiling or exporting'
    if torch.are_deterministic_algorithms_enabled():
        return 'deterministic algorithms are on (torch.use_deterministic_algorithms)'
    if tuning.policy() == 'plain':
        return 'CONVNEXT_FAST_PATHS=plain'
    if x.device.type != 'cpu':
        return f'the input is on {x.device.type}, not the CPU'
    return ''


def _dwconv_reason(conv: nn.Module, channels: int) -> str:
    """Why ``conv`` is not exactly an ``nn.Conv2d`` 7x7, depthwise over ``channels``, stride 1,
    zero padding 3, dilation 1, with bias, without hooks ('' when it is)."""
    if type(conv) is not nn.Conv2d:
        return f'dwconv is a {type(conv).__name__}, not an nn.Conv2d'
    geometry = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
                conv.in_channels, conv.out_channels, conv.padding_mode)
    if geometry != ((7, 7), (1, 1), (3, 3), (1, 1), channels, channels, channels, 'zeros'):
        return f'dwconv is {conv!r}, not a depthwise 7x7 conv with zero padding 3'
    if conv.bias is None:
        return 'dwconv has no bias'
    if has_hooks(conv):
        return 'dwconv has hooks'
    return ''


def _layer_norm_reason(norm: nn.Module, channels: int) -> str:
    """Why ``norm`` is not exactly an ``nn.LayerNorm`` over the last dimension, ``channels``
    wide, with weight and bias, without hooks ('' when it is)."""
    if type(norm) is not nn.LayerNorm:
        return f'norm is a {type(norm).__name__}, not an nn.LayerNorm'
    if (tuple(norm.normalized_shape) != (channels,) or norm.weight is None
            or norm.bias is None):
        return f'norm is {norm!r}, not a LayerNorm over C with weight and bias'
    if has_hooks(norm):
        return 'norm has hooks'
    return ''


def has_hooks(module: nn.Module) -> bool:
    """Whether ``module`` has forward, pre-forward or backward hooks."""
    return any(getattr(module, name, None) for name in _HOOK_TABLES)


def global_module_hooks() -> bool:
    """Whether hooks for every module are registered (``register_module_forward_hook`` ...)."""
    return any(getattr(module_hooks, name, None) for name in _GLOBAL_HOOK_TABLES)


def decide(block: nn.Module, x: torch.Tensor) -> Path:
    """The path of a block's tail for this call; whether gradients are needed is checked here
    once.

    Args:
        block (nn.Module): A ``convnext.Block`` (dwconv, norm, pwconv1, act, grn, pwconv2,
            gamma, drop path).
        x (torch.Tensor): The block input, (N, H, W, C): the residual, and through dwconv and
            norm (which keep its dtype, device and subclass and give a contiguous tensor) the
            input of pwconv1.

    Returns:
        Path: The kind of path, and for the modules the first condition that fails.
    """
    linears = {'pwconv1': block.pwconv1, 'pwconv2': block.pwconv2}
    reason = _context_reason(x)
    if reason:
        return Path(MODULES, reason)
    for name, module in linears.items():
        if type(module) is not nn.Linear:
            return Path(MODULES, f'{name} is a {type(module).__name__}, not an nn.Linear')
        if module.bias is None:
            return Path(MODULES, f'{name} has no bias')
    if type(block.act) is not nn.GELU or block.act.approximate != 'none':
        return Path(MODULES, f'act is {block.act!r}, not nn.GELU()')
    for name, module in (*linears.items(), ('act', block.act)):
        if has_hooks(module):
            return Path(MODULES, f'{name} has hooks')
    if global_module_hooks():
        return Path(MODULES, 'global module hooks are registered (torch.nn.modules.module)')
    params = [p for m in linears.values() for p in (m.weight, m.bias)]
    if torch.overrides.has_torch_function([x, *params]):
        return Path(MODULES, 'an input or weight is a tensor subclass')
    dtype = ops.compute_dtype(x)
    if not ops.mkldnn_linear_available(dtype):
        return Path(MODULES, f'oneDNN has no {dtype} kernels here')
    if not x.is_contiguous():
        return Path(MODULES, 'the input or the residual is not contiguous')
    # The one gradient check of the call: the MLP's tensors (its input is norm(dwconv(x))),
    # then those of the tail after it.
    grad_mode = torch.is_grad_enabled()
    head = (*block.dwconv.parameters(), *block.norm.parameters())
    with_grad = grad_mode and any(t.requires_grad for t in (x, *head, *params))
    tail_grad = with_grad or (grad_mode and any(
        p.requires_grad for p in (block.gamma, *_grn_params(block)) if p is not None))
    if not (tail_grad or block.drop_prob() > 0):
        return Path(INFERENCE)
    if with_grad and (dtype != torch.float32 or any(p.dtype != dtype for p in params)):
        return Path(MODULES, 'gradients under autocast or outside float32: no training kernel',
                    with_grad)
    if block.grn is not None:
        return Path(MODULES, 'GRN with gradients or drop path: no training kernel', with_grad)
    return Path(TRAINING, '', with_grad)


def head_reason(block: nn.Module, x: torch.Tensor) -> str:
    """Why the block's head ``norm(dwconv(x))`` may not run as our kernel on the inference path
    ('' when it may; call it only where :func:`decide` gave :data:`INFERENCE`).

    Args:
        block (nn.Module): A ``convnext.Block``.
        x (torch.Tensor): The block input, (N, H, W, C).

    Returns:
        str: The first condition that fails, or ''.
    """
    conv, norm, channels = block.dwconv, block.norm, x.shape[-1]
    reason = _dwconv_reason(conv, channels) or _layer_norm_reason(norm, channels)
    if reason:
        return reason
    dtype = ops.compute_dtype(x)
    if dtype not in (torch.float32, torch.bfloat16):
        return f'the head kernel computes float32 and bfloat16, not {dtype}'
    head = (conv.weight, conv.bias, norm.weight, norm.bias)
    if not compat.autocast_enabled('cpu') and any(p.dtype != x.dtype for p in head):
        return 'a dwconv or norm parameter is not in the input dtype'
    return native.unavailable_reason()


def dwconv_reason(block: nn.Module, x: torch.Tensor) -> str:
    """Why the block's ``dwconv`` may not run with our backward on the training path ('' when
    it may; call it only where :func:`decide` gave :data:`TRAINING` with gradients).

    Args:
        block (nn.Module): A ``convnext.Block``.
        x (torch.Tensor): The block input, (N, H, W, C).

    Returns:
        str: The first condition that fails, or ''.
    """
    conv = block.dwconv
    reason = _dwconv_reason(conv, x.shape[-1])
    if reason:
        return reason
    if compat.autocast_enabled('cpu') or any(
            t.dtype != torch.float32 for t in (x, conv.weight, conv.bias)):
        return 'the dwconv backward kernel computes float32 without autocast'
    return native.unavailable_reason()


def native_dwconv(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether the block's dwconv may run with our backward (:func:`dwconv_reason` is '')."""
    return dwconv_reason(block, x) == ''


def output_reason(norm: nn.Module, x: torch.Tensor) -> str:
    """Why a stage output ``norm(x)``, as contiguous NCHW, may not run as our kernel
    (``outputs.stage_output``; '' when it may).

    Args:
        norm (nn.Module): The backbone's ``norm{i}``.
        x (torch.Tensor): The stage's last block output, (N, H, W, C).

    Returns:
        str: The first condition that fails, or ''.
    """
    reason = _context_reason(x) or _layer_norm_reason(norm, x.shape[-1])
    if reason:
        return reason
    params = (norm.weight, norm.bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *params)):
        return 'gradients are needed: the output kernel has no backward'
    if global_module_hooks():
        return 'global module hooks are registered (torch.nn.modules.module)'
    if torch.overrides.has_torch_function([x, *params]):
        return 'an input or weight is a tensor subclass'
    if x.dtype not in (torch.float32, torch.bfloat16):
        return f'the output kernel computes float32 and bfloat16, not {x.dtype}'
    if any(p.dtype not in (torch.float32, x.dtype) for p in params):
        return 'a norm parameter is neither float32 nor in the input dtype'
    if not x.is_contiguous():
        return 'the input is not contiguous'
    return native.unavailable_reason()


def native_head(block: nn.Module, x: torch.Tensor) -> bool:
    """Whether the block's head may run as our kernel (:func:`head_reason` is '')."""
    return head_reason(block, x) == ''


def _grn_params(block: nn.Module) -> tuple:
    return () if block.grn is None else tuple(block.grn.parameters())
