"""Which kernel computes the block's MLP: chosen per shape class by timing, or pinned from a file.

The block's fast path has two ops, each with its candidate :class:`Kernel` s (``ops.py``):

- 'inference': the whole tail ``shortcut + scale * fc2(gelu(fc1(x)))`` without autograd (plain
  ops, oneDNN, oneDNN with the residual add inside, cache-blocked);
- 'training': the MLP ``fc2(gelu(fc1(x)))`` with autograd, timed forward and backward (plain
  ops, oneDNN with a hand-written backward, the same over blocks of rows).

A fast kernel is only worth running where it is faster than the plain PyTorch ops, and that
depends on the CPU. So each decision is made once per process and :class:`ShapeClass` (op,
channels, dtypes, order of magnitude of the rows, threads), by running every candidate on the
real input of the first call of that class in interleaved rounds and keeping the fastest: a
candidate replaces the plain kernel only where both its best run beats the plain kernel's best
by ``MARGIN`` and its median run beats the plain kernel's median. A shared machine makes single
runs slower at random; where a kernel's runs of the probe spread over more than a factor
``NOISY``, the probe adds rounds, up to ``MAX_ROUNDS``, so that each kernel's least disturbed run
is compared (``ROUNDS`` on a quiet machine). The probe's own result is returned,
so the first call costs a few runs of the op, not more (training probes on detached copies, then
runs the chosen kernel). A chosen inference kernel that becomes ``DRIFT`` times slower for
``SLOW_CALLS`` calls in a row is timed against the plain kernel again (the same rounds and
rule): where it still wins, the machine as a whole slowed down and its new time becomes the
normal one; where it lost, the class is probed again (at most ``MAX_REPROBES`` such checks
per class). A training decision stays for the process (see :meth:`Tuner.choose`). Every
decision is logged in one line (mmengine's current logger) and can be written to a JSON file
(:meth:`Tuner.save`).

``CONVNEXT_FAST_PATHS`` in the environment sets the policy:

- ``auto`` (the default): probe as above;
- ``plain``: the plain kernel always runs;
- a path to a JSON file written by :meth:`Tuner.save` (by ``tools/benchmark.py
  --save-fast-paths`` or at the end of a run: ``fast_paths.json`` in its work dir): the kernels
  it names run without timing anything, and shape classes it does not name run the plain
  kernel. The same file and thread count give the same kernels, hence the same results, in
  every run.

The state (decisions, drift counters, read files, a version) belongs to one :class:`Tuner` per
process, :data:`TUNER`; the module functions (:func:`choose`, :func:`decisions`, ...) are its
methods.

Note:
    Under ``torch.use_deterministic_algorithms(True)`` the block does not reach this module at
    all: its modules run as written (``convnext_backbone.fast_path``).
"""
import contextlib
import dataclasses
import json
import os
import statistics
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

import torch

__all__ = ['MARGIN', 'TUNER', 'Decision', 'Kernel', 'ShapeClass', 'Tuner', 'choose',
           'choose_with_backward', 'decided', 'decisions', 'policy', 'reset', 'save', 'use_policy',
           'version']

T = TypeVar('T')

