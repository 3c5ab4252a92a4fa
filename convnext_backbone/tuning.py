"""Per-process choice between equivalent implementations, by timing them on this machine.

A fast path (a fused oneDNN kernel, a cache-blocked product, ``fuse()``'s folded tail) is only
worth running where it is faster than the plain PyTorch ops, and that depends on the CPU: the
same fused residual add that gains on one EPYC loses on another. So each decision is made once
per process and *shape class* (kind of op, channels, dtype, order of magnitude of the rows,
threads), by running every candidate on the real input of the first call of that class in
interleaved rounds and keeping the fastest (best of ``ROUNDS``); the plain candidate wins ties
within ``MARGIN``.
The result of the probe is returned, so the first call costs a few runs of the op, not more.

``CONVNEXT_FAST_PATHS=plain`` in the environment turns every fast path off (the plain
candidate always runs); ``auto`` (the default) probes.
"""
import contextlib
import os
import time
from typing import Callable, Dict, Hashable, Iterator, Optional, Sequence, Tuple, TypeVar

__all__ = ['MARGIN', 'POLICIES', 'choose', 'decided', 'decisions', 'policy', 'reset', 'use_policy']

T = TypeVar('T')

#: A fast candidate must beat the plain one (the first) by this fraction of its time.
MARGIN = 0.02
#: Values of CONVNEXT_FAST_PATHS.
POLICIES = ('auto', 'plain')
#: Timed rounds per probe (after one untimed round that also warms caches and allocators).
ROUNDS = 3
#: A chosen fast path running this many times slower than when it was chosen ...
DRIFT = 2.0
#: ... this many calls in a row is timed against the others again, ...
SLOW_CALLS = 3
#: ... at most this many times per key and process.
MAX_REPROBES = 3

_DECISIONS: Dict[Hashable, str] = {}
_TIMINGS: Dict[Hashable, Dict[str, float]] = {}
_SLOW: Dict[Hashable, int] = {}
_REPROBES: Dict[Hashable, int] = {}
_OVERRIDE: Optional[str] = None


def _check(value: str, name: str) -> str:
    if value not in POLICIES:
        raise ValueError(f'{name}={value!r} is not a fast-path policy: use one of {POLICIES}')
    return value


def policy() -> str:
    """The fast-path policy: that of :func:`use_policy`, else ``CONVNEXT_FAST_PATHS`` ('auto')."""
    if _OVERRIDE is not None:
        return _OVERRIDE
    value = os.environ.get('CONVNEXT_FAST_PATHS', 'auto').strip().lower() or 'auto'
    return _check(value, 'CONVNEXT_FAST_PATHS')


@contextlib.contextmanager
def use_policy(value: str) -> Iterator[None]:
    """Within the block, run under fast-path policy ``value`` ('auto' or 'plain'), e.g. to time
    the plain ops beside the fast paths in one process."""
    global _OVERRIDE
    previous, _OVERRIDE = _OVERRIDE, _check(value, 'policy')
    try:
        yield
    finally:
        _OVERRIDE = previous


def choose(key: Hashable, candidates: Sequence[Tuple[str, Callable[[], T]]]) -> Tuple[str, T]:
    """Run the chosen candidate for ``key``, choosing it by timing all of them the first time.

    A chosen fast candidate that then runs ``DRIFT`` times slower than when it was chosen for
    ``SLOW_CALLS`` calls in a row (the machine got busy: many small parallel products suffer
    more from other processes than a few large ones) is timed against the others again, at
    most ``MAX_REPROBES`` times per key.

    Args:
        key (Hashable): The shape class; one decision per key and process.
        candidates (Sequence[tuple[str, Callable[[], T]]]): ``(name, fn)`` pairs computing the
            same result; the first is the plain one, the fallback.

    Returns:
        tuple[str, T]: The chosen name and its result.
    """
    if policy() == 'plain' or len(candidates) == 1:
        name, fn = candidates[0]
        return name, fn()
    fns = dict(candidates)
    name = _DECISIONS.get(key)
    if name in fns:
        if name == candidates[0][0]:
            return name, fns[name]()
        start = time.perf_counter()
        result = fns[name]()
        _watch(key, name, time.perf_counter() - start)
        return name, result
    times: Dict[str, list] = {n: [] for n in fns}
    results: Dict[str, T] = {}
    for round_ in range(ROUNDS + 1):
        for n, fn in fns.items():
            start = time.perf_counter()
            results[n] = fn()
            if round_:
                times[n].append(time.perf_counter() - start)
    # The least disturbed run of each: other processes only ever add time.
    best_times = {n: min(ts) for n, ts in times.items()}
    plain = candidates[0][0]
    best = min(best_times, key=best_times.__getitem__)
    if best_times[best] > best_times[plain] * (1 - MARGIN):
        best = plain
    _DECISIONS[key], _TIMINGS[key] = best, best_times
    return best, results[best]


def _watch(key: Hashable, name: str, seconds: float) -> None:
    slow = _SLOW.get(key, 0) + 1 if seconds > DRIFT * _TIMINGS[key][name] else 0
    _SLOW[key] = slow
    if slow >= SLOW_CALLS and _REPROBES.get(key, 0) < MAX_REPROBES:
        _REPROBES[key] = _REPROBES.get(key, 0) + 1
        _SLOW[key] = 0
        del _DECISIONS[key]


def decided(key: Hashable) -> Optional[str]:
    """The name chosen for ``key`` ('plain' under ``CONVNEXT_FAST_PATHS=plain``), or None."""
    return 'plain' if policy() == 'plain' else _DECISIONS.get(key)


def decisions() -> Dict[Hashable, Tuple[str, Dict[str, float]]]:
    """What this process chose so far: key -> (name, best seconds of each candidate)."""
    return {key: (name, dict(_TIMINGS.get(key, {}))) for key, name in _DECISIONS.items()}


def reset(key: Optional[Hashable] = None) -> None:
    """Forget one decision (``key``) or all of them, so that the next call probes again."""
    for table in (_DECISIONS, _TIMINGS, _SLOW, _REPROBES):
        if key is None:
            table.clear()
        else:
            table.pop(key, None)
