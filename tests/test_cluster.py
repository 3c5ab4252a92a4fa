"""Faults of a real cluster: a stop signal (preemption, time limit), a lost rank, a kill while a
checkpoint is written. Training goes on from where it was and nothing is lost
(convnext_backbone.engine.preemption, tools/train.py, dist_train.sh, slurm_train.sh).

The in-process tests drive a toy runner; the others run tools/dist_train.sh (torchrun) and, through
sbatch and srun of a real one-node Slurm (tools/slurm_cluster.sh, installed from Debian's packages
if missing), the job script of docs/cluster.md with tools/slurm_train.sh: 2 real processes on gloo
and the demo's tiny ADE20K-layout data.
"""
import contextlib
import os
import re
import signal
import socket
import subprocess
import time

import pytest
import torch
from helpers import PY, ROOT, TOOLS
from mmengine.hooks import Hook
from test_resume import SEG_CONFIG as RESUME_SEG_CONFIG
from test_resume import RecordLr, _scalars, toy_runner

from convnext_backbone import cli
from convnext_backbone.checkpoint import is_complete_checkpoint, load_allowlisted
from convnext_backbone.engine import StopOnSignalHook, find_resumable_checkpoint
from convnext_backbone.engine.preemption import TrainingStopped, restarted_by, resume_after_restart

TIMEOUT = 300  # seconds for one training command; the machine may be shared and slow


def _load(path):
    return load_allowlisted(path)


# -- in-process: the stop hook on a toy runner -----------------------------------------------------
class SignalAt(Hook):
    """Send `signame` to this process before training iteration `at` (1-based)."""

    def __init__(self, at, signame):
        self.at, self.signame = at, signame

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == self.at:
            os.kill(os.getpid(), getattr(signal, self.signame))


@pytest.fixture(scope='module')
def toy_reference(tmp_path_factory):
    """Uninterrupted toy runs, per loop type: (runner, lr per iteration)."""
    runs = {}
    for loop in ('epoch', 'iter'):
        lr = RecordLr()
        runner = toy_runner(tmp_path_factory.mktemp(f'ref-{loop}'), loop, [lr], name='ref')
        runner.train()
        runs[loop] = runner, lr.lr
    return runs


# 7: mid-epoch 2, between interval checkpoints (every 2 iterations), so the hook writes iter_7;
# 8: the last iteration of epoch 2, just saved by CheckpointHook: no second file, and the resumed
# run still has that epoch's end (the by-epoch lr step) to do. (The iteration-based loop of
# mmengine pauses 2 s at each pass over the data, hence one case of it.)
@pytest.mark.parametrize('loop, stop_at, signame', [
    ('epoch', 7, 'SIGTERM'), ('epoch', 8, 'SIGUSR1'), ('iter', 7, 'SIGUSR1')])
def test_a_signal_stops_after_that_iteration_with_its_checkpoint_and_resume_matches(
        tmp_path, toy_reference, loop, stop_at, signame):
    ref, ref_lr = toy_reference[loop]
    before = signal.getsignal(getattr(signal, signame))
    with pytest.raises(TrainingStopped) as stopped:
        toy_runner(tmp_path, loop, [SignalAt(stop_at, signame)], name='stopped').train()
    assert signal.getsignal(getattr(signal, signame)) is before  # handlers put back
    path = str(tmp_path / f'iter_{stop_at}.pth')
    assert (stopped.value.signame, stopped.value.iteration, stopped.value.checkpoint) == \
        (signame, stop_at, path)
    assert (tmp_path / 'last_checkpoint').read_text() == path
    assert sorted(p.name for p in tmp_path.glob('*.pth')) == sorted(
        f'iter_{i}.pth' for i in {*range(2, stop_at + 1, 2), stop_at})
    meta = _load(path)['meta']
    # epoch 2 (0-based 1), its 3rd or 4th batch; the iteration-based loop counts no epochs
    assert (meta['iter'], meta['epoch']) == (stop_at, 1 if loop == 'epoch' else 0)

    lr = RecordLr()
    resumed = toy_runner(tmp_path, loop, [lr], resume=True, name='resumed')
    resumed.train()
    assert resumed.iter == 12
    assert sorted(lr.lr) == list(range(stop_at + 1, 13))
    for it, value in lr.lr.items():
        assert value == pytest.approx(ref_lr[it], rel=1e-12), f'lr at iteration {it}'
    ref_sd, sd = ref.model.state_dict(), resumed.model.state_dict()
    for key in ref_sd:
        torch.testing.assert_close(sd[key], ref_sd[key], rtol=1e-6, atol=0)
    # the stop checkpoint goes once a later interval checkpoint replaced it
    assert not (tmp_path / 'iter_7.pth').exists()