#: A fast candidate must beat the plain one (the first) by this fraction of its time.
MARGIN = 0.02
#: Timed rounds per probe (after one untimed round that also warms caches and allocators) ...
ROUNDS = 3
#: ... and more, up to this many, while some kernel's slowest run of the probe is ...
MAX_ROUNDS = 9
#: ... more than this many times its fastest (other processes took the cores meanwhile).
NOISY = 1.25
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
            autograd), 'training' (``fc2(gelu(fc1(x)))`` with autograd), 'head' (the block's
            ``norm(dwconv(x))`` without autograd; ``hidden`` 0), 'output' (a stage output
            ``norm{i}(x)`` as NCHW memory, ``outputs.py``; ``hidden`` 0) or 'training_dwconv'
            (the block's depthwise conv with autograd, ``depthwise.py``; ``hidden`` 0).
        channels (int): C, the block's width.
        hidden (int): The hidden width (4C).
        dtype (str): The compute dtype, e.g. 'float32' or 'bfloat16'.
        residual (str): Dtype of the residual stream ('' for training).
        layer_scale (bool): Whether the tail multiplies by a layer scale (V1).
        grn (bool): Whether GRN sits between the products (V2).
        input_grad (bool): Training: whether the input needs a gradient.
        rows_log2 (int): ``rows.bit_length()`` of the rows (N*H*W): rows within a factor 2.
        threads (int): torch's intra-op threads.
        frozen (bool): Inference inside ``frozen.frozen_weights``: the weights are cast and
            packed once, not at every call (which favours the kernels that pack them).
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
    frozen: bool = False

    @property
    def training(self) -> bool:
        """Whether the class is of a training kernel (timed with its backward)."""
        return self.op.startswith('training')

    def __str__(self) -> str:
        rows = f'rows {2 ** (self.rows_log2 - 1)}..{2 ** self.rows_log2 - 1}'
        extras = [f'residual {self.residual}' if self.residual else '',
                  'layer scale' if self.layer_scale else '', 'GRN' if self.grn else '',
                  'input grad' if self.input_grad else '',
                  'frozen weights' if self.frozen else '']
        what = {'head': f'dwconv+LayerNorm C={self.channels}',
                'output': f'output LayerNorm to NCHW C={self.channels}',
                'training_dwconv': f'training dwconv 7x7 C={self.channels}'}.get(
                    self.op, f'{self.op} MLP C={self.channels} (hidden {self.hidden})')
        return ', '.join([f'{what} {self.dtype}',
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


class Tuner:
    """The kernel decisions of a process, the policy they follow and the files they come from.

    Its state changes under a lock, so threads running the model share the decisions; kernels
    (a probe included) run outside the lock.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._decisions: Dict[ShapeClass, Decision] = {}
        self._slow: Dict[ShapeClass, int] = {}       # calls in a row slower than DRIFT allows
        self._reprobes: Dict[ShapeClass, int] = {}     # drift checks made, per class
        self._reference: Dict[ShapeClass, float] = {}  # a decided kernel's normal time
        self._override: Optional[str] = None         # the policy of use_policy
        self._pinned: Dict[Tuple[str, float], Dict[ShapeClass, Kernel]] = {}  # read files
        # Counts every change of the decisions (a new, replaced, dropped or forgotten one), so
        # that a saver can tell a re-probe that replaced one kernel by another from no change.
        self._version = 0

    def policy(self) -> str:
        """The fast-path policy: that of :meth:`use_policy`, else ``CONVNEXT_FAST_PATHS``.

        Returns:
            str: 'auto', 'plain' or the path of a decisions file.

        Raises:
            ValueError: ``CONVNEXT_FAST_PATHS`` is neither a policy nor an existing file.
        """
        if self._override is not None:
            return self._override
        value = os.environ.get('CONVNEXT_FAST_PATHS', '').strip() or 'auto'
        return _check(value, 'CONVNEXT_FAST_PATHS')

    @contextlib.contextmanager
    def use_policy(self, value: str) -> Iterator[None]:
        """Within the block, run under fast-path policy ``value`` ('auto', 'plain' or a file),
        e.g. to time the plain ops beside the fast paths in one process."""
        checked = _check(value, 'policy')
        with self._lock:
            previous, self._override = self._override, checked
        try:
            yield
        finally:
            with self._lock:
                self._override = previous

    def choose(self, shape: ShapeClass, kernels: Sequence[Kernel],
               run: Callable[[Kernel], T]) -> Tuple[Kernel, T]:
        """Run the kernel decided for ``shape`` on the current input, deciding it first if needed.

        Args:
            shape (ShapeClass): The shape class of the input.
            kernels (Sequence[Kernel]): The candidates; the first is the plain one, the fallback.
            run (Callable[[Kernel], T]): Computes the result with a kernel. Any kernel of a
                pinned file with one of the candidates' names may be asked for (e.g. other
                block rows).

        Returns:
            tuple[Kernel, T]: The kernel that ran and its result.

        Raises:
            ValueError: A pinned file names a kernel no candidate of this shape class has.
        """
        current = self.policy()
        plain = kernels[0]
        if current == 'plain' or len(kernels) == 1:
            return plain, run(plain)
        decision = self._decisions.get(shape)
        if decision is None and current != 'auto':
            decision = self._pinned_decision(current, shape, kernels)
        if decision is None:
            return self._probe(shape, kernels, run)
        # Training decisions are not watched: a call times the forward only, not the forward
        # and backward the probe timed, and an activation checkpoint (with_cp) recomputes the
        # forward in backward, which must run the kernel the forward ran (a kernel replaced in
        # between saves other tensors: torch.utils.checkpoint refuses the recomputation).
        if decision.source != 'probe' or decision.kernel == plain or shape.training:
            return decision.kernel, run(decision.kernel)
        start = time.perf_counter()
        result = run(decision.kernel)
        if self._drifted(shape, decision, time.perf_counter() - start):
            self._confirm(shape, decision, plain, run)
        return decision.kernel, result

    def choose_with_backward(self, shape: ShapeClass, kernels: Sequence[Kernel],
                             run: Callable[..., torch.Tensor],
                             inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Training: ``run(kernel, *inputs)`` with autograd, by the kernel decided for ``shape``.

        Where it is not decided yet (nor pinned), each kernel is timed on a forward and a
        backward of detached copies of ``inputs`` (the gradients of ``inputs`` are not touched),
        then the chosen one runs on ``inputs``.

        Args:
            shape (ShapeClass): A training shape class.
            kernels (Sequence[Kernel]): The candidates, plain first.
            run (Callable): ``run(kernel, *inputs)`` computes the output with autograd.
            inputs (Sequence[torch.Tensor]): The tensors ``run`` takes.

        Returns:
            torch.Tensor: The output of the chosen kernel on ``inputs``.
        """
        if self.decided(shape) is not None or self.policy() != 'auto':
            return self.choose(shape, kernels, lambda kernel: run(kernel, *inputs))[1]

        def probe(kernel: Kernel) -> None:
            # Identity hooks: the probe's own graph is not seen by the saved-tensor hooks of an
            # enclosing activation checkpoint (with_cp), whose recomputation runs no probe.
            with torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t):
                copies = [t.detach().requires_grad_(t.requires_grad) for t in inputs]
                out = run(kernel, *copies)
                out.backward(torch.ones_like(out))

        kernel, _ = self.choose(shape, kernels, probe)
        return run(kernel, *inputs)

    def decided(self, shape: ShapeClass) -> Optional[Kernel]:
        """The kernel decided for ``shape`` in this process (the plain one under the 'plain'
        policy is not recorded), or None."""
        decision = self._decisions.get(shape)
        return decision.kernel if decision is not None else None

    def version(self) -> int:
        """A number that changes whenever a decision is made, replaced (a re-probe) or
        forgotten: what a saver of :meth:`decisions` compares to know whether its file is
        current."""
        return self._version

    def decisions(self) -> Dict[ShapeClass, Decision]:
        """What this process decided so far, shape class by shape class (a copy)."""
        with self._lock:
            return {shape: dataclasses.replace(d, seconds=dict(d.seconds))
                    for shape, d in self._decisions.items()}

    def save(self, path: str) -> int:
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
                   for shape, d in self.decisions().items()]
        tmp = f'{path}.tmp{os.getpid()}'
        with open(tmp, 'w', encoding='utf-8') as f:
            json.dump(dict(version=FILE_VERSION, decisions=entries), f, indent=1)
        os.replace(tmp, path)
        return len(entries)

    def reset(self, shape: Optional[ShapeClass] = None) -> None:
        """Forget one decision (``shape``) or all of them (and the files read), so that the
        next call decides again."""
        with self._lock:
            for table in (self._decisions, self._slow, self._reprobes, self._reference):
                if shape is None:
                    table.clear()
                else:
                    table.pop(shape, None)
            if shape is None:
                self._pinned.clear()
            self._version += 1

    def _probe(self, shape: ShapeClass, kernels: Sequence[Kernel],
               run: Callable[[Kernel], T]) -> Tuple[Kernel, T]:
        times, results = _timed_rounds(kernels, run, warm=True)
        best = _fastest(times, kernels[0])
        self._record(shape, Decision(best, 'probe', {k: min(ts) for k, ts in times.items()}),
                     rounds=len(times[best]))
        return best, results[best]

    def _pinned_decision(self, path: str, shape: ShapeClass,
                         kernels: Sequence[Kernel]) -> Decision:
        kernel = self._load(path).get(shape)
        if kernel is None:
            decision = Decision(kernels[0], 'default')
        elif kernel.name not in {k.name for k in kernels}:
            raise ValueError(f'{path} pins kernel {kernel} for "{shape}", which this shape class '
                             f'cannot run (its kernels: {", ".join(str(k) for k in kernels)}); '
                             'write the file again on this model (tools/benchmark.py '
                             '--save-fast-paths) or remove that entry')
        else:
            decision = Decision(kernel, 'pinned')
        self._record(shape, decision)
        return decision

    def _record(self, shape: ShapeClass, decision: Decision, rounds: int = 0) -> None:
        with self._lock:
            self._decisions[shape] = decision
            self._reference.pop(shape, None)
            self._version += 1
        if decision.source == 'probe':
            timed = ', '.join(f'{k} {s * 1e3:.2f} ms' for k, s in decision.seconds.items())
            how = f'fastest of {timed}; best of {rounds} rounds'
        elif decision.source == 'pinned':
            how = f'pinned by {self.policy()}'
        else:
            how = f'not in {self.policy()}: the plain ops'
        _log(f'convnext_backbone fast path for {shape}: {decision.kernel} ({how})')

    def _drifted(self, shape: ShapeClass, decision: Decision, seconds: float) -> bool:
        """Count a call of a probed kernel; True when it was the ``SLOW_CALLS``-th in a row
        slower than ``DRIFT`` times its normal time (and checks are left for this class)."""
        with self._lock:
            if self._decisions.get(shape) is not decision:
                return False                    # replaced or forgotten meanwhile
            normal = self._reference.get(shape, decision.seconds[decision.kernel])
            slow = self._slow.get(shape, 0) + 1 if seconds > DRIFT * normal else 0
            self._slow[shape] = slow
            if slow < SLOW_CALLS or self._reprobes.get(shape, 0) >= MAX_REPROBES:
                return False
            self._reprobes[shape] = self._reprobes.get(shape, 0) + 1
            self._slow[shape] = 0
            return True

    def _confirm(self, shape: ShapeClass, decision: Decision, plain: Kernel,
               run: Callable[[Kernel], T]) -> None:
        """After a drift: time the plain kernel and the decided one again on the current input
        (:func:`_timed_rounds` without the warm-up round, :func:`_fastest`). Where the decided
        one still wins, the whole machine slowed down (other processes, a busy server): its
        time now is the new normal and nothing is probed again, which would cost every
        candidate a few runs under the same load. Otherwise the decision is dropped and the
        next call probes again."""
        times, _ = _timed_rounds((plain, decision.kernel), run, warm=False)
        kept = _fastest(times, plain) == decision.kernel
        with self._lock:
            if self._decisions.get(shape) is not decision:
                return
            if kept:
                self._reference[shape] = min(times[decision.kernel])
            else:
                del self._decisions[shape]
                self._reference.pop(shape, None)
                self._version += 1
        now = ', '.join(f'{k} {min(ts) * 1e3:.2f} ms' for k, ts in times.items())
        _log(f'convnext_backbone fast path for {shape}: {decision.kernel} ran slower; '
             + (f'kept, still the faster ({now}): the machine is busier' if kept else
                f'probed again at the next call ({now})'))

    def _load(self, path: str) -> Dict[ShapeClass, Kernel]:
        stamp = (path, os.path.getmtime(path))
        with self._lock:
            if stamp in self._pinned:
                return self._pinned[stamp]
        try:
            with open(path, encoding='utf-8') as f:
                data = json.load(f)
            if data.get('version') != FILE_VERSION:
                raise ValueError(f'version {data.get("version")!r}, expected {FILE_VERSION}')
            pinned = {ShapeClass(**e['shape']): Kernel(**e['kernel']) for e in data['decisions']}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f'CONVNEXT_FAST_PATHS={path} is not a decisions file written by '
                             f'convnext_backbone.tuning.save ({type(err).__name__}: {err})'
                             ) from None
        with self._lock:
            return self._pinned.setdefault(stamp, pinned)


