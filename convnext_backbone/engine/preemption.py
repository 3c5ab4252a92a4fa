"""Stopping at a checkpoint when the cluster says so, and continuing when the job comes back.

Schedulers announce the end of a job with a signal and kill it a grace period later: slurm sends
SIGTERM on preemption and at the time limit, or the signal of ``sbatch --signal`` (often SIGUSR1)
ahead of the limit; ``torchrun`` passes SIGTERM on to its workers. mmengine installs no handler,
so the process dies and the work since the last checkpoint is lost.

- :class:`StopOnSignalHook` (registered by ``ResumableRunner``) turns SIGTERM and SIGUSR1 into a
  stop at the next iteration boundary: every rank finishes the current iteration, the ranks agree
  (one all-reduce of a flag per iteration) that one of them got a signal, rank 0 writes a
  checkpoint of that exact position through the runner's atomic save, every rank waits for it,
  and training ends with :class:`TrainingStopped`, which ``tools/train.py`` turns into exit status
  :data:`convnext_backbone.cli.EXIT_STOPPED`.
- :func:`resume_after_restart` tells a restarted job (slurm requeue, torchrun restart,
  :func:`restarted_by`) from a first start; ``tools/train.py`` resumes the former from the work
  dir's last complete checkpoint.
"""
import logging
import os
import signal
import threading
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import torch
from mmengine.dist import all_reduce, barrier, is_distributed, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop, Runner

from ..registry import HOOKS
from .checkpoint_files import find_resumable_checkpoint
from .loops import ResumableEpochBasedTrainLoop

#: Signals that stop training at a checkpoint by default.
STOP_SIGNALS = ('SIGTERM', 'SIGUSR1')
#: Environment variable naming a file that a run stopped by a signal writes one line into, from
#: local rank 0 once the checkpoint is complete: ``tools/dist_launch.sh`` and
#: ``tools/slurm_train.sh`` read it, because torchrun does not pass on its workers' exit status
#: and srun may report a task it killed after another one exited.
STOP_REPORT_ENV = 'CONVNEXT_STOP_REPORT'
#: Variables set in a restarted job: by slurm on a requeue (``sbatch(1)``, OUTPUT ENVIRONMENT
#: VARIABLES) and by torchrun on a worker-group restart (``torch/distributed/run.py``).
RESTART_COUNTS = ('SLURM_RESTART_COUNT', 'TORCHELASTIC_RESTART_COUNT')
_UNCATCHABLE = ('SIGKILL', 'SIGSTOP')


class TrainingStopped(Exception):
    """Training stopped after an iteration because of a signal, with a checkpoint of it.

    Args:
        signame (str): The signal, e.g. 'SIGTERM'.
        iteration (int): Iterations trained (the checkpoint's ``meta['iter']``).
        checkpoint (str): The checkpoint written (or just written by ``CheckpointHook``).
    """

    def __init__(self, signame: str, iteration: int, checkpoint: str) -> None:
        self.signame, self.iteration, self.checkpoint = signame, iteration, checkpoint
        super().__init__(f'{signame}: training stopped after iteration {iteration}; checkpoint '
                         f'{checkpoint}; run the same command with --resume to continue')


