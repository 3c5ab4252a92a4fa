"""Nothing is lost on interruption: resume continues exactly, checkpoints are written atomically
and load under torch's weights_only loading (convnext_backbone.engine)."""
import os
import pickle
import re
import signal
import subprocess
import textwrap
import time

import pytest
import torch
from helpers import PY, ROOT, ToyRegressionData, one_line, toy_regression_runner, truncate
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from torch import nn

from convnext_backbone import CheckpointError, compat
from convnext_backbone.checkpoint import (
    allowlisted_globals,
    is_complete_checkpoint,
    load_allowlisted,
)
from convnext_backbone.engine import ResumableRunner, find_resumable_checkpoint

pytestmark = pytest.mark.core


# -- a toy model trained by ResumableRunner in this process ---------------------------------------
class ToyModel(BaseModel):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, inputs, target=None, mode='tensor'):
        out = self.net(inputs)
        if mode == 'loss':
            return dict(loss=((out - target) ** 2).mean())
        return out


class Interrupted(Exception):
    pass


class CrashAt(Hook):
    """Crash (as a kill would) before training iteration `at` (1-based)."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            raise Interrupted


class RecordLr(Hook):
    def __init__(self):
        self.lr = {}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.lr[runner.iter + 1] = runner.optim_wrapper.get_lr()['lr'][0]


def toy_runner(work_dir, loop, hooks, resume=False, name='run'):
    """4 iterations per epoch, 12 in all; checkpoints every 2 iterations; lr warm-up per
    iteration and a step at epoch 2 (iteration 8), so a shifted schedule shows."""
    if loop == 'epoch':
        train_cfg = dict(type='convnext_backbone.ResumableEpochBasedTrainLoop', max_epochs=3)
        step = dict(type='MultiStepLR', milestones=[2], gamma=0.1, by_epoch=True)
    else:
        train_cfg = dict(by_epoch=False, max_iters=12)
        step = dict(type='MultiStepLR', milestones=[8], gamma=0.1, by_epoch=False)
    torch.manual_seed(0)  # the same initial weights in every run
    return ResumableRunner(
        model=ToyModel(), work_dir=str(work_dir), experiment_name=f'{name}-{time.time_ns()}',
        train_dataloader=dict(dataset=ToyRegressionData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        train_cfg=train_cfg,
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01, weight_decay=0.05)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
                         step],
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=hooks, randomness=dict(seed=0), resume=resume)


def _train(runner):
    runner.train()
    return runner


@pytest.fixture(scope='module')
def reference_runs(tmp_path_factory):
    """Uninterrupted runs per loop type: (runner, recorded lr per iteration)."""
    runs = {}
    for loop in ('epoch', 'iter'):
        lr = RecordLr()
        runner = _train(toy_runner(tmp_path_factory.mktemp(loop), loop, [lr], name='ref'))
        runs[loop] = runner, lr
    return runs


@pytest.mark.parametrize('loop', ['epoch', 'iter'])
# crash at 5: last checkpoint iter_4 is the end of epoch 1 (saved before its end-of-epoch hooks);
# 8: iter_6, mid-epoch 2; 11: iter_10, mid-epoch 3.
@pytest.mark.parametrize('crash_at', [5, 8, 11])
def test_resumed_run_matches_uninterrupted_run(tmp_path, reference_runs, loop, crash_at):
    ref, ref_lr = reference_runs[loop]

    with pytest.raises(Interrupted):
        toy_runner(tmp_path / 'run', loop, [CrashAt(crash_at)], name='first').train()
    last = find_resumable_checkpoint(str(tmp_path / 'run'))
    assert last.endswith(f'iter_{crash_at - 1 - (crash_at - 1) % 2}.pth')
    lr = RecordLr()
    resumed = _train(toy_runner(tmp_path / 'run', loop, [lr], resume=True, name='resumed'))

    assert resumed.iter == ref.iter == 12
    assert sorted(lr.lr) == list(range(int(last.split('_')[-1][:-4]) + 1, 13))
    for it, value in lr.lr.items():
        assert value == pytest.approx(ref_lr.lr[it], rel=1e-12), f'lr at iteration {it}'
    ref_sd, sd = ref.model.state_dict(), resumed.model.state_dict()
    for key in ref_sd:
        torch.testing.assert_close(sd[key], ref_sd[key], rtol=1e-5, atol=1e-7)


# -- weights_only loading ------------------------------------------------------------------------
@pytest.fixture(scope='module')
def mmengine_checkpoint(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp('ckpt')
    _train(toy_runner(work_dir, 'epoch', [], name='ckpt'))
    return os.path.join(work_dir, 'iter_12.pth')


def test_mmengine_checkpoint_needs_the_allowlist_under_weights_only(mmengine_checkpoint):
    with pytest.raises(pickle.UnpicklingError, match='getattr|Counter|HistoryBuffer'):
        torch.load(mmengine_checkpoint, map_location='cpu', weights_only=True)
    ckpt = load_allowlisted(mmengine_checkpoint)
    assert ckpt['meta']['iter'] == 12
    buffer = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buffer, HistoryBuffer) and buffer.current() == buffer.data[0][-1]
    assert [s['last_step'] for s in ckpt['param_schedulers']] == [5, 2]
    if compat.TORCH_ALLOWLISTS:  # torch >= 2.6: torch's loader inside allowlisted_globals
        with allowlisted_globals():
            assert torch.load(mmengine_checkpoint, weights_only=True)['meta']['iter'] == 12
    # leaving the context removes what it added: plain weights_only loading refuses again
    with pytest.raises(pickle.UnpicklingError):
        torch.load(mmengine_checkpoint, map_location='cpu', weights_only=True)


class _Evil:
    """Pickles as getattr(HistoryBuffer, '__init__'): what an attacker would need to reach
    arbitrary code through an allowlisted getattr."""

    def __reduce__(self):
        return getattr, (HistoryBuffer, '__init__')


def test_getattr_stand_in_refuses_anything_but_history_buffer_statistics(tmp_path):
    path = tmp_path / 'evil.pth'
    torch.save({'x': _Evil()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        load_allowlisted(path)


# -- atomic checkpoints ----------------------------------------------------------------------------
CRASH_SCRIPT = textwrap.dedent('''
    import os, resource, signal, sys
    import torch
    from mmengine.hooks import Hook
    from test_resume import toy_runner

    mode, work_dir, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)

    class Grow(Hook):
        """Checkpoints grow with the iteration, so that only the later ones hit the limit."""
        def before_save_checkpoint(self, runner, checkpoint):
            checkpoint['pad'] = torch.zeros(runner.iter * 100_000)

    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (as on a full disk);
    # with the default action the kernel kills the process in the middle of the write.
    if mode == 'killed':
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    toy_runner(work_dir, 'iter', [Grow()], name=mode).train()
''')


@pytest.mark.parametrize('mode', ['killed', 'disk_error'])
def test_crash_while_saving_leaves_previous_checkpoint_usable(tmp_path, mode):
    script = tmp_path / 'crash.py'
    script.write_text(CRASH_SCRIPT)
    work_dir = tmp_path / 'work'
    limit = 1_200_000  # iter_2 (~0.4 MB) fits, iter_4 (~1.2 MB + the rest) does not
    # the script imports this file (its toy runner) and the package from this checkout
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, 'tests'), ROOT]))
    proc = subprocess.run([PY, str(script), mode, str(work_dir), str(limit)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0, proc.stdout[-2000:]
    if mode == 'killed':
        assert proc.returncode == -signal.SIGXFSZ
        # it died inside the write of iter_4: the partial file is cut at the limit
        assert os.path.getsize(work_dir / '.iter_4.pth.partial') == limit
    else:
        assert 'File too large' in proc.stderr
        assert not os.path.exists(work_dir / '.iter_4.pth.partial')  # cleaned up
    assert not os.path.exists(work_dir / 'iter_4.pth')
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'iter_2.pth')
    ckpt = load_allowlisted(work_dir / 'iter_2.pth')
    assert ckpt['meta']['iter'] == 2
    assert find_resumable_checkpoint(str(work_dir)) == str(work_dir / 'iter_2.pth')

    resumed = toy_runner(work_dir, 'iter', [], resume=True, name=f'resume-{mode}')
    resumed.train()
    assert resumed.iter == 12


# -- picking the checkpoint to resume from ---------------------------------------------------------
def _fake_checkpoint(path, size=64):
    torch.save({'w': torch.zeros(size)}, path)
    return str(path)


def test_resume_falls_back_when_last_checkpoint_is_cut_off(tmp_path):
    good = _fake_checkpoint(tmp_path / 'iter_2.pth')
    cut = _fake_checkpoint(tmp_path / 'iter_4.pth', size=10_000)
    with open(cut, 'r+b') as f:
        f.truncate(os.path.getsize(cut) // 2)
    (tmp_path / 'last_checkpoint').write_text(cut)
    assert is_complete_checkpoint(good) and not is_complete_checkpoint(cut)
    assert find_resumable_checkpoint(str(tmp_path)) == good


@pytest.mark.parametrize('pointer', [None, '', 'gone'])
def test_resume_picks_newest_complete_checkpoint_without_a_usable_pointer(tmp_path, pointer):
    for it in (2, 10, 4):  # newest by mtime is iter_4
        _fake_checkpoint(tmp_path / f'iter_{it}.pth')
        time.sleep(0.01)
    (tmp_path / '.iter_6.pth.partial').write_bytes(b'PK\x03\x04 cut')
    if pointer is not None:
        text = str(tmp_path / 'iter_8.pth') if pointer == 'gone' else pointer
        (tmp_path / 'last_checkpoint').write_text(text)
    assert find_resumable_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_4.pth')


def test_resume_without_any_checkpoint_returns_none(tmp_path):
    assert find_resumable_checkpoint(str(tmp_path)) is None


# -- resuming from a checkpoint that cannot be read ------------------------------------------------
def test_resume_from_truncated_checkpoint_names_the_file(tmp_path):
    toy_regression_runner(tmp_path / 'a', train_cfg=dict(by_epoch=False, max_iters=2)).train()
    path = truncate(tmp_path / 'a' / 'iter_2.pth')
    runner = toy_regression_runner(tmp_path / 'b', load_from=str(path), resume=True)
    with pytest.raises(CheckpointError) as err:
        runner.train()
    assert str(err.value).startswith(f'cannot read checkpoint {path} (')
    assert 'the file is truncated, corrupt or not a PyTorch checkpoint' in str(err.value)
    one_line(str(err.value))


def test_resume_from_missing_checkpoint_names_the_file(tmp_path):
    path = tmp_path / 'gone.pth'
    runner = toy_regression_runner(tmp_path / 'b', load_from=str(path), resume=True)
    with pytest.raises(CheckpointError, match=f'^checkpoint not found: {re.escape(str(path))}$'):
        runner.train()


# -- tools/train.py killed mid-epoch on the demo data ----------------------------------------------
SEG_CONFIG = '''
default_scope = 'mmseg'
custom_imports = dict(imports=['block_hook'], allow_failed_imports=False)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=(64, 64)),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), out_indices=(2, 3)),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=1, channels=16, num_convs=1,
                     concat_input=False, dropout_ratio=0., num_classes=150, norm_cfg=norm_cfg,
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', reduce_zero_label=True),
            dict(type='PackSegInputs')]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ADE20KDataset', data_root=DATA_ROOT, reduce_zero_label=True,
                 data_prefix=dict(img_path='images/training',
                                  seg_map_path='annotations/training'),
                 pipeline=pipeline))
train_cfg = dict(type='convnext_backbone.ResumableEpochBasedTrainLoop', max_epochs=3,
                 val_interval=100)
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05))
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6),
                   dict(type='MultiStepLR', milestones=[2], gamma=0.1, by_epoch=True)]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=3),
    sampler_seed=dict(type='DistSamplerSeedHook'))
custom_hooks = [dict(type='BlockAtIterHook')]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork'),
               dist_cfg=dict(backend='gloo'))
log_processor = dict(by_epoch=False)
log_level = 'INFO'
randomness = dict(seed=0)
visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')])
'''

BLOCK_HOOK = '''
import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class BlockAtIterHook(Hook):
    """With BLOCK_AT=N, write BLOCKED_FILE before iteration N and wait to be killed."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if os.environ.get('BLOCK_AT') == str(runner.iter + 1):
            open(os.environ['BLOCKED_FILE'], 'w').close()
            time.sleep(600)
