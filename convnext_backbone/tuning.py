"""Which kernel computes the block's MLP: chosen per shape class by timing, or pinned from a file.

A fast kernel (oneDNN products, a cache-blocked MLP) is only worth running where it is faster
than the plain PyTorch ops, and that depends on the CPU. So each decision is made once per
process and :class:`ShapeClass` (kind of op, channels, dtypes, order of magnitude of the rows,
threads), by running every candidate :class:`Kernel` on the real input of the first call of that
class in interleaved rounds and keeping the fastest (best of ``ROUNDS``); the plain kernel wins
ties within ``MARGIN``. The probe's own result is returned, so the first call costs a few runs of
the op, not more. Every decision is logged in one line (mmengine's current logger) and can be
written to a JSON file (:func:`save`).

``CONVNEXT_FAST_PATHS`` in the environment sets the policy:

- ``auto`` (the default): probe as above;
- ``plain``: the plain kernel always runs;
- a path to a JSON file written by :func:`save` (by ``tools/benchmark.py --save-fast-paths`` or
  at the end of a run: ``fast_paths.json`` in its work dir): the kernels it names run without
  timing anything, and shape classes it does not name run the plain kernel. The same file and
  thread count give the same kernels, hence the same results, in every run.

Note:
    Under ``torch.use_deterministic_algorithms(True)`` the block does not reach this module at
    all: its modules run as written (``convnext.Block.why_not_fast_path``).
"""
import contextlib
import dataclasses
import json
import os
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

__all__ = ['MARGIN', 'Decision', 'Kernel', 'ShapeClass', 'choose', 'decided', 'decisions',
           'policy', 'reset', 'save', 'use_policy', 'version']

T = TypeVar('T')

#: A fast candidate must beat the plain one (the first) by this fraction of its time.
MARGIN = 0.02
#: Timed rounds per probe (after one untimed round that also warms caches and allocators).
ROUNDS = 3
#: A chosen fast kernel running this many times slower than when it was chosen ...
DRIFT = 2.0
#: ... this many calls in a row is timed against the others again, ...
SLOW_CALLS = 3
#: ... at most this many times per shape class and process.
MAX_REPROBES = 3
#: The policies that are not a file name.
POLICIES = ('auto', 'plain')
#: Format version of the decisions file.
FILE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class ShapeClass:
    """The inputs one decision covers.

    Attributes:
        op (str): 'inference' (the block's tail ``shortcut + scale * fc2(gelu(fc1(x)))`` without
            autograd) or 'training' (``fc2(gelu(fc1(x)))`` with autograd).
        channels (int): C, the block's width.
        hidden (int): The hidden width (4C).
        dtype (str): The compute dtype, e.g. 'float32' or 'bfloat16'.
        residual (str): Dtype of the residual stream ('' for training).
        layer_scale (bool): Whether the tail multiplies by a layer scale (V1).
        grn (bool): Whether GRN sits between the products (V2).
        input_grad (bool): Training: whether the input needs a gradient.
        rows_log2 (int): ``rows.bit_length()`` of the rows (N*H*W): rows within a factor 2.
        threads (int): torch's intra-op threads.
    """
    op: str
    channels: int
    hidden: int
    dtype: str
    residual: str
    layer_scale: bool
    grn: bool
    input_grad: bool
    rows_log2: int
    threads: int

    def __str__(self) -> str:
        rows = f'rows {2 ** (self.rows_log2 - 1)}..{2 ** self.rows_log2 - 1}'
        extras = [f'residual {self.residual}' if self.residual else '',
                  'layer scale' if self.layer_scale else '', 'GRN' if self.grn else '',
                  'input grad' if self.input_grad else '']
        return ', '.join([f'{self.op} MLP C={self.channels} (hidden {self.hidden}) {self.dtype}',
                          *[e for e in extras if e], rows, f'{self.threads} threads'])


@dataclasses.dataclass(frozen=True)
class Kernel:
    """One way to compute a shape class.

    Attributes:
        name (str): 'plain' (PyTorch ops), 'onednn' (oneDNN products with bias and GELU inside),
            'onednn_add' (also the residual add inside the second product) or 'blocked'
            (cache-blocked oneDNN products).
        rows (int): Rows per block of 'blocked'; 0 otherwise.
    """
    name: str
    rows: int = 0

    def __str__(self) -> str:
        return f'{self.name}(rows={self.rows})' if self.rows else self.name


