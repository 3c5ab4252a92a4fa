"""What several test files share."""
import glob
import importlib.util
import os
import subprocess
import sys

import pytest

#: mmcv's compiled ops (``mmcv._ext``): absent from mmcv-lite and from onedl-mmcv built without
#: torch (``make install-oldest``, ``make install-onedl-core``).
HAS_OPS = importlib.util.find_spec('mmcv') is not None and \
    importlib.util.find_spec('mmcv._ext') is not None
needs_ops = pytest.mark.skipif(not HAS_OPS, reason='mmcv was built without its ops (mmcv-lite, '
                               'or onedl-mmcv without ops)')


class RunsCode:
    """Unpickles as ``os.system('touch MARKER')``: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def layered_venv(path, *base_paths):
    """A venv whose own site-packages comes first, then ``base_paths`` (path lines of a ``.pth``
    file, so that their own ``.pth`` files, an editable install's among them, are not read).

    Returns:
        tuple[str, str]: Its python and its site-packages.
    """
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(path)], check=True)
    site = glob.glob(os.path.join(path, 'lib', 'python3*', 'site-packages'))[0]
    with open(os.path.join(site, '_base.pth'), 'w') as f:
        f.write(''.join(f'{p}\n' for p in base_paths))
    return os.path.join(path, 'bin', 'python'), site
