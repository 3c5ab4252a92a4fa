"""A Runner that survives interruption, and a hook that stops training on a non-finite loss.

``SafeRunner`` is mmengine's ``Runner`` with four changes, all made by overriding its public
methods (no patching of mmengine):

1. **Resume under torch >= 2.6.** ``torch.load`` defaults to ``weights_only=True`` there, and
   mmengine 0.10.7 checkpoints hold a few non-tensor objects (the message hub's ``HistoryBuffer``,
   numpy arrays and scalars, the ``Counter`` of ``MultiStepLR`` milestones). Loading runs inside
   :func:`checkpoint_safe_globals`, which admits exactly those types for the duration of the load.
   ``HistoryBuffer`` pickles its statistics methods as ``getattr(HistoryBuffer, 'min')``: instead of
   allowing ``getattr`` (which would allow arbitrary code), the name ``builtins.getattr`` is mapped
   to :func:`_history_buffer_statistic`, which returns only those four methods.
2. **Atomic checkpoints.** A checkpoint is written to ``.NAME.partial`` in the same folder, flushed
   to disk (fsync) and renamed over ``NAME`` with ``os.replace``. A crash while saving leaves the
   previous checkpoint intact and never a partial file under a checkpoint name; ``last_checkpoint``
   (written by mmengine's ``CheckpointHook`` only after the save returns) never names a partial
   file.
3. **Robust ``--resume``.** When resuming without a path, the checkpoint named in
   ``last_checkpoint`` is used if it exists and is complete; otherwise the newest complete
   ``epoch_*.pth`` / ``iter_*.pth`` in the work dir, with a warning.
4. **Mid-epoch resume of epoch-based training.** mmengine's ``EpochBasedTrainLoop`` restarts an
   interrupted epoch from its first batch, so resuming from an iteration checkpoint trains more
   iterations than an uninterrupted run. ``SafeRunner`` builds :class:`ResumableEpochBasedTrainLoop`
   instead, which skips the batches of the current epoch that were trained before the checkpoint.
   The sampler's order depends on the seed and epoch only, so the run continues where it stopped.

``SafeRunner`` also registers :class:`FiniteLossHook` unless the config already has one, and
checks each dataset with :func:`convnext_backbone.datasets_check.check_datasets` just before its
loop is built (so a missing folder or a broken annotation file is one ``DatasetError`` line
instead of a traceback from a data worker).

Use it with ``runner_type = 'convnext_backbone.SafeRunner'`` in a config (``tools/train.py`` sets it
by default).
"""
import contextlib
import logging
import math
import os
import re
import zipfile
from collections import Counter, OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.dist import master_only
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer, print_log
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import DefaultScope
from mmengine.runner import EpochBasedTrainLoop, Runner

from .checkpoint import CheckpointError, _safe_globals
from .datasets_check import check_datasets
from .registry import HOOKS, RUNNERS

PARTIAL_SUFFIX = '.partial'
_CKPT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')
_HISTORY_BUFFER_STATISTICS = ('min', 'max', 'mean', 'current')


# -- weights_only loading of mmengine checkpoints -------------------------------------------------
def _history_buffer_statistic(obj: Any, name: str) -> Any:
    """What ``builtins.getattr`` means while unpickling a checkpoint: only
    ``getattr(HistoryBuffer, 'min' | 'max' | 'mean' | 'current')``, as pickled by
    ``HistoryBuffer.__getstate__``.

    Raises:
        pickle.UnpicklingError: For any other object or name.
    """
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_STATISTICS:
        return getattr(HistoryBuffer, name)
    import pickle
    raise pickle.UnpicklingError(
        f'refusing getattr({getattr(obj, "__name__", type(obj).__name__)}, {name!r}) while '
        'loading a checkpoint: only the statistics methods of mmengine\'s HistoryBuffer are '
        'allowed')


def resume_safe_globals() -> List[Any]:
    """The globals admitted by :func:`checkpoint_safe_globals`.

    Returns:
        list: ``convnext_backbone.checkpoint._safe_globals()`` plus ``collections.Counter``
        (``MultiStepLR`` milestones), numpy's dtype classes and the restricted ``getattr``
        stand-in for ``HistoryBuffer``.
    """
    found: List[Any] = list(_safe_globals())
    found.append(Counter)
    names = ('bool', 'int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'uint64',
             'float16', 'float32', 'float64', 'str', 'bytes')
    found += [type(np.dtype(name)) for name in names]
    found.append((_history_buffer_statistic, 'builtins.getattr'))
    unique: List[Any] = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