@dataclasses.dataclass
class Decision:
    """What runs for a shape class, and why.

    Attributes:
        kernel (Kernel): The kernel.
        source (str): 'probe' (timed here), 'pinned' (from the decisions file) or 'default'
            (the plain kernel: not in the decisions file).
        seconds (dict[Kernel, float]): Best time of each candidate of the probe; empty otherwise.
    """
    kernel: Kernel
    source: str
    seconds: Dict[Kernel, float] = dataclasses.field(default_factory=dict)


_DECISIONS: Dict[ShapeClass, Decision] = {}
_SLOW: Dict[ShapeClass, int] = {}
_REPROBES: Dict[ShapeClass, int] = {}
_OVERRIDE: Optional[str] = None
_PINNED: Dict[Tuple[str, float], Dict[ShapeClass, Kernel]] = {}
# Counts every change of _DECISIONS (a new, replaced, dropped or forgotten decision), so that a
# saver can tell a re-probe that replaced one kernel with another from no change at all.
_VERSION = 0


def policy() -> str:
    """The fast-path policy: that of :func:`use_policy`, else ``CONVNEXT_FAST_PATHS``.

    Returns:
        str: 'auto', 'plain' or the path of a decisions file.

    Raises:
        ValueError: ``CONVNEXT_FAST_PATHS`` is neither a policy nor an existing file.
    """
    if _OVERRIDE is not None:
        return _OVERRIDE
    value = os.environ.get('CONVNEXT_FAST_PATHS', '').strip() or 'auto'
    return _check(value, 'CONVNEXT_FAST_PATHS')


def _check(value: str, name: str) -> str:
    if value.lower() in POLICIES:
        return value.lower()
    if os.path.isfile(value):
        return value
    raise ValueError(f'{name}={value!r} is neither a fast-path policy ({", ".join(POLICIES)}) '
                     'nor an existing decisions file (written by tuning.save, '
                     'tools/benchmark.py --save-fast-paths, or fast_paths.json in a work dir)')


@contextlib.contextmanager
def use_policy(value: str) -> Iterator[None]:
    """Within the block, run under fast-path policy ``value`` ('auto', 'plain' or a file), e.g.
    to time the plain ops beside the fast paths in one process."""
    global _OVERRIDE
    previous, _OVERRIDE = _OVERRIDE, _check(value, 'policy')
    try:
        yield
    finally:
        _OVERRIDE = previous


def choose(shape: ShapeClass, kernels: Sequence[Kernel],
           run: Callable[[Kernel], T]) -> Tuple[Kernel, T]:
    """Run the kernel decided for ``shape`` on the current input, deciding it first if needed.

    Args:
        shape (ShapeClass): The shape class of the input.
        kernels (Sequence[Kernel]): The candidates; the first is the plain one, the fallback.
        run (Callable[[Kernel], T]): Computes the result with a kernel. Any kernel of a pinned
            file with one of the candidates' names may be asked for (e.g. other block rows).

    Returns:
        tuple[Kernel, T]: The kernel that ran and its result.

    Raises:
        ValueError: A pinned file names a kernel no candidate of this shape class has.
    """
    current = policy()
    plain = kernels[0]
    if current == 'plain' or len(kernels) == 1:
        return plain, run(plain)
    decision = _DECISIONS.get(shape)
    if decision is None and current != 'auto':
        decision = _pinned_decision(current, shape, kernels)
    if decision is not None:
        if decision.source != 'probe' or decision.kernel == plain:
            return decision.kernel, run(decision.kernel)
        start = time.perf_counter()
        result = run(decision.kernel)
        _watch(shape, decision, time.perf_counter() - start)
        return decision.kernel, result
    return _probe(shape, kernels, run)


def _probe(shape: ShapeClass, kernels: Sequence[Kernel],
           run: Callable[[Kernel], T]) -> Tuple[Kernel, T]:
    times: Dict[Kernel, List[float]] = {k: [] for k in kernels}
    results: Dict[Kernel, T] = {}
    for round_ in range(ROUNDS + 1):
        for kernel in kernels:
            start = time.perf_counter()
            results[kernel] = run(kernel)
            if round_:
                times[kernel].append(time.perf_counter() - start)
    # The least disturbed run of each: other processes only ever add time.
    best_times = {k: min(ts) for k, ts in times.items()}
    plain = kernels[0]
    best = min(best_times, key=best_times.__getitem__)
    if best_times[best] > best_times[plain] * (1 - MARGIN):
        best = plain
    _record(shape, Decision(best, 'probe', best_times))
    return best, results[best]


