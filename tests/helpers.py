"""What several test files share."""
import importlib.util

import pytest

#: mmcv's compiled ops (``mmcv._ext``): absent from mmcv-lite and from onedl-mmcv built without
#: torch (``make install-oldest``, ``make install-onedl-core``).
HAS_OPS = importlib.util.find_spec('mmcv') is not None and \
    importlib.util.find_spec('mmcv._ext') is not None
needs_ops = pytest.mark.skipif(not HAS_OPS, reason='mmcv was built without its ops (mmcv-lite, '
                               'or onedl-mmcv without ops)')