WORKERS_SCRIPT = '''
import os, signal, sys
from mmengine.hooks import Hook
from helpers import ToyRegressionData as ToyData
from test_resume import ToyModel
from convnext_backbone import cli
from convnext_backbone.engine import ResumableRunner

class SignalTheGroup(Hook):
    """SIGTERM to every process of this session (as slurm signals every process of a step)."""
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 == 3:
            os.killpg(0, signal.SIGTERM)

runner = ResumableRunner(
    model=ToyModel(), work_dir=sys.argv[1],
    train_dataloader=dict(dataset=ToyData(), batch_size=2, num_workers=2,
                          sampler=dict(type='DefaultSampler', shuffle=True),
                          collate_fn=dict(type='default_collate')),
    train_cfg=dict(by_epoch=True, max_epochs=2),
    optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
    default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
    custom_hooks=[SignalTheGroup()])
with cli.one_line_errors():
    runner.train()
'''


def test_a_signal_to_every_process_of_the_job_spares_the_data_loader_workers(tmp_path):
    script = tmp_path / 'workers.py'
    script.write_text(WORKERS_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join([os.path.join(ROOT, 'tests'), ROOT]))
    proc = subprocess.run([PY, str(script), str(tmp_path / 'work')], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          start_new_session=True)
    assert proc.returncode == cli.EXIT_STOPPED, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _load(tmp_path / 'work' / 'iter_3.pth')['meta']['iter'] == 3
    assert 'DataLoader worker' not in proc.stderr


EXIT_SCRIPT = '''
import atexit, logging, os, sys
import torch.distributed as dist
from convnext_backbone.engine.dist import close_process_group, exit_process
dist.init_process_group('gloo', rank=0, world_size=1)
atexit.register(lambda: open(sys.argv[1], 'w').write('atexit ran'))
logging.basicConfig(filename=sys.argv[2], level=logging.INFO)
logging.info('logged before the exit')
sys.stdout.write('printed without a newline')
print(close_process_group(), close_process_group(), end=' ')
exit_process(7)
'''


