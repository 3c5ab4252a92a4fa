"""Facts about the CPU this process runs on: its instruction-set flags, its caches, native bf16.

Every fast-path and precision decision of the package reads the machine from here, never from
assumptions. The CPU flags can be injected (:func:`simulate_cpu`) so that tests can play a CPU the
machine is not, e.g. an AVX2-only one without native bf16.

Two environment variables of PyTorch restrict which kernels run, whatever the CPU has:
``ATEN_CPU_CAPABILITY`` (ATen's vector kernels) and ``ONEDNN_MAX_CPU_ISA`` (oneDNN's). A CPU with
``avx512_bf16`` limited to ``ONEDNN_MAX_CPU_ISA=AVX2`` computes bf16 products without its bf16
instructions, so it counts as having no native bf16.
"""
import contextlib
import functools
import os
import warnings
from typing import Dict, FrozenSet, Iterable, Iterator, Optional, Set

__all__ = ['BF16_FLAGS', 'cache_bytes', 'cpu_flags', 'cpu_model', 'describe', 'native_bf16',
           'simulate_cpu', 'warn_bf16_without_native_support']

#: /proc/cpuinfo flags of instructions that compute bf16 dot products natively.
BF16_FLAGS = ('avx512_bf16', 'amx_bf16')

# oneDNN's ISA names in increasing order (oneDNN's `cpu_isa_t`); bf16 dot products need at least
# AVX512_CORE_BF16.
_ONEDNN_ISAS = ('SSE41', 'AVX', 'AVX2', 'AVX2_VNNI', 'AVX2_VNNI_2', 'AVX512_CORE',
                'AVX512_CORE_VNNI', 'AVX512_CORE_BF16', 'AVX10_1_512', 'AVX512_CORE_FP16',
                'AVX10_1_512_AMX', 'AVX512_CORE_AMX', 'AVX10_1_512_AMX_FP16',
                'AVX512_CORE_AMX_FP16')
_SIMULATED: Optional[FrozenSet[str]] = None


def _read_cpuinfo() -> Dict[str, str]:
    facts: Dict[str, str] = {}
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                key, _, value = line.partition(':')
                key = key.strip()
                if key in ('flags', 'model name') and key not in facts:
                    facts[key] = value.strip()
    except OSError:
        pass
    return facts


@functools.lru_cache(maxsize=None)
def _real_flags() -> FrozenSet[str]:
    return frozenset(_read_cpuinfo().get('flags', '').split())


def cpu_flags() -> FrozenSet[str]:
    """The CPU's instruction-set flags (``/proc/cpuinfo``), or the simulated ones.

    Returns:
        frozenset[str]: E.g. ``{'avx2', 'avx512f', 'avx512_bf16', ...}``; empty where unknown.
    """
    return _SIMULATED if _SIMULATED is not None else _real_flags()


@contextlib.contextmanager
def simulate_cpu(flags: Iterable[str]) -> Iterator[None]:
    """Within the block, :func:`cpu_flags` returns ``flags`` instead of the real ones.

    Args:
        flags (Iterable[str]): The flags of the CPU to play, e.g. ``{'avx', 'avx2', 'fma'}``.
    """
    global _SIMULATED
    previous, _SIMULATED = _SIMULATED, frozenset(flags)
    try:
        yield
    finally:
        _SIMULATED = previous