@contextlib.contextmanager
def checkpoint_safe_globals() -> Iterator[None]:
    """Context in which ``torch.load(..., weights_only=True)`` reads mmengine 0.10 checkpoints.

    Only the globals of :func:`resume_safe_globals` are added, and only those not already allowed
    (so leaving the context never removes a global the user had added with
    ``torch.serialization.add_safe_globals``).

    Example:
        >>> with checkpoint_safe_globals():
        ...     ckpt = torch.load('work_dirs/x/iter_100.pth', map_location='cpu')
    """
    present = set(map(_global_key, torch.serialization.get_safe_globals()))
    new = [g for g in resume_safe_globals() if _global_key(g) not in present]
    with torch.serialization.safe_globals(new):
        yield


def _global_key(item: Any) -> Any:
    return item[1] if isinstance(item, tuple) else item


def explain_load_error(path: str, err: BaseException) -> Optional[CheckpointError]:
    """Turn a failure of ``torch.load`` on a checkpoint file into a one-line ``CheckpointError``.

    Args:
        path (str): The checkpoint.
        err (BaseException): What loading raised.

    Returns:
        CheckpointError | None: The explanation, or None when ``err`` is not a reading error
        (then re-raise ``err``).
    """
    text = str(err)
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    if isinstance(err, FileNotFoundError) or (not os.path.exists(path) and '://' not in path):
        return CheckpointError(f'checkpoint not found: {path}')
    unsafe = re.search(r'Unsupported global: GLOBAL (\S+)', text)
    if unsafe:
        return CheckpointError(
            f'checkpoint {path} holds a Python object of type {unsafe.group(1)}, which torch\'s '
            'weights_only loading refuses (it could run code). If you trust the file, allow that '
            'type with torch.serialization.add_safe_globals([...]) in a module listed in the '
            "config's custom_imports")
    from urllib.error import URLError
    if isinstance(err, URLError):
        return CheckpointError(f'cannot download checkpoint {path}: {err.reason}; download it '
                               'where there is a connection and give the local file instead')
    import pickle
    reading = (pickle.UnpicklingError, EOFError, zipfile.BadZipFile)
    if isinstance(err, reading) or 'PytorchStreamReader' in text or 'zip archive' in text:
        size = os.path.getsize(path) if os.path.isfile(path) else 0
        return CheckpointError(
            f'cannot read checkpoint {path} ({size} bytes): the file is truncated, corrupt or '
            f'not a PyTorch checkpoint ({type(err).__name__}: {first})')
    return None


