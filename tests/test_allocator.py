"""glibc's malloc keeps freed feature maps once ``import convnext_backbone`` ran, unless the user
chose otherwise: counted in the page faults of a fresh process."""
import os
import subprocess
import sys

import pytest

from convnext_backbone import allocator

pytestmark = [pytest.mark.core, pytest.mark.onedl_core]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Three 16 MiB tensors allocated, written and freed four times, as a forward does with its
# feature maps: the page faults of the fourth time, and the package's line. glibc by default
# gives 48 MiB back to the kernel each time (its trim threshold follows its mmap threshold, 32
# MiB at most) and faults it in again; with the package's setting the heap keeps it.
FEATURE_MAPS = '''
import resource
import convnext_backbone, torch
from convnext_backbone import allocator
def feature_maps():
    return [torch.ones(4 << 20) for _ in range(3)]
for _ in range(3):
    feature_maps()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
feature_maps()
print('faults', resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(allocator.describe())
'''
PAGES = 3 * (16 << 20) // 4096


def _fourth_time(**env):
    environ = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    environ.update(env, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, '-c', FEATURE_MAPS], cwd=ROOT, env=environ,
                         capture_output=True, text=True, timeout=300)
    faults = [line for line in out.stdout.splitlines() if line.startswith('faults')]
    assert faults, out.stderr[-2000:]
    return int(faults[0].split()[1]), out.stdout


def test_a_freed_feature_map_is_reused_without_page_faults():
    faults, out = _fourth_time()
    assert faults < PAGES // 20, faults
    assert 'freed memory kept in the heap (mmap threshold 32 MiB' in out


@pytest.mark.parametrize('name,value', [('MALLOC_MMAP_THRESHOLD_', '131072'),
                                        ('GLIBC_TUNABLES', 'glibc.malloc.mmap_threshold=131072')])
def test_a_users_malloc_setting_is_left_as_it_is(name, value):
    # the user's fixed threshold (glibc's first one) stands: every map is mapped afresh and
    # faulted in again, page by page (glibc's own dynamic threshold gives back some or all)
    faults, out = _fourth_time(**{name: value})
    assert faults > PAGES // 2, faults
    assert f"glibc's, as the environment sets it ({name}={value})" in out