@functools.lru_cache(maxsize=None)
def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ('unknown CPU' where there is none)."""
    return _read_cpuinfo().get('model name', 'unknown CPU')


def _onednn_isa_limit() -> str:
    return os.environ.get('ONEDNN_MAX_CPU_ISA', os.environ.get('DNNL_MAX_CPU_ISA', '')).upper()


def _onednn_allows_bf16() -> bool:
    limit = _onednn_isa_limit()
    if limit not in _ONEDNN_ISAS:  # unset, ALL, DEFAULT
        return True
    return _ONEDNN_ISAS.index(limit) >= _ONEDNN_ISAS.index('AVX512_CORE_BF16')


def native_bf16() -> bool:
    """Whether bf16 matrix products run on bf16 instructions here (``avx512_bf16`` or
    ``amx_bf16``, and oneDNN not restricted below them by ``ONEDNN_MAX_CPU_ISA``)."""
    return any(flag in cpu_flags() for flag in BF16_FLAGS) and _onednn_allows_bf16()


@functools.lru_cache(maxsize=None)
def cache_bytes(level: int) -> int:
    """Size in bytes of the data cache of ``level`` (1, 2, 3) seen by one core.

    Read from ``/sys/devices/system/cpu/cpu0/cache``; 0 where unknown. L2 is usually per core,
    L3 shared by several cores (the number given is the whole L3).

    Args:
        level (int): Cache level, 1 to 3.

    Returns:
        int: Bytes, or 0.
    """
    root = '/sys/devices/system/cpu/cpu0/cache'
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return 0
    for entry in entries:
        try:
            with open(os.path.join(root, entry, 'level'), encoding='utf-8') as f:
                if int(f.read()) != level:
                    continue
            with open(os.path.join(root, entry, 'type'), encoding='utf-8') as f:
                if f.read().strip() == 'Instruction':
                    continue
            with open(os.path.join(root, entry, 'size'), encoding='utf-8') as f:
                size = f.read().strip().upper()
        except (OSError, ValueError):
            continue
        scale = {'K': 2**10, 'M': 2**20, 'G': 2**30}.get(size[-1:], 1)
        try:
            return int(size.rstrip('KMG')) * scale
        except ValueError:
            return 0
    return 0


def describe() -> str:
    """One line: CPU model, its vector/bf16 flags, caches and any kernel restriction."""
    shown = [f for f in ('avx2', 'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile')
             if f in cpu_flags()]
    limits = [f'{name}={os.environ[name]}' for name in ('ATEN_CPU_CAPABILITY', 'ONEDNN_MAX_CPU_ISA')
              if name in os.environ]
    caches = ', '.join(f'L{i} {cache_bytes(i) // 2**10} KiB' for i in (2, 3) if cache_bytes(i))
    return (f'{cpu_model()}, {os.cpu_count()} cores, flags: {" ".join(shown) or "none known"}'
            f'{", " + caches if caches else ""}, native bf16: {native_bf16()}'
            + (f' (restricted: {", ".join(limits)})' if limits else ''))


#: bf16 autocast time / float32 time of ConvNeXt-T inference measured on a 2-core AVX2-only AMD
#: EPYC (docs/performance.md); the order of magnitude to expect on any CPU without native bf16.
BF16_SLOWDOWN_WITHOUT_NATIVE = 12


_WARNED: Set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)  # at ConvNeXt.forward


def why_not_native_bf16() -> str:
    """Why bf16 is not native here, e.g. ``'AMD EPYC has no avx512_bf16 or amx_bf16'``, or
    ``''`` where it is (:func:`native_bf16`)."""
    if native_bf16():
        return ''
    missing = ' or '.join(BF16_FLAGS)
    if any(f in cpu_flags() for f in BF16_FLAGS):
        return f'oneDNN limited to {_onednn_isa_limit()} cannot use its {missing}'
    return f'{cpu_model()} has no {missing}'


def warn_bf16_without_native_support() -> bool:
    """Warn once per process when bf16 CPU autocast is used on a CPU without native bf16.

    Returns:
        bool: True when the CPU lacks native bf16 (whether or not the warning was new).
    """
    lacks = why_not_native_bf16()
    if not lacks:
        return False
    _warn_once(f'bf16 autocast on a CPU without native bf16 ({lacks}): ConvNeXt runs about '
               f'{BF16_SLOWDOWN_WITHOUT_NATIVE}x slower than in float32 on such CPUs. Run in '
               'float32 (no autocast) here.')
    return True
