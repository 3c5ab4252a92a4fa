"""Training loops, registered in ``convnext_backbone``'s child of mmengine's ``LOOPS``.

Chosen in a config by ``train_cfg.type``, e.g.
``train_cfg = dict(type='convnext_backbone.ResumableEpochBasedTrainLoop', max_epochs=36)``
(our COCO recipe base does so).
"""
import logging

from mmengine.logging import print_log
from mmengine.runner import EpochBasedTrainLoop

from ..registry import LOOPS


@LOOPS.register_module()
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