def test_a_distributed_rank_ends_by_exit_process_after_atexit_functions_and_flushed_logs(tmp_path):
    # A regression test of the ending that skips gloo's teardown at interpreter exit: the
    # process's status is the given one, atexit functions ran, logs and stdout are complete,
    # and the second close_process_group finds no group.
    script, done, log = tmp_path / 'exit.py', tmp_path / 'atexit.txt', tmp_path / 'log.txt'
    script.write_text(EXIT_SCRIPT)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = dict(os.environ, MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port),
               PYTHONPATH=ROOT)
    proc = subprocess.run([PY, str(script), str(done), str(log)], env=env, cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 7, proc.stderr[-2000:]
    assert proc.stdout == 'printed without a newlineTrue False '
    assert done.read_text() == 'atexit ran'
    assert 'logged before the exit' in log.read_text()


@pytest.mark.parametrize('args, shown', [(['x'], 'x'), (['-1'], '-1'), ([], '')])
def test_dist_train_names_a_bad_max_restarts(args, shown):
    proc = subprocess.run(['bash', os.path.join(TOOLS, 'dist_train.sh'), 'config.py', '2',
                           '--max-restarts', *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"--max-restarts '{shown}': use a whole number >= 0" in proc.stderr


def test_stop_hook_names_a_bad_signal():
    with pytest.raises(ValueError, match=r"'SIGKILL' is not a signal that can be caught"):
        StopOnSignalHook(signals=('SIGTERM', 'SIGKILL'))
    with pytest.raises(ValueError, match=r"'TERM' is not a signal"):
        StopOnSignalHook(signals=['TERM'])


def test_stop_hook_with_no_signals_leaves_the_handlers_alone(tmp_path):
    runner = toy_runner(tmp_path, 'epoch', [StopOnSignalHook(signals=())], name='off')
    seen = []

    class Look(Hook):
        def before_train_iter(self, runner, batch_idx, data_batch=None):
            seen.append(signal.getsignal(signal.SIGTERM))

    runner.register_hook(Look())
    runner.train()
    assert set(seen) == {signal.SIG_DFL}


# -- restarts and the checkpoint they continue from ------------------------------------------------
@pytest.mark.parametrize('environ, expected', [
    ({}, None),
    ({'SLURM_RESTART_COUNT': '0', 'TORCHELASTIC_RESTART_COUNT': '0'}, None),
    ({'SLURM_RESTART_COUNT': '2'}, 'SLURM_RESTART_COUNT=2'),
    ({'TORCHELASTIC_RESTART_COUNT': '1'}, 'TORCHELASTIC_RESTART_COUNT=1'),
    ({'SLURM_RESTART_COUNT': 'x'}, None),
])
def test_restarted_by_reads_the_restart_counts_of_slurm_and_torchrun(environ, expected):
    assert restarted_by(environ) == expected


def _checkpoint(path, mtime):
    torch.save({'w': torch.zeros(4)}, path)
    os.utime(path, (mtime, mtime))
    return str(path)


def test_a_restarted_job_continues_from_the_work_dir_and_a_first_start_does_not(tmp_path):
    restarted = {'TORCHELASTIC_RESTART_COUNT': '1'}
    assert resume_after_restart(str(tmp_path), restarted) is None  # nothing saved yet
    path = _checkpoint(tmp_path / 'iter_4.pth', 1000)
    assert resume_after_restart(str(tmp_path), restarted) == path
    assert resume_after_restart(str(tmp_path), {}) is None


def test_resume_takes_a_complete_checkpoint_newer_than_last_checkpoint_names(tmp_path):
    """A kill between a checkpoint's rename and CheckpointHook's pointer update."""
    old = _checkpoint(tmp_path / 'iter_4.pth', 1000)
    new = _checkpoint(tmp_path / 'iter_6.pth', 2000)
    (tmp_path / 'last_checkpoint').write_text(old)
    assert find_resumable_checkpoint(str(tmp_path)) == new
    os.utime(new, (500, 500))  # left by an earlier run, resumed from before it since
    assert find_resumable_checkpoint(str(tmp_path)) == old


# -- real processes: torchrun and slurm, 2 ranks on gloo ------------------------------------------
# test_resume's tiny segmentation config on 16 images, 2 ranks x 2 images: 4 iterations per epoch,
# 12 in all; interval checkpoints at 4, 8 and 12; lr warm-up per iteration and a by-epoch step, so
# a shifted schedule shows. Only the last stage feeds the head (DDP refuses unused parameters);
# the head has ADE20K's 150 classes, as the dataset says.
SEG_CONFIG = """
_base_ = ['tiny_seg_base.py']
custom_imports = dict(imports=['cluster_faults'], allow_failed_imports=False)
model = dict(backbone=dict(out_indices=(3,)), decode_head=dict(in_index=0, num_classes=150))
default_hooks = dict(checkpoint=dict(interval=4))
custom_hooks = [dict(type='FaultAtIterHook')]
"""

# Imported by every training process through custom_imports.
FAULTS = '''
import os
import time

from mmengine.fileio.backends import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from convnext_backbone.engine import StopOnSignalHook
from convnext_backbone.engine.preemption import restarted_by


def _mark(path, text):
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)  # whoever waits for the file never reads half of it


def _wait(done, what):
    deadline = time.time() + 300
    while time.time() < deadline:
        if done():
            return
        time.sleep(0.02)
    raise RuntimeError(f'waited 300 s for {what}')


@HOOKS.register_module()
class FaultAtIterHook(Hook):
    """With FAULT_AT=N, FAULT_RANK=r: before iteration N of the first attempt (not in a requeued
    or restarted one), rank r writes its pid to FAULT_FILE, then waits until a stop signal
    reached it (FAULT_WAIT=signal) or for its end (FAULT_WAIT=kill)."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        env = os.environ
        if (env.get('FAULT_AT') != str(runner.iter + 1) or env.get('FAULT_RANK') != str(runner.rank)
                or restarted_by() is not None):  # a requeued slurm job, a torchrun restart
            return
        stop = next(h for h in runner.hooks if isinstance(h, StopOnSignalHook))
        _mark(env['FAULT_FILE'], str(os.getpid()))
        _wait(lambda: env['FAULT_WAIT'] == 'signal' and stop.requested, 'the fault')


class SlowDisk(LocalBackend):
    """A local disk that stalls half-way through writing the file named SLOW_SAVE: it writes and
    syncs the first half, writes its pid to SLOW_FILE, then waits for its end."""

    def put(self, obj, filepath):
        if os.path.basename(str(filepath)) != os.environ.get('SLOW_SAVE'):
            return super().put(obj, filepath)
        with open(filepath, 'wb') as f:
            f.write(obj[:len(obj) // 2])
            f.flush()
            os.fsync(f.fileno())
            _mark(os.environ['SLOW_FILE'], f'{os.getpid()} {len(obj) // 2}')
            _wait(lambda: False, 'a kill')


register_backend('local', SlowDisk, force=True, prefixes='')
'''

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def seg_setup(tmp_path_factory):
    """(config, env) for the 2-process runs."""
    pytest.importorskip('mmseg')
    root = tmp_path_factory.mktemp('cluster')
    from make_demo_data import make_ade
    make_ade(str(root / 'ade'), {'training': 16}, size=64)
    (root / 'cluster_faults.py').write_text(FAULTS)
    (root / 'tiny_seg_base.py').write_text(f'DATA_ROOT = {str(root / "ade")!r}\n'
                                           + RESUME_SEG_CONFIG)
    config = root / 'tiny_seg.py'
    config.write_text(SEG_CONFIG)
    # deterministic settings: one thread, and the plain kernels (not a per-process choice by
    # timing, which may differ between two runs)
    env = dict(os.environ, OMP_NUM_THREADS='1', CONVNEXT_FAST_PATHS='plain', PYTHON=PY,
               PYTHONPATH=os.pathsep.join([str(root), ROOT]))
    for key in [k for k in env if k.startswith('SLURM_')] + ['TORCHELASTIC_RESTART_COUNT']:
        env.pop(key, None)  # pytest may itself run in a slurm job
    return str(config), env


def _descendants(pid):
    """The processes below `pid` (from /proc), children first."""
    children = {}
    for entry in filter(str.isdigit, os.listdir('/proc')):
        with contextlib.suppress(OSError):
            with open(f'/proc/{entry}/stat') as f:
                parent = int(f.read().rsplit(')', 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


class Job:
    """A launcher command in its own session, its output in a file, killed with its children if
    the test fails."""

    def __init__(self, args, env, log):
        self.log = log
        with open(log, 'w') as out:
            self.proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_for(self, path):
        deadline = time.time() + TIMEOUT
        while not os.path.exists(path):
            assert self.proc.poll() is None, f'ended with {self.proc.returncode}:\n{self.tail()}'
            assert time.time() < deadline, f'{path} never appeared:\n{self.tail()}'
            time.sleep(0.05)
        return open(path).read()

    def finish(self):
        try:
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            if self.proc.poll() is None:  # torchrun starts each worker in a session of its own
                for pid in [*_descendants(self.proc.pid), self.proc.pid]:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait()

    def text(self):
        return open(self.log).read()

    def tail(self):
        return self.text()[-6000:]


def _dist_train(config, work, env, log, *args):
    env = dict(env, PORT=str(_free_port()))
    return Job(['bash', os.path.join(TOOLS, 'dist_train.sh'), config, '2', '--work-dir',
                str(work), *args], env, log)


def _done(job):
    status = job.finish()
    assert status == 0, job.tail()


@pytest.fixture(scope='module')
def seg_reference(seg_setup, tmp_path_factory):
    """An uninterrupted 2-process run: (lr per iteration, final weights)."""
    config, env = seg_setup
    work = tmp_path_factory.mktemp('reference')
    _done(_dist_train(config, work, env, work / 'log.txt'))
    return _lr(work), _load(work / 'iter_12.pth')['state_dict']


def _lr(work):
    """lr by iteration; a continued run's records win over those of the run it continues."""
    return {it: record['lr'] for it, record in _scalars(work).items()}


def _matches_reference(work, reference):
    ref_lr, ref_weights = reference
    lr = _lr(work)
    assert sorted(lr) == sorted(ref_lr) == list(range(1, 13))
    for it in lr:
        assert lr[it] == pytest.approx(ref_lr[it], rel=1e-12), f'lr at iteration {it}'
    ckpt = _load(work / 'iter_12.pth')
    assert ckpt['meta']['iter'] == 12
    for key, ref in ref_weights.items():
        value = ckpt['state_dict'][key]
        if ref.is_floating_point():
            err = (value - ref).norm() / ref.norm().clamp_min(1e-12)
            assert err < 1e-6, f'{key}: relative error {err:.3g}'
        else:
            assert torch.equal(value, ref), key


def _stopped_at(work, iteration):
    path = str(work / f'iter_{iteration}.pth')
    assert (work / 'last_checkpoint').read_text() == path
    meta = _load(path)['meta']
    assert (meta['iter'], meta['epoch']) == (iteration, iteration // 4)


def test_sigusr1_to_one_torchrun_worker_stops_every_rank_at_that_iteration(seg_setup, tmp_path):
    config, env = seg_setup
    work = tmp_path / 'work'
    fault = tmp_path / 'fault'
    job = _dist_train(config, work, dict(env, FAULT_AT='6', FAULT_RANK='1', FAULT_WAIT='signal',
                                         FAULT_FILE=str(fault)), tmp_path / 'stop.txt')
    os.kill(int(job.wait_for(fault)), signal.SIGUSR1)  # rank 1 only; rank 0 writes the file
    assert job.finish() == cli.EXIT_STOPPED, job.tail()
    log = job.text()
    assert 'dist_launch.sh: SIGUSR1: training stopped after iteration 6' in log
    assert 'Iter(train) [ 6/12]' in log and 'Iter(train) [ 7/12]' not in log
    _stopped_at(work, 6)


def test_sigkill_of_one_rank_under_max_restarts_completes_like_an_uninterrupted_run(
        seg_setup, seg_reference, tmp_path):
    config, env = seg_setup
    work = tmp_path / 'work'
    fault = tmp_path / 'fault'
    job = _dist_train(config, work, dict(env, FAULT_AT='7', FAULT_RANK='1', FAULT_WAIT='kill',
                                         FAULT_FILE=str(fault)),
                      tmp_path / 'log.txt', '--max-restarts', '1')
    os.kill(int(job.wait_for(fault)), signal.SIGKILL)  # rank 1, mid-epoch 2, after iter_4
    assert job.finish() == 0, job.tail()
    assert 'TORCHELASTIC_RESTART_COUNT=1: this job was restarted; it continues from ' \
        f'{work / "iter_4.pth"}' in job.text()
    _matches_reference(work, seg_reference)


def test_sigkill_while_a_checkpoint_is_written_keeps_the_previous_one_and_resume_works(
        seg_setup, seg_reference, tmp_path):
    config, env = seg_setup
    work = tmp_path / 'work'
    slow = tmp_path / 'slow'
    job = _dist_train(config, work, dict(env, SLOW_SAVE='.iter_8.pth.partial',
                                         SLOW_FILE=str(slow)), tmp_path / 'log.txt')
    pid, written = map(int, job.wait_for(slow).split())
    os.kill(pid, signal.SIGKILL)  # rank 0, half-way through writing iter_8
    assert job.finish() != 0
    assert os.path.getsize(work / '.iter_8.pth.partial') == written  # killed mid-write
    assert not (work / 'iter_8.pth').exists()
    assert (work / 'last_checkpoint').read_text() == str(work / 'iter_4.pth')
    names = [n for n in os.listdir(work) if n.endswith('.pth')]
    assert names == ['iter_4.pth']
    assert is_complete_checkpoint(str(work / 'iter_4.pth'))
    assert _load(work / 'iter_4.pth')['meta']['iter'] == 4
    assert find_resumable_checkpoint(str(work)) == str(work / 'iter_4.pth')

    _done(_dist_train(config, work, env, tmp_path / 'resume.txt', '--resume'))
    _matches_reference(work, seg_reference)
    assert not [n for n in os.listdir(work) if n.endswith('.partial')]


# -- a real one-node Slurm: sbatch with the job script of docs/cluster.md -------------------------
# One job at a time: each takes both CPUs of the node (2 tasks). The cluster's AuthInfo
# cred_expire is 5 s (tools/slurm_cluster.sh), so a requeued job may start again after about 6 s
# instead of Slurm's default 121 s; KillWait is 10 s.
SLURM_DONE = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY',
              'PREEMPTED', 'BOOT_FAIL', 'DEADLINE')
# what the test cluster has instead of the 2 nodes x 8 GPUs of the docs' script (sbatch options
# on the command line override the script's #SBATCH lines)
SBATCH_HERE = ['--partition=debug', '--nodes=1', '--ntasks-per-node=2', '--gres=gpu:2',
               '--cpus-per-task=1', '--job-name=tiny-seg']
TIMES = {}  # seconds measured by the tests, printed at the end of the session


@pytest.fixture(scope='session')
def slurm(tmp_path_factory):
    """SLURM_CONF of a one-node cluster for this session (tools/slurm_cluster.sh: installs
    slurm-wlm and munge if missing, stops the daemons at the end)."""
    folder = tmp_path_factory.mktemp('slurm') / 'cluster'
    script = os.path.join(TOOLS, 'slurm_cluster.sh')
    proc = subprocess.run(['bash', script, 'start', str(folder)], capture_output=True, text=True,
                          timeout=900)
    if proc.returncode == 3:  # not root, or not installed and not installable (no apt-get)
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield str(folder / 'slurm.conf')
    if TIMES:
        print('\nslurm times (s): ' + ', '.join(f'{k} {v:.1f}' for k, v in TIMES.items()))
    stop = subprocess.run(['bash', script, 'stop', str(folder)], capture_output=True, text=True,
                          timeout=120)
    assert stop.returncode == 0, stop.stderr


def _job_script():
    """The batch script of docs/cluster.md, verbatim."""
    with open(os.path.join(ROOT, 'docs', 'cluster.md')) as f:
        doc = f.read()
    found = re.search(r'```bash\n(#!/usr/bin/env bash\n#SBATCH .*?)```', doc, re.S)
    assert found, 'docs/cluster.md has no batch script'
    return found.group(1)


def _fields(text):
    return dict(re.findall(r'(\w+)=(\S*)', text))


class SlurmJob:
    """`sbatch` of the docs' job script for CONFIG WORK_DIR, its log (all attempts) in a file."""

    def __init__(self, slurm, seg_setup, tmp_path, *options, **env):
        config, base = seg_setup
        self.env = dict(base, SLURM_CONF=slurm, MASTER_PORT=str(_free_port()), **env)
        self.work = tmp_path / 'work'
        self.log = tmp_path / 'slurm.out'
        self.fault = tmp_path / 'fault'
        self.env.setdefault('FAULT_FILE', str(self.fault))
        script = tmp_path / 'train_job.sh'
        script.write_text(_job_script())
        proc = self.slurm('sbatch', '--parsable', *SBATCH_HERE, f'--output={self.log}',
                          *options, str(script), config, str(self.work))
        self.id = proc.stdout.strip().split(';')[0]

    def slurm(self, *command):
        proc = subprocess.run(command, env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f'{command}: {proc.stderr}'
        return proc

    def show(self):
        """The job's fields (JobState, Restarts, ExitCode, ...) from `scontrol show job`."""
        return _fields(self.slurm('scontrol', 'show', 'job', '-o', self.id).stdout)

    def text(self):
        return self.log.read_text() if self.log.exists() else ''

    def until(self, done, what, timeout=TIMEOUT):
        """Poll `done(fields)` until it is true; the seconds it took."""
        start = time.time()
        while True:
            fields = self.show()
            if done(fields):
                return time.time() - start
            assert fields['JobState'] not in SLURM_DONE, \
                f'job {self.id} ended ({fields["JobState"]}) before {what}:\n{self.text()[-6000:]}'
            assert time.time() - start < timeout, \
                f'no {what} in {timeout} s:\n{self.text()[-6000:]}'
            time.sleep(0.2)

    def wait_for(self, path):
        self.until(lambda f: os.path.exists(path), f'{path}')
        return open(path).read()

    def finish(self, restarts):
        """Wait for the end of attempt `restarts` + 1; its JobState."""
        start = time.time()
        while True:
            fields = self.show()
            if fields['JobState'] in SLURM_DONE and int(fields['Restarts']) >= restarts:
                assert int(fields['Restarts']) == restarts, self.text()[-6000:]
                return fields['JobState']
            assert time.time() - start < TIMEOUT, f'job {self.id} runs on:\n{self.text()[-6000:]}'
            time.sleep(0.5)

    def cancel(self):
        subprocess.run(['scancel', self.id], env=self.env, timeout=60)


@pytest.fixture
def job(slurm, seg_setup, tmp_path):
    """Submits SlurmJob(*options, **env); cancels what still runs at the end of the test."""
    jobs = []

    def submit(*options, **env):
        jobs.append(SlurmJob(slurm, seg_setup, tmp_path, *options, **env))
        return jobs[-1]

    yield submit
    for j in jobs:
        j.cancel()


@pytest.fixture(scope='module')
def slurm_reference(slurm, seg_setup, tmp_path_factory):
    """An uninterrupted sbatch job: (lr per iteration, final weights)."""
    ref = SlurmJob(slurm, seg_setup, tmp_path_factory.mktemp('slurm-reference'))
    try:
        assert ref.finish(0) == 'COMPLETED', ref.text()[-6000:]
    finally:
        ref.cancel()
    return _lr(ref.work), _load(ref.work / 'iter_12.pth')['state_dict']


def _each_iteration_once(text):
    """The log of all attempts trained each of the 12 iterations once: none was trained twice."""
    counts = {i: text.count(f'Iter(train) [{i:>2}/12]') for i in range(1, 13)}
    assert set(counts.values()) == {1}, counts


def _resumed(job, stopped_at, reference):
    text = job.text()
    assert f'SLURM_RESTART_COUNT=1: this job was restarted; it continues from ' \
        f'{job.work / f"iter_{stopped_at}.pth"}' in text, text[-6000:]
    _each_iteration_once(text)
    _matches_reference(job.work, reference)


def _until_file(job, path, since):
    """Wait (20 ms steps) for `path`; the seconds from `since` to it."""
    while not os.path.exists(path):
        assert time.time() - since < TIMEOUT, f'no {path}:\n{job.text()[-6000:]}'
        time.sleep(0.02)
    return time.time() - since


def _requeued_and_resumed(job, since, name):
    """The job is requeued, and its second attempt trains and ends; times in TIMES."""
    job.until(lambda f: int(f['Restarts']) >= 1, 'a requeue')
    requeued = time.time()
    TIMES[f'{name}: to requeued'] = requeued - since
    job.until(lambda f: 'Iter(train) [' in job.text().partition('this job was restarted')[2],
              'the resumed training')  # the first iteration the second attempt trains
    TIMES[f'{name}: requeue to resumed training'] = time.time() - requeued
    return job.finish(1)


# Each case costs 35-70 s here: the first attempt to iteration 6 (15-25 s), ~6 s to the requeued
# start, the resumed attempt (20-30 s); the time-limit case waits 40-70 s more for the signal.
@pytest.mark.parametrize('how', ['scancel --signal=USR1', 'scontrol requeue'])
def test_a_slurm_job_stopped_by_a_signal_or_requeue_checkpoints_its_iteration_and_resumes_exactly(
        job, slurm_reference, how):
    j = job(FAULT_AT='6', FAULT_RANK='0', FAULT_WAIT='signal')
    j.wait_for(j.fault)  # rank 0 waits before iteration 6 (epoch 2, batch 2) for a signal
    since = time.time()
    # scancel --signal: every step but the batch shell, so srun's tasks get SIGUSR1 directly;
    # scontrol requeue: Slurm ends the job with SIGTERM to every process of every step (the
    # batch shell and srun too) and SIGKILL KillWait later, and puts it back in the queue
    j.slurm(*how.split(), j.id)
    TIMES[f'{how}: signal to checkpoint'] = _until_file(j, j.work / 'iter_6.pth', since)
    assert _requeued_and_resumed(j, since, how) == 'COMPLETED'
    text = j.text()
    signame = 'SIGUSR1' if how.startswith('scancel') else 'SIGTERM'
    assert f'{signame}: training stopped after iteration 6; checkpoint ' \
        f'{j.work / "iter_6.pth"}' in text
    if how.startswith('scancel'):  # the job still runs: slurm_train.sh requeues it
        assert f'slurm_train.sh: training stopped at a checkpoint; requeueing job {j.id}' in text
    else:  # Slurm requeues it; slurm_train.sh does not requeue it again
        assert 'CANCELLED AT' in text and 'DUE TO JOB REQUEUE' in text
        assert f'Slurm ends job {j.id}' in text and 'requeueing job' not in text
    _resumed(j, 6, slurm_reference)
    assert not (j.work / 'iter_6.pth').exists()  # replaced by iter_8


def test_a_slurm_job_gets_its_signal_before_the_time_limit_stops_at_a_checkpoint_and_resumes(
        job, slurm_reference):
    # --signal=B:USR1@50 with a 2-minute limit: slurmctld looks every 30 s and sends the signal
    # once the end is less than 50 + 30 s away, so the batch shell (slurm_train.sh) gets SIGUSR1
    # 40-70 s after the start (after iteration 6 is reached, ~15-25 s) and passes it on to srun
    j = job('--time=2', '--signal=B:USR1@50', FAULT_AT='6', FAULT_RANK='0', FAULT_WAIT='signal')
    j.wait_for(j.fault)
    start = j.show()['StartTime']
    since = time.time()
    waited = _until_file(j, j.work / 'iter_6.pth', since)
    limit = time.mktime(time.strptime(start, '%Y-%m-%dT%H:%M:%S')) + 120
    TIMES['time limit: checkpoint before the limit'] = limit - time.time()
    assert time.time() < limit - 10, f'checkpoint {waited:.0f} s after iteration 6: too late'
    assert _requeued_and_resumed(j, since, 'time limit') == 'COMPLETED'
    text = j.text()
    assert 'DUE TO TIME LIMIT' not in text
    assert f'SIGUSR1: training stopped after iteration 6; checkpoint {j.work / "iter_6.pth"}' \
        in text
    assert f'slurm_train.sh: training stopped at a checkpoint; requeueing job {j.id}' in text
    _resumed(j, 6, slurm_reference)


def test_a_killed_task_fails_the_slurm_job_naming_it_and_a_requeue_resumes_from_the_last_checkpoint(
        job, slurm_reference):
    j = job(FAULT_AT='7', FAULT_RANK='1', FAULT_WAIT='kill')
    os.kill(int(j.wait_for(j.fault)), signal.SIGKILL)  # rank 1 before iteration 7, after iter_4
    assert j.finish(0) == 'FAILED'
    text = j.text()
    assert re.search(rf'srun: error: {re.escape(socket.gethostname().split(".")[0])}: '
                     r'task 1: Killed', text), text[-6000:]
    assert 'requeueing job' not in text  # only a stop at a checkpoint requeues by itself
    assert sorted(n for n in os.listdir(j.work) if n.endswith('.pth')) == ['iter_4.pth']
    since = time.time()
    j.slurm('scontrol', 'requeue', j.id)  # "the next run": the same job again
    assert _requeued_and_resumed(j, since, 'after a killed task') == 'COMPLETED'
    text = j.text()
    assert f'continues from {j.work / "iter_4.pth"}' in text
    # iterations 5 and 6 were trained twice: once before the kill, once after the requeue
    counts = {i: text.count(f'Iter(train) [{i:>2}/12]') for i in range(1, 13)}
    assert counts == {i: 2 if i in (5, 6) else 1 for i in range(1, 13)}, counts
    _matches_reference(j.work, slurm_reference)


def test_sigterm_to_slurm_train_outside_a_batch_job_stops_the_tasks_at_a_checkpoint(
        slurm, seg_setup, tmp_path):
    """srun run from a login node: SIGTERM to the script reaches the tasks as SIGUSR1 (srun
    would answer a SIGTERM of its own by killing them); no job to requeue: exit 75."""
    config, env = seg_setup
    work, fault = tmp_path / 'work', tmp_path / 'fault'
    env = dict(env, SLURM_CONF=slurm, MASTER_PORT=str(_free_port()), GPUS='2', GPUS_PER_NODE='2',
               CPUS_PER_TASK='1', FAULT_AT='6', FAULT_RANK='0', FAULT_WAIT='signal',
               FAULT_FILE=str(fault))
    run = Job(['bash', os.path.join(TOOLS, 'slurm_train.sh'), 'debug', 'tiny-seg', config,
               str(work)], env, tmp_path / 'log.txt')
    run.wait_for(fault)
    run.proc.send_signal(signal.SIGTERM)
    assert run.finish() == cli.EXIT_STOPPED, run.tail()
    text = run.text()
    assert 'SIGUSR1: training stopped after iteration 6' in text
    assert 'run the same command with --resume to continue' in text
    assert 'forcing job termination' not in text
    _stopped_at(work, 6)