@HOOKS.register_module()
class StopOnSignalHook(Hook):
    """Stop training at a checkpoint of the current iteration on SIGTERM or SIGUSR1.

    The handlers only record the signal (nothing else runs inside a signal handler). After each
    training iteration, once the other hooks (logging, lr steps, interval checkpoint) are done,
    the ranks take the maximum of their flags (one all-reduce of one integer), so a signal that
    reached any rank stops every rank at the same iteration. Then rank 0 writes ``iter_<N>.pth``
    into the ``CheckpointHook``'s folder (unless that hook just wrote it) with the model,
    optimizer (and AMP loss scaler), schedulers and message hub; ``meta`` holds the epoch and
    iteration, from which :class:`~.loops.ResumableEpochBasedTrainLoop` finds the batch inside
    the epoch and replays the seeded sampler order up to it. ``last_checkpoint`` is updated,
    every rank waits for the file, and :class:`TrainingStopped` is raised. Once a later interval
    checkpoint is complete, the stop checkpoint is deleted (it is not one of
    ``CheckpointHook``'s, so ``max_keep_ckpts`` would never remove it).

    Registered by ``ResumableRunner`` unless the config lists one; ``signals=()`` turns it off.
    Data-loader workers forked after ``before_train`` inherit the handlers, so a signal sent to
    the whole process group (as slurm does) does not kill them.

    Args:
        signals (Sequence[str]): Names of the signals that stop training. Defaults to
            :data:`STOP_SIGNALS`.

    Note:
        mmengine leaves SIGTERM at its default action (the process dies, and the work since the
        last checkpoint is lost); this hook makes it a stop after the current iteration. A second
        signal is the same request (through a launcher the same signal can arrive twice), so a
        hung process needs SIGKILL.
    """

    priority = 'LOWEST'  # after LoggerHook, ParamSchedulerHook and CheckpointHook (VERY_LOW)

    def __init__(self, signals: Sequence[str] = STOP_SIGNALS) -> None:
        if isinstance(signals, str):
            signals = (signals,)
        for name in signals:
            if name in _UNCATCHABLE or not isinstance(getattr(signal, str(name), None),
                                                      signal.Signals):
                raise ValueError(f'signals={list(signals)!r}: {name!r} is not a signal that can '
                                 "be caught; use names such as 'SIGTERM', 'SIGUSR1'")
        self.signals = tuple(signals)
        self._received = 0
        self._previous: Dict[int, Any] = {}

    @property
    def requested(self) -> Optional[str]:
        """str | None: The signal received by this process and not acted on yet."""
        return signal.Signals(self._received).name if self._received else None

    def _record(self, signum: int, frame: Any) -> None:
        if not self._received:
            self._received = signum

    def before_train(self, runner: Runner) -> None:
        """Install the handlers (main thread only) and clear a stale stop report."""
        self._received = 0
        _write_report('')
        if not self.signals:
            return
        if threading.current_thread() is not threading.main_thread():
            runner.logger.warning('Training runs outside the main thread, where Python cannot '
                                  f'install signal handlers: {", ".join(self.signals)} will kill '
                                  'the process instead of stopping it at a checkpoint')
            return
        for name in self.signals:
            signum = getattr(signal, name)
            self._previous.setdefault(signum, signal.signal(signum, self._record))

    def after_train(self, runner: Runner) -> None:
        """Put back the handlers found in ``before_train``."""
        self.restore_handlers()

    def restore_handlers(self) -> None:
        """Put back the handlers found in ``before_train`` (idempotent)."""
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def after_train_iter(self, runner: Runner, batch_idx: int,
                         data_batch: Union[dict, tuple, list, None] = None,
                         outputs: Optional[dict] = None) -> None:
        """Stop every rank here if any rank got a signal; else drop an obsolete stop checkpoint.

        Raises:
            TrainingStopped: A signal was received; the checkpoint is written.
        """
        if not self.signals:
            return
        signum = self._received
        if is_distributed():
            flag = torch.tensor([signum], dtype=torch.int64)
            all_reduce(flag, op='max')
            signum = int(flag.item())
        if signum:
            self._stop(runner, signal.Signals(signum).name, batch_idx)
        self._drop_obsolete_stop_checkpoint(runner)

    def after_train_epoch(self, runner: Runner) -> None:
        """Drop the stop checkpoint once an epoch checkpoint replaced it."""
        self._drop_obsolete_stop_checkpoint(runner)

    def _stop(self, runner: Runner, signame: str, batch_idx: int) -> None:
        iteration = runner.iter + 1
        where = f'iteration {iteration}'
        loop = runner.train_loop
        if isinstance(loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1}, batch {batch_idx + 1})'
            if not isinstance(loop, ResumableEpochBasedTrainLoop):
                runner.logger.warning(
                    f'{type(loop).__name__} trains an interrupted epoch again from its first '
                    "batch: set train_cfg.type='convnext_backbone.ResumableEpochBasedTrainLoop' "
                    'to resume at the batch where this run stops')
        runner.logger.warning(f'{signame} received: stopping all ranks after {where}')
        path = self._save(runner)
        barrier()  # no rank exits before rank 0's file is complete
        stopped = TrainingStopped(signame, iteration, path)
        _write_report(str(stopped))  # before a launcher's SIGTERM can end this process
        self.restore_handlers()
        runner.logger.warning(str(stopped))
        raise stopped

    def _save(self, runner: Runner) -> str:
        hook = _checkpoint_hook(runner)
        out_dir = hook.out_dir if hook is not None else runner.work_dir
        filename = f'iter_{runner.iter + 1}.pth'
        if hook is not None:
            path = hook.file_backend.join_path(out_dir, filename)
        else:
            path = os.path.join(out_dir, filename)
        if runner.message_hub.get_info('last_ckpt') == path:
            return path  # CheckpointHook saved this very iteration
        runner.message_hub.update_info('last_ckpt', path)
        runner.message_hub.update_info('stop_ckpt', path)
        backend_args = hook.backend_args if hook is not None else None
        runner.save_checkpoint(out_dir, filename, save_optimizer=True,
                               save_param_scheduler=True, by_epoch=False,
                               backend_args=backend_args)
        if is_main_process():
            with open(os.path.join(runner.work_dir, 'last_checkpoint'), 'w') as f:
                f.write(path)
        return path

    def _drop_obsolete_stop_checkpoint(self, runner: Runner) -> None:
        stop = runner.message_hub.get_info('stop_ckpt')
        last = runner.message_hub.get_info('last_ckpt')
        if not stop or not last or last == stop:
            return
        runner.message_hub.update_info('stop_ckpt', None)
        hook = _checkpoint_hook(runner)
        if is_main_process() and hook is not None and hook.file_backend.isfile(stop):
            hook.file_backend.remove(stop)
            runner.logger.info(f'Removed {stop} (written on a stop signal), replaced by {last}')


