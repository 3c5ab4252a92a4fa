"""What every mode of the benchmark shares: the device, interleaved timing, relative errors,
autocast, peak memory, random weights and the Markdown tables it prints."""
import statistics
import time
from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Dict, List, Sequence, Tuple

import torch
from torch import nn

from convnext_backbone import tuning

Outputs = Sequence[torch.Tensor]
#: Autocast dtypes by precision name.
AUTOCAST_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
#: The device of this run (``--device``): :func:`set_device`, :func:`device`.
_DEVICE = torch.device('cpu')


def set_device(name: str) -> None:
    """Run everything on device ``name`` ('cpu', 'cuda', 'cuda:1').

    Args:
        name (str): A torch device name.
    """
    global _DEVICE
    _DEVICE = torch.device(name)


def device() -> torch.device:
    """The device of this run. CUDA work is asynchronous: each timed call is bracketed by
    :func:`sync`, so the wall time is the device's.

    Returns:
        torch.device: The device set by :func:`set_device` (the CPU until then).
    """
    return _DEVICE


def sync() -> None:
    """Wait for the device (CUDA) to finish what was queued; nothing on the CPU."""
    if _DEVICE.type == 'cuda':
        torch.cuda.synchronize(_DEVICE)


def interleaved(fns: Dict[Any, Callable[[], object]], warmup: int,
                repeat: int) -> Tuple[Dict[Any, float], Dict[Any, float]]:
    """Median and best wall time in seconds of each function, run in interleaved rounds.

    Each round starts one function later than the one before, so that every function runs in
    every position of a round equally often (whatever the one before it leaves behind, e.g.
    freed memory to fault in again, is spread over all of them).

    Args:
        fns (dict): The functions to time, by name.
        warmup (int): Rounds run first and thrown away.
        repeat (int): Rounds timed.

    Returns:
        tuple[dict, dict]: Median and best seconds of each function, by name.
    """
    times: Dict[Any, List[float]] = {name: [] for name in fns}
    names = list(fns)
    for round_ in range(warmup + repeat):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            sync()
            start = time.perf_counter()
            fns[name]()
            sync()
            if round_ >= warmup:
                times[name].append(time.perf_counter() - start)
    return ({name: statistics.median(ts) for name, ts in times.items()},
            {name: min(ts) for name, ts in times.items()})


def rel_err(outs: Outputs, refs: Outputs) -> float:
    """Worst relative error ``||a - b|| / ||b||`` over the output maps.

    Args:
        outs (Sequence[torch.Tensor]): The maps to check.
        refs (Sequence[torch.Tensor]): The reference maps, in the same order.

    Returns:
        float: The largest relative error.
    """
    return max(((a.float() - b.float()).norm() / b.float().norm()).item()
               for a, b in zip(outs, refs))


def autocast(dtype: str) -> ContextManager:
    """The context of a precision on :func:`device`: nothing for fp32, autocast for bf16 / fp16.

    Args:
        dtype (str): 'fp32', 'bf16' or 'fp16'.

    Returns:
        ContextManager: The context to run in.
    """
    if dtype == 'fp32':
        return nullcontext()
    return torch.autocast(_DEVICE.type, AUTOCAST_DTYPES[dtype])


def on_device(module_or_tensor: Any, channels_last: bool = False) -> Any:
    """``module_or_tensor`` on :func:`device`, in channels-last memory format if asked.

    Args:
        module_or_tensor (nn.Module | torch.Tensor): What to move.
        channels_last (bool): Also convert to channels-last. Defaults to False.

    Returns:
        nn.Module | torch.Tensor: The moved module (the same one) or tensor.
    """
    moved = module_or_tensor.to(_DEVICE)
    return moved.to(memory_format=torch.channels_last) if channels_last else moved


def peak_memory(fn: Callable[[], object]) -> int:
    """Most bytes of tensors alive at once while ``fn`` runs, beyond those alive before it.

    From torch.profiler's memory events: each event's own allocations minus frees, summed in
    the order the events started (the CPU allocator reports every tensor allocation and free).

    Args:
        fn (Callable): What to measure.

    Returns:
        int: The peak, in bytes.
    """
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.time_range.start, e.self_cpu_memory_usage) for e in prof.events()
                    if e.self_cpu_memory_usage)
    alive = peak = 0
    for _, nbytes in events:
        alive += nbytes
        peak = max(peak, alive)
    return peak


def randomise_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random layer scales, norm weights and biases (initialisation leaves them 1e-6, 1 and 0,
    which would hide a wrong mapping or a skipped block).

    Args:
        model (nn.Module): The model, changed in place.
        seed (int): The seed. Defaults to 0.

    Returns:
        nn.Module: ``model``.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith('gamma'):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.5 + 0.25)
            elif p.dim() == 1:
                base = 1.0 if name.endswith('weight') and 'norm' in name else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
    return model


def all_ok(items: Sequence[Any], check: Callable[[Any], bool]) -> bool:
    """``check`` each of ``items`` (every one, also after a failure); whether all passed."""
    return all([check(item) for item in items])


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Print a Markdown table under a ``###`` title.

    Args:
        title (str): The title.
        header (Sequence[str]): The column names.
        rows (Sequence[Sequence[str]]): The cells, row by row.
    """
    print(f'\n### {title}\n')
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')


def print_decisions() -> None:
    """The kernel decided for each shape class and the probe's times."""
    rows = [[str(shape), str(d.kernel), d.source,
             ', '.join(f'{k} {1e3 * t:.2f}' for k, t in d.seconds.items())]
            for shape, d in tuning.decisions().items()]
    print_table('Fast paths decided in this process (tuning.decisions(); probe times in ms, best '
                f'of {tuning.ROUNDS} to {tuning.MAX_ROUNDS} rounds: more where runs spread)',
                ['shape class', 'kernel', 'how', 'candidates'], rows)


def train_step(model: nn.Module, x: torch.Tensor, weights: Sequence[torch.Tensor]) -> None:
    """One training step of a backbone: forward, and backward of a weighted sum of the outputs
    (random ``weights``, so every output and element counts); gradients start from None.

    Args:
        model (nn.Module): The backbone.
        x (torch.Tensor): The input.
        weights (Sequence[torch.Tensor]): One weight tensor per output map.
    """
    model.zero_grad(set_to_none=True)
    outs = model(x)
    sum((o * w).sum() for o, w in zip(outs, weights)).backward()
