"""What several test files share."""
import glob
import importlib.util
import math
import os
import subprocess
import sys

import pytest
import torch
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

#: The checkout, its tools and the interpreter running the tests (the tools run as subprocesses).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, 'tools')
PY = sys.executable
#: A ConvNeXt of one block a stage: builds and runs in milliseconds.
SMALL = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))

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


def one_line(message, limit=600):
    """What users see is one line, short enough to read: never a key dump."""
    assert '\n' not in message and len(message) < limit, message
    return message


def load_tool(name):
    """``tools/<name>.py`` as a module, to call its ``main`` in this process."""
    spec = importlib.util.spec_from_file_location(f'tool_{name}', os.path.join(TOOLS, f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def truncate(path, keep=0.5):
    """Cut a file (a checkpoint) to ``keep`` of its bytes, as an interrupted download would."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


# -- a regression toy trained by ResumableRunner, with non-finite losses on chosen calls --------
class ToyRegressionData(Dataset):
    metainfo = dict(classes=('a',))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), target=torch.randn(1, generator=g))


class ToyRegression(BaseModel):
    """Regression toy; ``loss_b`` is NaN/inf on the calls listed in ``bad`` (1-based), a term
    that does not depend on the weights, so their gradients stay finite."""

    def __init__(self, bad=(), value=math.nan):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.bad, self.value, self.calls = set(bad), value, 0

    def forward(self, inputs, target=None, mode='tensor'):
        out = self.net(inputs)
        if mode != 'loss':
            return out
        self.calls += 1
        extra = self.value if self.calls in self.bad else 0.
        return dict(loss_a=((out - target) ** 2).mean(), loss_b=torch.tensor(extra))


def toy_regression_runner(work_dir, model=None, **kwargs):
    """ResumableRunner training ``model`` (a ToyRegression) 6 iterations, 4 an epoch, saving a
    checkpoint at each; ``kwargs`` replace its config's keys."""
    from convnext_backbone.engine import ResumableRunner
    cfg = dict(
        model=model or ToyRegression(), work_dir=str(work_dir),
        experiment_name=f'toy-{os.path.basename(work_dir)}-{id(kwargs)}',
        train_dataloader=dict(dataset=ToyRegressionData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)))
    cfg.update(kwargs)
    return ResumableRunner(**cfg)
