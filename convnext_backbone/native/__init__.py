"""Our compiled kernels, built as one library: the block's dwconv 7x7 -> LayerNorm in one pass
(``dwconv_norm.cpp``), a stage output's LayerNorm written as NCHW in one pass
(``layer_norm_nchw.cpp``), the depthwise conv's backward for training (``dwconv_grad.cpp``),
the block's MLP in blocks of rows that each thread computes whole (``thread_blocks.cpp``), the
training MLP's GELU backward with fc1's bias gradient in one pass (``gelu.cpp``) and the
transposed copies of its weight gradients (``transpose.cpp``), with the conv they share
(``dwconv.h``) and their vector helpers (``vec.h``).

It is built once per torch and Python version and source, with torch's C++ extension builder
(``torch.utils.cpp_extension.load``: a C++ compiler and ninja), into a cache folder keyed by all
three (``~/.cache/convnext-backbone/native/``, ``CONVNEXT_NATIVE_CACHE`` to move it), the way
``tools/install.sh`` caches mmcv's wheel by torch. ``tools/install.sh`` builds it; a process that
finds no build builds it at its first use (logged). Where it cannot be built or loaded, one line
is logged and the block runs its modules (``fast_path.head_reason`` names the reason);
``CONVNEXT_NATIVE=0`` turns it off.

The library registers ``torch.ops.convnext_backbone.dwconv7x7_layer_norm``,
``layer_norm_nchw``, ``dwconv7x7``, ``dwconv7x7_weight_grad``, ``thread_blocked_mlp``,
``gelu_backward_sum_`` and ``transposed``; they
run their rows on torch's own intra-op threads (OpenMP symbols resolved from the libgomp torch
loaded).
"""
import functools
import hashlib
import logging
import os
import os.path as osp
import sys
import sysconfig

import torch
from mmengine.logging import print_log

from .. import tuning

__all__ = ['ENV', 'HEADERS', 'NATIVE', 'PLAIN', 'SOURCES', 'available', 'build', 'cache_dir',
           'kernels', 'library_path', 'unavailable_reason']

#: The two kernels of each op our library computes (the block head, the stage outputs, the
#: dwconv in training): the plain PyTorch ops, and ours.
PLAIN, NATIVE = tuning.Kernel('plain'), tuning.Kernel('native')

#: Set to 0 to never build or load the kernel.
ENV = 'CONVNEXT_NATIVE'
_HERE = osp.dirname(osp.abspath(__file__))
SOURCES = tuple(osp.join(_HERE, name)
                for name in ('dwconv_norm.cpp', 'layer_norm_nchw.cpp', 'dwconv_grad.cpp',
                              'thread_blocks.cpp', 'gelu.cpp', 'transpose.cpp'))
HEADERS = tuple(osp.join(_HERE, name) for name in ('vec.h', 'dwconv.h'))
_NAME = 'convnext_backbone_native'
_FLAGS = ['-O3', '-fopenmp']  # no -fopenmp at link time: torch's libgomp provides the runtime


def cache_dir() -> str:
    """The build folder of this torch, Python and source (the sources, headers and flags)."""
    digest = hashlib.sha256(' '.join(_FLAGS).encode())
    for path in SOURCES + HEADERS:
        with open(path, 'rb') as f:
            digest.update(f.read())
    root = os.environ.get('CONVNEXT_NATIVE_CACHE') or osp.join(
        osp.expanduser('~'), '.cache', 'convnext-backbone', 'native')
    version = f'torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}'
    return osp.join(root, f'{version}-{digest.hexdigest()[:12]}')


def library_path() -> str:
    """The shared library's path in :func:`cache_dir`."""
    return osp.join(cache_dir(), f'{_NAME}.so')


def build(verbose: bool = False) -> str:
    """Build the library into :func:`cache_dir` if it is not there, and return its path.

    Args:
        verbose (bool): Show the compiler's output. Defaults to False.

    Returns:
        str: The path of the shared library.

    Raises:
        Exception: What the builder raised (no compiler, no ninja, a compile error).
    """
    from torch.utils import cpp_extension
    library = library_path()
    folder = osp.dirname(library)
    if osp.isfile(library):
        return library
    os.makedirs(folder, exist_ok=True)
    # ninja from this Python's environment first (pip's ninja), then the system's
    scripts = sysconfig.get_path('scripts')
    env_path = os.environ.get('PATH', '')
    if scripts and scripts not in env_path.split(os.pathsep):
        os.environ['PATH'] = os.pathsep.join([scripts, env_path])
    quiet = logging.getLogger('torch.utils.cpp_extension')  # its compiler-ABI banners
    level = quiet.level
    quiet.setLevel(logging.DEBUG if verbose else logging.ERROR)
    try:
        cpp_extension.load(name=_NAME, sources=list(SOURCES), build_directory=folder,
                           extra_cflags=_FLAGS, is_python_module=False, verbose=verbose)
    finally:
        quiet.setLevel(level)
    return library


@functools.lru_cache(maxsize=None)
def unavailable_reason() -> str:
    """Why the kernel cannot run in this process ('' when it is loaded); builds or loads it on
    the first call, and logs one line where it cannot."""
    if os.environ.get(ENV, '1') == '0':
        return f'{ENV}=0'
    if not osp.isfile(library_path()):
        print_log('convnext_backbone: building our kernels (dwconv+LayerNorm, output norm, '
                  'dwconv backward, thread-blocked MLP, GELU backward, transpose) once into '
                  f'{cache_dir()} (tools/install.sh builds them at install)', logger='current')
    try:
        library = build()
        if not hasattr(torch.ops.convnext_backbone, 'transposed'):
            torch.ops.load_library(library)
    except Exception as err:  # noqa: BLE001 - any failure means the modules run
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        if len(first) > 160:
            first = first[:157] + '...'
        reason = f'our compiled kernels are not available: {first}'
        print_log(f'convnext_backbone: {reason}; the blocks and outputs run their modules '
                  f'(needs a C++ compiler and ninja: pip install ninja; {ENV}=0 to not try)',
                  logger='current', level=logging.WARNING)
        return reason
    return ''


def available() -> bool:
    """Whether our kernels are loaded (building or loading them on the first call)."""
    return unavailable_reason() == ''


def kernels() -> list:
    """The tuner's candidates for an op of our library, plain first; :data:`NATIVE` where the
    library is loaded."""
    return [PLAIN, NATIVE] if available() else [PLAIN]