'''


def _scalars(work_dir):
    import json
    records = {}
    for run in sorted(os.listdir(work_dir)):
        path = os.path.join(work_dir, run, 'vis_data', 'scalars.json')
        if os.path.isfile(path):
            for line in open(path):
                record = json.loads(line)
                if 'iter' in record:
                    records[record['iter']] = record
    return records


@pytest.mark.skipif(not os.path.isfile(os.path.join(ROOT, 'tools', 'train.py')),
                    reason='tools/train.py is not there')
def test_train_py_killed_mid_epoch_resumes_like_an_uninterrupted_run(tmp_path):
    pytest.importorskip('mmseg')
    from make_demo_data import make_ade
    data = tmp_path / 'demo_ade'
    make_ade(str(data), {'training': 8}, size=64)  # 4 iterations per epoch, 12 in all
    (tmp_path / 'block_hook.py').write_text(BLOCK_HOOK)
    config = tmp_path / 'tiny_seg.py'
    config.write_text(f'DATA_ROOT = {str(data)!r}\n' + SEG_CONFIG)
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=f'{tmp_path}{os.pathsep}{ROOT}')
    train = [PY, os.path.join(ROOT, 'tools', 'train.py'), str(config)]

    ref = subprocess.run(train + ['--work-dir', str(tmp_path / 'ref')], env=env,
                         capture_output=True, text=True, timeout=120)
    assert ref.returncode == 0, ref.stderr[-3000:]

    work = tmp_path / 'run'
    blocked = tmp_path / 'blocked'
    proc = subprocess.Popen(train + ['--work-dir', str(work)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env=dict(env, BLOCK_AT='8', BLOCKED_FILE=str(blocked)))
    try:
        deadline = time.time() + 90
        while not blocked.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert blocked.exists(), 'training never reached iteration 8'
        proc.send_signal(signal.SIGKILL)  # mid-epoch 2 (iterations 5..8), after iter_6.pth
    finally:
        proc.kill()
        proc.wait()
    assert (work / 'last_checkpoint').read_text().strip() == str(work / 'iter_6.pth')

    resumed = subprocess.run(train + ['--work-dir', str(work), '--resume'], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'resumed epoch: 1, iter: 6' in resumed.stdout + resumed.stderr

    ref_log, log = _scalars(tmp_path / 'ref'), _scalars(work)
    assert sorted(ref_log) == sorted(log) == list(range(1, 13))
    for it in range(1, 13):
        assert log[it]['lr'] == pytest.approx(ref_log[it]['lr'], rel=1e-9), f'lr at {it}'
    # same data order, optimizer and schedule: the continued run computes the same losses
    for it in range(7, 13):
        assert log[it]['loss'] == pytest.approx(ref_log[it]['loss'], rel=1e-4), f'loss at {it}'
    ref_ckpt = load_allowlisted(tmp_path / 'ref' / 'iter_12.pth')
    ckpt = load_allowlisted(work / 'iter_12.pth')
    assert ckpt['meta']['iter'] == ref_ckpt['meta']['iter'] == 12

    # tools/plot_logs.py joins the killed run and its continuation into one curve
    from plot_logs import load_history, main
    train, _, runs = load_history(str(work))
    assert len(runs) == 2 and [r['iter'] for r in train] == list(range(1, 13))
    main([str(work), '--out', str(tmp_path / 'curves.png')])
    assert (tmp_path / 'curves.png').stat().st_size > 10_000
