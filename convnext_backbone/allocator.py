"""How the process's C allocator gives memory back: set at import, before any large tensor.

torch's CPU tensors come from the C library's ``malloc`` (there is no caching allocator on the
CPU). glibc serves a request above its mmap threshold (128 KiB at first, raised up to 32 MiB as
such blocks are freed) with a fresh ``mmap`` and returns it to the kernel at ``free``, and it
trims the top of its heap whenever more than its trim threshold is free there. The backbone's
feature maps are 4-93 MB: every forward maps new memory for them, and the kernel zeroes each
4 KiB page at its first touch, a minor fault each. For ConvNeXt-T at 800x1216 on a 2-core Zen 4
that was 28,000-43,000 faults per forward, 0.04-0.10 s of system time on the threads that should
be computing. ONNX Runtime and OpenVINO keep the memory they used in arenas of their own, so
they pay this once.

``import convnext_backbone`` therefore sets glibc's mmap threshold to its largest value
(:data:`MMAP_THRESHOLD`, 32 MiB) and its trim threshold to :data:`TRIM_THRESHOLD` with
``mallopt``, so that freed feature maps stay in the heap and the next forward reuses them:
the process keeps the memory of its peak use (as jemalloc or tcmalloc would) instead of
mapping it again for every image. Results do not change: only where the memory comes from.

It is left alone where the user chose: any of :data:`USER_SETTINGS` in the environment
(``MALLOC_TRIM_THRESHOLD_=131072`` restores glibc's behaviour), or another allocator preloaded
(``LD_PRELOAD`` of jemalloc or tcmalloc: ``malloc`` is not the C library's), or a C library that
is not glibc.

Note:
    Figures (docs/performance.md, 2-core AMD EPYC Zen 4, ConvNeXt-T 1x3x800x1216): minor faults
    per forward fp32 31,000-43,000 -> 11,000 (blocks above 32 MiB are still mapped), bf16
    28,000 -> 0.
"""
import ctypes
import os

__all__ = ['MMAP_THRESHOLD', 'TRIM_THRESHOLD', 'USER_SETTINGS', 'describe', 'keep_freed_memory']

#: glibc's mmap threshold: blocks up to this size come from the heap (32 MiB, glibc's maximum
#: on 64-bit: ``DEFAULT_MMAP_THRESHOLD_MAX``).
MMAP_THRESHOLD = 32 << 20
#: glibc's trim threshold: the heap's free top is given back beyond this much.
TRIM_THRESHOLD = 1 << 30
#: The environment through which a user tunes glibc's malloc; any of them set is left as is.
USER_SETTINGS = ('MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_TOP_PAD_',
                 'MALLOC_MMAP_MAX_', 'GLIBC_TUNABLES')
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h>

# What keep_freed_memory found at the package's import.
_STATE = {'at_import': ''}


def _glibc():
    """glibc as a ctypes library, or None where the C library is another one (asked of the
    running C library, no search: glibc's shared object is ``libc.so.6``)."""
    try:
        if not (os.confstr('CS_GNU_LIBC_VERSION') or '').startswith('glibc'):
            return None
        return ctypes.CDLL('libc.so.6')
    except (AttributeError, OSError, ValueError):  # no confstr, or no such name or library
        return None


def _malloc_interposed(libc) -> bool:
    """Whether the process's ``malloc`` is not the C library's (a preloaded allocator)."""
    process = ctypes.CDLL(None)
    address = ctypes.cast(process.malloc, ctypes.c_void_p).value
    return address != ctypes.cast(libc.malloc, ctypes.c_void_p).value


def keep_freed_memory() -> str:
    """Set glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`)
    where the user has not chosen otherwise.

    Returns:
        str: 'set' (set here), 'user' (one of :data:`USER_SETTINGS` is set: left as is),
        'preloaded' (another allocator serves ``malloc``: left as is) or 'not glibc'.
    """
    libc = _glibc()
    if any(name in os.environ for name in USER_SETTINGS):
        state = 'user'
    elif libc is None:
        state = 'not glibc'
    elif _malloc_interposed(libc):
        state = 'preloaded'
    elif (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
          and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1):
        state = 'set'
    else:
        state = 'not glibc'  # mallopt refused the values: not the glibc this was written for
    _STATE['at_import'] = _STATE['at_import'] or state
    return state


def describe() -> str:
    """One line: where large tensors' memory comes from in this process, and who chose it."""
    state = _STATE['at_import']
    if state == 'set':
        return (f'malloc: freed memory kept in the heap (mmap threshold {MMAP_THRESHOLD >> 20} '
                f'MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB, set by convnext_backbone)')
    if state == 'user':
        chosen = ', '.join(f'{name}={os.environ[name]}' for name in USER_SETTINGS
                           if name in os.environ)
        return f"malloc: glibc's, as the environment sets it ({chosen})"
    if state == 'preloaded':
        return 'malloc: a preloaded allocator (LD_PRELOAD), left as it is'
    return "malloc: not glibc's; left as it is"
