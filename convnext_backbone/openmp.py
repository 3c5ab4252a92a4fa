"""How torch's OpenMP threads wait between parallel regions: set before torch loads.

torch's CPU wheels run their intra-op threads on GNU OpenMP (libgomp). At the end of every
parallel region (every op), a thread that finished its share waits for the others; libgomp
makes it spin first, for ``GOMP_SPINCOUNT`` iterations (300000 by default when
``OMP_WAIT_POLICY`` is not set), before it sleeps. On an idle machine the spin saves the wake-up
of the next op. On a machine shared with other processes it costs: a spinning thread holds a
core that the thread it waits for (descheduled by the kernel) needs, for a whole scheduler
slice, at every op. The backbone runs a few hundred ops per image, and on a busy 2-core EPYC it
ran 2.8-3.7x slower than idle where OpenVINO and ONNX Runtime (their own thread pools) ran about
2.3x slower.

``import convnext_backbone`` therefore sets ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` before
torch is loaded, unless the user set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` (their choice
stands). libgomp reads both once, when it loads (with ``import torch``): where torch was
imported before this package (e.g. mmdet's tools with ``custom_imports``), it is too late, and
the setting belongs in the environment of the command (``GOMP_SPINCOUNT=10000 python ...``).
Our tools import this package before torch. Results do not change: only how long an idle thread
spins.

Note:
    Figures (docs/performance.md, 2-core AMD EPYC Zen 4, ConvNeXt-T 800x1216): beside two busy
    processes, fp32 3.87 s -> 2.41 s and bf16 2.79 s -> 1.46 s; idle, within the run-to-run
    noise of the default (fp32 1.00 s either way). ``OMP_WAIT_POLICY=PASSIVE`` (no spin at all)
    did as well when busy but was 10-30% slower idle, so the spin is shortened, not removed.
"""
import os
import sys

__all__ = ['SPIN_COUNT', 'USER_SETTINGS', 'describe', 'set_spin_default']

#: Spin iterations of a waiting thread before it sleeps (libgomp's default: 300000).
SPIN_COUNT = 10000
#: The variables through which a user chooses libgomp's waiting; any of them set is left as is.
USER_SETTINGS = ('GOMP_SPINCOUNT', 'OMP_WAIT_POLICY')

# What set_spin_default found at the package's import: 'set', 'user' or 'late'.
_STATE = {'at_import': ''}


def set_spin_default() -> str:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` where it still takes effect.

    Returns:
        str: 'set' (set here, before torch loads), 'user' (the user set one of
        :data:`USER_SETTINGS`: left as is) or 'late' (torch was already imported: libgomp has
        read its environment; nothing is set).
    """
    if any(name in os.environ for name in USER_SETTINGS):
        state = 'user'
    elif 'torch' in sys.modules:
        state = 'late'
    else:
        os.environ['GOMP_SPINCOUNT'] = str(SPIN_COUNT)
        state = 'set'
    _STATE['at_import'] = _STATE['at_import'] or state
    return state


def describe() -> str:
    """One line: how libgomp's threads wait in this process, and who chose it."""
    state = _STATE['at_import']
    if state == 'set':
        return (f'OpenMP wait: GOMP_SPINCOUNT={SPIN_COUNT} (set by convnext_backbone before torch '
                "loaded; libgomp's default is 300000)")
    if state == 'user':
        chosen = ', '.join(f'{name}={os.environ[name]}' for name in USER_SETTINGS
                           if name in os.environ)
        return f'OpenMP wait: {chosen or "libgomp default"} (from the environment)'
    return ("OpenMP wait: libgomp's default spin (torch was imported before convnext_backbone; "
            f'on a shared machine set GOMP_SPINCOUNT={SPIN_COUNT} in the environment)')