def _checkpoint_hook(runner: Runner) -> Optional[CheckpointHook]:
    """The runner's ``CheckpointHook``, or None."""
    return next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)


def _write_report(text: str) -> None:
    """Local rank 0 writes ``text`` into the file named by :data:`STOP_REPORT_ENV`, if any."""
    report = os.environ.get(STOP_REPORT_ENV)
    if report and os.environ.get('LOCAL_RANK', '0') == '0':
        with open(report, 'w', encoding='utf-8') as f:
            f.write(text)


def restarted_by(environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why this process belongs to a restarted job, e.g. 'SLURM_RESTART_COUNT=1', else None.

    Args:
        environ (Mapping[str, str], optional): The environment. Defaults to ``os.environ``.

    Returns:
        str | None: The first of :data:`RESTART_COUNTS` set to an integer > 0, as NAME=VALUE.
    """
    environ = os.environ if environ is None else environ
    for name in RESTART_COUNTS:
        value = environ.get(name, '').strip()
        if value.isdigit() and int(value) > 0:
            return f'{name}={value}'
    return None


def resume_after_restart(work_dir: str,
                         environ: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The checkpoint a restarted job continues from, or None (a first start, or nothing saved).

    A requeued or restarted job runs its first command line again; when the work dir holds a
    complete checkpoint, that is where it continues, whatever ``--resume CKPT`` or ``load_from``
    said for the first start.

    Args:
        work_dir (str): The run's work dir.
        environ (Mapping[str, str], optional): The environment. Defaults to ``os.environ``.

    Returns:
        str | None: What :func:`find_resumable_checkpoint` picks in a restarted job.
    """
    why = restarted_by(environ)
    if why is None:
        return None
    found = find_resumable_checkpoint(work_dir)
    print_log(f'{why}: this job was restarted; '
              + (f'it continues from {found}' if found else
                 f'no checkpoint in {work_dir} yet, so it starts as the first attempt did'),
              logger='current', level=logging.WARNING)
    return found