def _pinned_decision(path: str, shape: ShapeClass, kernels: Sequence[Kernel]) -> Decision:
    kernel = _load(path).get(shape)
    if kernel is None:
        decision = Decision(kernels[0], 'default')
    elif kernel.name not in {k.name for k in kernels}:
        raise ValueError(f'{path} pins kernel {kernel} for "{shape}", which this shape class '
                         f'cannot run (its kernels: {", ".join(str(k) for k in kernels)}); '
                         'write the file again on this model (tools/benchmark.py '
                         '--save-fast-paths) or remove that entry')
    else:
        decision = Decision(kernel, 'pinned')
    _record(shape, decision)
    return decision


def _changed() -> None:
    global _VERSION
    _VERSION += 1


def _record(shape: ShapeClass, decision: Decision) -> None:
    _DECISIONS[shape] = decision
    _changed()
    if decision.source == 'probe':
        timed = ', '.join(f'{k} {s * 1e3:.2f} ms' for k, s in decision.seconds.items())
        how = f'fastest of {timed}'
    elif decision.source == 'pinned':
        how = f'pinned by {policy()}'
    else:
        how = f'not in {policy()}: the plain ops'
    _log(f'convnext_backbone fast path for {shape}: {decision.kernel} ({how})')


def _log(message: str) -> None:
    from mmengine.logging import print_log
    print_log(message, logger='current')


def _watch(shape: ShapeClass, decision: Decision, seconds: float) -> None:
    slow = _SLOW.get(shape, 0) + 1 if seconds > DRIFT * decision.seconds[decision.kernel] else 0
    _SLOW[shape] = slow
    if slow >= SLOW_CALLS and _REPROBES.get(shape, 0) < MAX_REPROBES:
        _REPROBES[shape] = _REPROBES.get(shape, 0) + 1
        _SLOW[shape] = 0
        del _DECISIONS[shape]
        _changed()


def decided(shape: ShapeClass) -> Optional[Kernel]:
    """The kernel decided for ``shape`` in this process (the plain one under the 'plain'
    policy is not recorded), or None."""
    decision = _DECISIONS.get(shape)
    return decision.kernel if decision is not None else None


def version() -> int:
    """A number that changes whenever a decision is made, replaced (a re-probe) or forgotten:
    what a saver of :func:`decisions` compares to know whether its file is current."""
    return _VERSION


def decisions() -> Dict[ShapeClass, Decision]:
    """What this process decided so far, shape class by shape class."""
    return {shape: dataclasses.replace(d, seconds=dict(d.seconds))
            for shape, d in _DECISIONS.items()}


def save(path: str) -> int:
    """Write this process's decisions to ``path`` (JSON), to pin them later with
    ``CONVNEXT_FAST_PATHS=path``.

    Args:
        path (str): The file to write.

    Returns:
        int: The number of shape classes written.
    """
    entries = [dict(shape=dataclasses.asdict(shape), kernel=dataclasses.asdict(d.kernel),
                    source=d.source,
                    ms={str(k): round(s * 1e3, 4) for k, s in d.seconds.items()})
               for shape, d in _DECISIONS.items()]
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(dict(version=FILE_VERSION, decisions=entries), f, indent=1)
    os.replace(tmp, path)
    return len(entries)


def _load(path: str) -> Dict[ShapeClass, Kernel]:
    stamp = (path, os.path.getmtime(path))
    if stamp not in _PINNED:
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            if data.get('version') != FILE_VERSION:
                raise ValueError(f'version {data.get("version")!r}, expected {FILE_VERSION}')
            _PINNED[stamp] = {ShapeClass(**e['shape']): Kernel(**e['kernel'])
                              for e in data['decisions']}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f'CONVNEXT_FAST_PATHS={path} is not a decisions file written by '
                             f'convnext_backbone.tuning.save ({type(err).__name__}: {err})'
                             ) from None
    return _PINNED[stamp]


def reset(shape: Optional[ShapeClass] = None) -> None:
    """Forget one decision (``shape``) or all of them, so that the next call decides again."""
    for table in (_DECISIONS, _SLOW, _REPROBES):
        if shape is None:
            table.clear()
        else:
            table.pop(shape, None)
    if shape is None:
        _PINNED.clear()
    _changed()
