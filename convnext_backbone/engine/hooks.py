"""Hooks, registered in ``convnext_backbone``'s child of mmengine's ``HOOKS``."""
import math
import os.path as osp
from collections import OrderedDict
from typing import Any, Dict, Optional, Union

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.optim import AmpOptimWrapper
from mmengine.runner import EpochBasedTrainLoop, Runner

from .. import tuning
from ..errors import UserError
from ..registry import HOOKS


class NonFiniteLossError(UserError, RuntimeError):
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


@HOOKS.register_module()
class FastPathsHook(Hook):
    """Write the run's fast-path decisions to ``fast_paths.json`` in the work dir.

    Every decision is logged in one line when it is made (``convnext_backbone.tuning``); this
    hook also saves them (rank 0, after each epoch and at the end, whenever there are new ones),
    so that ``CONVNEXT_FAST_PATHS=<work_dir>/fast_paths.json`` repeats the run with the same
    kernels.

    Args:
        filename (str): File name in the work dir. Defaults to 'fast_paths.json'.
    """

    priority = 'LOWEST'

    def __init__(self, filename: str = 'fast_paths.json') -> None:
        self.filename = filename
        self._saved: Optional[int] = None  # tuning.version() of what the file holds

    def _save(self, runner: Runner) -> None:
        # by version, not by count: a re-probe replaces a kernel and leaves the count as it was
        current = tuning.version()
        if not is_main_process() or current == self._saved or not tuning.decisions():
            return
        path = osp.join(runner.work_dir, self.filename)
        tuning.save(path)
        if self._saved is None:
            runner.logger.info(f'fast-path decisions saved to {path} (repeat these kernels with '
                               f'CONVNEXT_FAST_PATHS={path})')
        self._saved = current

    def after_train_epoch(self, runner: Runner) -> None:
        """Save new decisions."""
        self._save(runner)

    def after_val_epoch(self, runner: Runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Save new decisions."""
        self._save(runner)

    def after_test_epoch(self, runner: Runner, metrics: Optional[Dict[str, float]] = None) -> None:
        """Save new decisions."""
        self._save(runner)

    def after_run(self, runner: Runner) -> None:
        """Save new decisions."""
        self._save(runner)