def _timed_rounds(kernels: Sequence[Kernel], run: Callable[[Kernel], T], warm: bool
                  ) -> Tuple[Dict[Kernel, List[float]], Dict[Kernel, T]]:
    """Run every kernel once per round, interleaved: an untimed round first where ``warm``, then
    ``ROUNDS`` timed rounds, then more while the runs of some kernel spread over more than
    ``NOISY`` times its fastest, up to ``MAX_ROUNDS``.

    Returns:
        tuple[dict, dict]: Each kernel's seconds per timed round, and its last result.
    """
    times: Dict[Kernel, List[float]] = {k: [] for k in kernels}
    results: Dict[Kernel, T] = {}
    if warm:
        for kernel in kernels:
            results[kernel] = run(kernel)
    while True:
        for kernel in kernels:
            start = time.perf_counter()
            results[kernel] = run(kernel)
            times[kernel].append(time.perf_counter() - start)
        done = len(times[kernels[0]])
        noisy = any(max(ts) > NOISY * min(ts) for ts in times.values())
        if done >= MAX_ROUNDS or (done >= ROUNDS and not noisy):
            return times, results


def _fastest(times: Dict[Kernel, List[float]], plain: Kernel) -> Kernel:
    """The kernel to keep: of the candidates whose best run beats the plain kernel's best by
    ``MARGIN`` and whose median run beats the plain kernel's median, the one with the best run;
    the plain kernel where none does (or where the two estimates disagree, as a run of the plain
    kernel that happened to get the cores alone would make them)."""
    best = {k: min(ts) for k, ts in times.items()}
    median = {k: statistics.median(ts) for k, ts in times.items()}
    winners = [k for k in times if k != plain and best[k] <= best[plain] * (1 - MARGIN)
               and median[k] < median[plain]]
    return min(winners, key=best.__getitem__) if winners else plain


def _check(value: str, name: str) -> str:
    if value.lower() in POLICIES:
        return value.lower()
    if os.path.isfile(value):
        return value
    raise ValueError(f'{name}={value!r} is neither a fast-path policy ({", ".join(POLICIES)}) '
                     'nor an existing decisions file (written by tuning.save, '
                     'tools/benchmark.py --save-fast-paths, or fast_paths.json in a work dir)')


def _log(message: str) -> None:
    from mmengine.logging import print_log
    print_log(message, logger='current')


#: The process's tuner: the block's fast path asks it, ``FastPathsHook`` saves it.
TUNER = Tuner()
policy = TUNER.policy
use_policy = TUNER.use_policy
choose = TUNER.choose
choose_with_backward = TUNER.choose_with_backward
decided = TUNER.decided
version = TUNER.version
decisions = TUNER.decisions
save = TUNER.save
reset = TUNER.reset