# -- finding a checkpoint to resume from ----------------------------------------------------------
def is_complete_checkpoint(path: str) -> bool:
    """Cheap check that ``path`` is a whole checkpoint file (not a cut-off write).

    ``torch.save`` writes a zip archive whose directory is at its end, so a cut-off file fails
    ``zipfile.is_zipfile``. Files of the legacy (pre-zip) format are accepted when non-empty.

    Args:
        path (str): A file path.

    Returns:
        bool: Whether the file exists and looks whole.
    """
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return False
    with open(path, 'rb') as f:
        magic = f.read(4)
    if magic.startswith(b'PK'):
        return zipfile.is_zipfile(path)
    return True


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` (without a path) should continue from.

    The file named in ``WORK_DIR/last_checkpoint`` when it is complete; otherwise (the pointer is
    missing, empty or names a missing or cut-off file) the newest complete ``epoch_N.pth`` or
    ``iter_N.pth`` in the checkpoint's folder or the work dir.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str | None: A checkpoint path, or None when there is nothing to resume from.
    """
    pointer = os.path.join(work_dir, 'last_checkpoint')
    named = ''
    if os.path.isfile(pointer):
        with open(pointer, encoding='utf-8') as f:
            named = f.read().strip()
    if named and is_complete_checkpoint(named):
        return named
    folders = [work_dir]
    if named and os.path.dirname(named) not in folders:
        folders.insert(0, os.path.dirname(named))
    candidates = []
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = _CKPT_NAME.match(name)
            path = os.path.join(folder, name)
            if match and is_complete_checkpoint(path):
                candidates.append((os.path.getmtime(path), int(match.group(2)), path))
    if not candidates:
        if named:
            print_log(f'last_checkpoint names {named}, which is missing or incomplete, and no '
                      f'other complete checkpoint is in {work_dir}', logger='current',
                      level=logging.WARNING)
        return None
    found = max(candidates)[2]
    why = (f'last_checkpoint names {named}, which is missing or incomplete' if named
           else f'{pointer} is missing or empty')
    print_log(f'{why}; resuming from the newest complete checkpoint {found}', logger='current',
              level=logging.WARNING)
    return found


# -- the loop --------------------------------------------------------------------------------------
class ResumableEpochBasedTrainLoop(EpochBasedTrainLoop):
    """``EpochBasedTrainLoop`` that resumes an interrupted epoch where it stopped.

    After resuming from a checkpoint saved at iteration ``i`` of epoch ``e`` (an iteration-interval
    checkpoint), the first ``i - e * len(dataloader)`` batches of that epoch are drawn and skipped
    instead of trained again, so the run trains exactly the iterations an uninterrupted one would.
    A checkpoint of the epoch's last iteration (saved before the end-of-epoch hooks) resumes by
    running only those hooks (by-epoch lr steps, epoch checkpoint), then validation.
    The arguments are those of ``EpochBasedTrainLoop``.

    Note:
        mmengine's loop trains the interrupted epoch again from its first batch (while keeping the
        resumed iteration count), so it ends with more iterations than an uninterrupted run and its
        per-iteration schedules shift. Skipped batches are still loaded (as mmengine's
        ``IterBasedTrainLoop`` does on resume), which costs data-loading time only.
    """

    def run_epoch(self) -> None:
        """Train one epoch, skipping the batches already trained before a mid-epoch resume."""
        per_epoch = len(self.dataloader)
        done = self._iter - self._epoch * per_epoch
        if done == 0:
            super().run_epoch()
            return
        if not 0 < done <= per_epoch:
            print_log(f'The resumed iteration {self._iter} does not fall in epoch '
                      f'{self._epoch + 1} at {per_epoch} iterations per epoch (did the dataset '
                      'or batch size change?): training the whole epoch', logger='current',
                      level=logging.WARNING)
            super().run_epoch()
            return
        print_log(f'Resuming inside epoch {self._epoch + 1}: {done} of its {per_epoch} batches '
                  'were trained before the checkpoint and are skipped', logger='current')
        self.runner.call_hook('before_train_epoch')
        self.runner.model.train()
        if done < per_epoch:  # done == per_epoch: only the end-of-epoch hooks are left to run
            for idx, data_batch in enumerate(self.dataloader):
                if idx >= done:
                    self.run_iter(idx, data_batch)
        self.runner.call_hook('after_train_epoch')
        self._epoch += 1


# -- the hook --------------------------------------------------------------------------------------
class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became NaN or infinite."""


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training when the loss is NaN or infinite, naming the iteration and the loss terms.

    What "non-finite loss" means: the loss values the model returns for an iteration (the total
    ``loss`` and every logged term whose name contains ``loss``), computed in the forward pass
    before any loss scaling, are not all finite.

    - Without mixed precision (``OptimWrapper``) the optimizer step has already applied NaN/inf
      gradients, so training stops at the first such iteration (``patience=0``).
    - With mixed precision (``AmpOptimWrapper``) the dynamic loss scaler skips the step of an
      iteration whose gradients are not finite, so the weights stay intact; an fp16 overflow in
      one batch is tolerated and training stops only after ``amp_patience`` consecutive
      iterations with a non-finite loss. Gradient overflows with a finite loss (the scaler's
      normal business) never stop training.

    Either way the error is raised before checkpoint hooks run for that iteration, so no
    checkpoint of a NaN model is written.

    Args:
        patience (int): Consecutive non-finite iterations tolerated without mixed precision.
            Defaults to 0.
        amp_patience (int): Consecutive non-finite iterations tolerated with ``AmpOptimWrapper``.
            Defaults to 10.

    Raises:
        NonFiniteLossError: From ``after_train_iter`` when the tolerance is exceeded.
    """

    priority = 'VERY_HIGH'  # before CheckpointHook (VERY_LOW) and LoggerHook (BELOW_NORMAL)

    def __init__(self, patience: int = 0, amp_patience: int = 10) -> None:
        for name, value in (('patience', patience), ('amp_patience', amp_patience)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f'{name}={value!r} must be an int >= 0')
        self.patience = patience
        self.amp_patience = amp_patience
        self._bad_run = 0

    def before_train(self, runner: Runner) -> None:
        """Reset the count of consecutive non-finite iterations."""
        self._bad_run = 0

    def after_train_iter(self, runner: Runner, batch_idx: int,
                         data_batch: Union[dict, tuple, list, None] = None,
                         outputs: Optional[Dict[str, Any]] = None) -> None:
        """Check the iteration's losses; raise after too many non-finite ones in a row."""
        losses = _loss_values(outputs or {})
        bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
        if not bad:
            self._bad_run = 0
            return
        self._bad_run += 1
        amp = isinstance(runner.optim_wrapper, AmpOptimWrapper)
        allowed = self.amp_patience if amp else self.patience
        terms = ', '.join(f'{name}={value:.4g}' for name, value in losses.items())
        where = f'iteration {runner.iter + 1}'
        if isinstance(runner.train_loop, EpochBasedTrainLoop):
            where += f' (epoch {runner.epoch + 1}, batch {batch_idx + 1})'
        if self._bad_run <= allowed:
            runner.logger.warning(
                f'Non-finite loss at {where}: {terms}. '
                + ('The loss scaler skips this step. ' if amp else '')
                + f'Tolerated {self._bad_run} of {allowed} in a row.')
            return
        last = runner.message_hub.get_info('last_ckpt')
        advice = ('lower the lr or lengthen the warm-up, add gradient clipping '
                  '(optim_wrapper.clip_grad=dict(max_norm=...)), or train in fp32 '
                  '(the official L/XL recipes do)')
        message = (f'Non-finite loss at {where}: {terms}'
                   + (f' ({self._bad_run} iterations in a row)' if self._bad_run > 1 else '')
                   + f'. Training stopped before saving this model. Try: {advice}.'
                   + (f' Last checkpoint: {last}' if last else ''))
        runner.logger.error(message)
        raise NonFiniteLossError(message)


def _loss_values(outputs: Dict[str, Any]) -> Dict[str, float]:
    values: Dict[str, float] = OrderedDict()
    for name, value in outputs.items():
        if 'loss' not in name:
            continue
        if isinstance(value, torch.Tensor):
            value = value.detach().float().mean().item() if value.numel() else 0.
        if isinstance(value, (int, float, np.floating, np.integer)):
            values[name] = float(value)
    return values


# -- the runner ------------------------------------------------------------------------------------
@RUNNERS.register_module()
class SafeRunner(Runner):
    """mmengine ``Runner`` with atomic checkpoints, weights_only-safe resume, exact mid-epoch
    resume and a non-finite-loss stop. Takes exactly ``Runner``'s arguments.

    See the module docstring for what changes and why.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not any(isinstance(hook, FiniteLossHook) for hook in self.hooks):
            self.register_hook(FiniteLossHook())
        for hook in self.hooks:
            if (type(hook).__name__ == 'CheckpointHook'
                    and getattr(hook, 'max_keep_ckpts', 0) == 1 and self._saves_twice(hook)):
                self.logger.warning(
                    'CheckpointHook max_keep_ckpts=1 deletes the previous checkpoint before '
                    'writing the next one, so a crash while saving leaves nothing to resume '
                    'from: use max_keep_ckpts >= 2')

    def _saves_twice(self, hook: Hook) -> bool:
        loop = self._train_loop if isinstance(self._train_loop, dict) else {}
        total = loop.get('max_epochs' if hook.by_epoch else 'max_iters')
        return not isinstance(total, int) or hook.interval < total

    # -- loops ---------------------------------------------------------------------------------
    def _check_data(self, split: str, loader: Any) -> None:
        if not isinstance(loader, dict) or not isinstance(loader.get('dataset'), dict):
            return  # already built, or built by the user
        scope = self.cfg.get('default_scope') if self.cfg else None
        if scope is None:
            scope = getattr(DefaultScope.get_current_instance(), 'scope_name', None)
        model = self.cfg.get('model') if self.cfg else None
        check_datasets({'default_scope': scope, 'model': model or {}, split: loader}, (split,))

    def build_train_loop(self, loop: Any) -> Any:
        """Build the train loop after checking its dataset (:func:`check_datasets`);
        mmengine's ``EpochBasedTrainLoop`` becomes :class:`ResumableEpochBasedTrainLoop` (same
        arguments). Other loops are unchanged.

        Raises:
            DatasetError: The training data is missing, empty or malformed.
        """
        self._check_data('train_dataloader', self._train_dataloader)
        if isinstance(loop, dict):
            cfg = dict(loop)
            loop_type = cfg.get('type')
            epoch_based = (loop_type in ('EpochBasedTrainLoop', 'mmengine.EpochBasedTrainLoop',
                                         EpochBasedTrainLoop)
                           or (loop_type is None and cfg.get('by_epoch') is True))
            if epoch_based:
                for key in ('type', 'by_epoch', '_scope_'):  # _scope_: set by mmdet:: bases
                    cfg.pop(key, None)
                return ResumableEpochBasedTrainLoop(**cfg, runner=self,
                                                    dataloader=self._train_dataloader)
        return super().build_train_loop(loop)

    def build_val_loop(self, loop: Any) -> Any:
        """``Runner.build_val_loop`` after checking the validation dataset."""
        self._check_data('val_dataloader', self._val_dataloader)
        return super().build_val_loop(loop)

    def build_test_loop(self, loop: Any) -> Any:
        """``Runner.build_test_loop`` after checking the test dataset."""
        self._check_data('test_dataloader', self._test_dataloader)
        return super().build_test_loop(loop)

    # -- loading -------------------------------------------------------------------------------
    def load_checkpoint(self, filename: str, map_location: Union[str, Any] = 'cpu',
                        strict: bool = False,
                        revise_keys: Optional[Sequence[tuple]] = None) -> dict:
        """``Runner.load_checkpoint`` with weights_only loading of mmengine checkpoints
        (:func:`checkpoint_safe_globals`) and one-line errors for unreadable files.

        Args:
            filename (str): Checkpoint path or URL.
            map_location (str | callable): As for ``torch.load``. Defaults to 'cpu'.
            strict (bool): Strict model loading. Defaults to False (mmengine's default).
            revise_keys (Sequence[tuple], optional): (pattern, replacement) pairs applied to
                the keys. Defaults to stripping ``module.``.

        Returns:
            dict: The loaded checkpoint.

        Raises:
            CheckpointError: The file is missing, truncated/corrupt or holds disallowed objects.
        """
        keys = [(r'^module.', '')] if revise_keys is None else list(revise_keys)
        try:
            with checkpoint_safe_globals():
                return super().load_checkpoint(filename, map_location=map_location,
                                               strict=strict, revise_keys=keys)
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - reading errors become one clear line
            clear = explain_load_error(filename, err)
            if clear is None:
                raise
            raise clear from None

    def load_or_resume(self) -> None:
        """``Runner.load_or_resume``; ``resume=True`` without ``load_from`` picks the checkpoint
        with :func:`find_resumable_checkpoint` (skipping a missing or cut-off one)."""
        if not self._has_loaded and self._resume and self._load_from is None:
            found = find_resumable_checkpoint(self.work_dir)
            if found is None:
                self.logger.warning(f'--resume: no checkpoint in {self.work_dir}, so training '
                                    'starts from the beginning')
                self._resume = False
            else:
                self._load_from = found
                self.logger.info(f'Resuming from {found}')
        super().load_or_resume()

    # -- saving --------------------------------------------------------------------------------
    @master_only
    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args: Optional[dict] = None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, backend_args: Optional[dict] = None) -> None:
        """``Runner.save_checkpoint``, written atomically on local disks.

        The checkpoint goes to ``.FILENAME.partial`` beside the target, is fsynced and renamed
        over the target with ``os.replace`` (atomic on POSIX and Windows), then the folder is
        fsynced. Remote back ends (``backend_args``, ``file_client_args`` or a ``scheme://``
        out_dir) are written as mmengine does. Arguments are those of ``Runner.save_checkpoint``.
        """
        remote = file_client_args is not None or backend_args is not None or '://' in out_dir
        if remote:
            super().save_checkpoint(out_dir, filename, file_client_args, save_optimizer,
                                    save_param_scheduler, meta, by_epoch, backend_args)
            return
        target = os.path.join(out_dir, filename)
        folder, name = os.path.split(target)
        partial_name = f'.{name}{PARTIAL_SUFFIX}'
        partial = os.path.join(folder, partial_name)
        try:
            super().save_checkpoint(folder, partial_name, None, save_optimizer,
                                    save_param_scheduler, meta, by_epoch, None)
            _fsync(partial)
            os.replace(partial, target)
            _fsync_dir(folder)
        finally:
            if os.path.exists(partial):
                os.remove(partial)


def _fsync(path: str) -> None:
    with open(path, 'rb') as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: str) -> None:
    if os.name != 'posix':  # directories cannot be opened for fsync on Windows
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some network file systems refuse fsync on folders: the rename stands
        pass
    finally:
        os.close(fd)
