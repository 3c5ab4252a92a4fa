"""Faults of a real cluster: a stop signal (preemption, time limit), a lost rank, a kill while a
checkpoint is written. Training goes on from where it was and nothing is lost
(convnext_backbone.engine.preemption, tools/train.py, dist_train.sh, slurm_train.sh).

The in-process tests drive a toy runner; the others run tools/dist_train.sh (torchrun) and
tools/slurm_train.sh with 2 real processes on gloo and the demo's tiny ADE20K-layout data.
"""
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from mmengine.hooks import Hook
from test_resume import SEG_CONFIG as RESUME_SEG_CONFIG
from test_resume import RecordLr, _scalars, toy_runner

from convnext_backbone import cli
from convnext_backbone.checkpoint import allowlisted_globals, is_complete_checkpoint
from convnext_backbone.engine import StopOnSignalHook, find_resumable_checkpoint
from convnext_backbone.engine.preemption import TrainingStopped, restarted_by, resume_after_restart

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, 'tools')
PY = sys.executable
TIMEOUT = 300  # seconds for one training command; the machine may be shared and slow


def _load(path):
    with allowlisted_globals():
        return torch.load(path, map_location='cpu', weights_only=True)


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
from test_resume import ToyData, ToyModel
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


# -- real processes: torchrun and (stand-ins for) slurm, 2 ranks on gloo ---------------------------
# test_resume's tiny segmentation config on 16 images, 2 ranks x 2 images: 4 iterations per epoch,
# 12 in all; interval checkpoints at 4, 8 and 12; lr warm-up per iteration and a by-epoch step, so
# a shifted schedule shows. Only the last stage feeds the head (DDP refuses unused parameters).
SEG_CONFIG = """
_base_ = ['tiny_seg_base.py']
custom_imports = dict(imports=['cluster_faults'], allow_failed_imports=False)
model = dict(backbone=dict(out_indices=(3,)), decode_head=dict(in_index=0))
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
    """With FAULT_AT=N, FAULT_RANK=r: before iteration N of the first attempt, rank r writes its
    pid to FAULT_FILE, then waits until a stop signal reached it (FAULT_WAIT=signal) or for its
    end (FAULT_WAIT=kill)."""

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        env = os.environ
        if (env.get('FAULT_AT') != str(runner.iter + 1) or env.get('FAULT_RANK') != str(runner.rank)
                or env.get('TORCHELASTIC_RESTART_COUNT', '0') != '0'):
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

# srun and scontrol for a machine without slurm: what the tools need of them, per srun(1) and
# scontrol(1). srun starts --ntasks copies of the command here with the variables srun gives its
# tasks, forwards TERM and USR1 to them, kills the others once one exits non-zero
# (--kill-on-bad-exit=1) and returns the highest exit status of its tasks (128 + signal for a task
# that a signal ended).
FAKE_SRUN = r'''#!/usr/bin/env bash
NTASKS=1
KILL_ON_BAD_EXIT=0
while [ $# -gt 0 ]; do
    case "$1" in
        --ntasks=*) NTASKS=${1#*=}; shift ;;
        --kill-on-bad-exit=1) KILL_ON_BAD_EXIT=1; shift ;;
        -p) shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
PIDS=()
for ((i = 0; i < NTASKS; i++)); do
    SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NTASKS=$NTASKS SLURM_NODELIST=localhost "$@" &
    PIDS+=($!)
done
trap 'kill -TERM "${PIDS[@]}" 2>/dev/null' TERM
trap 'kill -USR1 "${PIDS[@]}" 2>/dev/null' USR1
STATUS=0
BAD=0
while [ ${#PIDS[@]} -gt 0 ]; do
    LEFT=()
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then LEFT+=("$pid"); continue; fi
        wait "$pid"; s=$?
        if [ "$s" -gt "$STATUS" ]; then STATUS=$s; fi
        if [ "$s" -ne 0 ]; then BAD=1; fi
    done
    PIDS=(${LEFT[@]+"${LEFT[@]}"})
    if [ "$BAD$KILL_ON_BAD_EXIT" = 11 ] && [ ${#PIDS[@]} -gt 0 ]; then
        kill -KILL "${PIDS[@]}" 2>/dev/null
    fi
    sleep 0.1
done
exit "$STATUS"
'''
FAKE_SCONTROL = r'''#!/usr/bin/env bash
echo "$*" >> "$SCONTROL_LOG"
case "$1 $2" in
    "show job") printf 'JobId=%s JobName=x\n   Requeue=1 Restarts=0 BatchFlag=1 Reboot=0\n' "$3" ;;
    "show hostname") echo localhost ;;
esac
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
    sys.path.insert(0, TOOLS)
    try:
        from make_demo_data import make_ade
    finally:
        sys.path.remove(TOOLS)
    make_ade(str(root / 'ade'), {'training': 16}, size=64)
    (root / 'cluster_faults.py').write_text(FAULTS)
    (root / 'tiny_seg_base.py').write_text(f'DATA_ROOT = {str(root / "ade")!r}\n'
                                           + RESUME_SEG_CONFIG)
    config = root / 'tiny_seg.py'
    config.write_text(SEG_CONFIG)
    bin_dir = root / 'bin'
    bin_dir.mkdir()
    for name, text in (('srun', FAKE_SRUN), ('scontrol', FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    # deterministic settings: one thread, and the plain kernels (not a per-process choice by
    # timing, which may differ between two runs)
    env = dict(os.environ, OMP_NUM_THREADS='1', CONVNEXT_FAST_PATHS='plain', PYTHON=PY,
               PYTHONPATH=os.pathsep.join([str(root), ROOT]))
    for key in ('SLURM_JOB_ID', 'SLURM_RESTART_COUNT', 'TORCHELASTIC_RESTART_COUNT'):
        env.pop(key, None)
    return str(config), env, bin_dir


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
    config, env, _ = seg_setup
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


def test_sigterm_to_a_slurm_job_stops_it_at_that_iteration_requeues_it_and_it_resumes_exactly(
        seg_setup, seg_reference, tmp_path):
    config, env, bin_dir = seg_setup
    work = tmp_path / 'work'
    fault = tmp_path / 'fault'
    scontrol_log = tmp_path / 'scontrol.log'
    env = dict(env, PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}', SLURM_JOB_ID='4242',
               SCONTROL_LOG=str(scontrol_log), GPUS='2', GPUS_PER_NODE='2',
               MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_free_port()))
    command = ['bash', os.path.join(TOOLS, 'slurm_train.sh'), 'part', 'job', config, str(work)]
    job = Job(command, dict(env, FAULT_AT='6', FAULT_RANK='0', FAULT_WAIT='signal',
                            FAULT_FILE=str(fault)), tmp_path / 'stop.txt')
    job.wait_for(fault)  # rank 0 is about to train iteration 6 (epoch 2, batch 2)
    job.proc.send_signal(signal.SIGTERM)  # the batch shell -> srun -> both tasks
    assert job.finish() == cli.EXIT_STOPPED, job.tail()
    assert scontrol_log.read_text().splitlines() == ['show job 4242', 'requeue 4242']
    _stopped_at(work, 6)

    # the requeued job: the same command, SLURM_RESTART_COUNT set by slurm, no --resume
    requeued = Job(command, dict(env, SLURM_RESTART_COUNT='1'), tmp_path / 'requeued.txt')
    _done(requeued)
    assert 'SLURM_RESTART_COUNT=1: this job was restarted; it continues from ' \
        f'{work / "iter_6.pth"}' in requeued.text()
    _matches_reference(work, seg_reference)
    assert not (work / 'iter_6.pth').exists()  # replaced by iter_8
    assert scontrol_log.read_text().splitlines() == ['show job 4242', 'requeue 4242']


def test_sigusr1_to_one_torchrun_worker_stops_every_rank_at_that_iteration(seg_setup, tmp_path):
    config, env, _ = seg_setup
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
    config, env, _ = seg_setup
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
    config, env, _ = seg_setup
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
