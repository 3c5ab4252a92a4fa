"""``ResumableRunner``: mmengine's Runner for runs that must survive interruption and bad input.

It is mmengine's ``Runner`` with these changes, all made by overriding its public methods (no
patching of mmengine):

1. **Checkpoints are read by** :mod:`convnext_backbone.checkpoint` (``load_from``, resume, and
   ``load_checkpoint`` itself): torch's ``weights_only`` unpickling with a short allowlist, so
   mmengine's own checkpoints load under torch >= 2.6 and nothing else is unpickled; unreadable
   files are one-line ``CheckpointError``\\ s; ``strict=True`` loads go through the one strict
   fit check. ``load_from`` and resume load what fits, as mmengine does, with one summary line
   per load instead of mmengine's key lists, and refuse a file of which nothing fits (a
   backbone-only file gets the ``init_cfg`` to write instead) or whose backbone is in another
   ConvNeXt layout (:func:`~convnext_backbone.checkpoint.load.load_matching`).
2. **Checkpoints are written atomically** (:func:`.checkpoint_files.atomic_target`): a crash
   while saving leaves the previous checkpoint intact and no partial file under a checkpoint
   name; ``last_checkpoint`` (written by mmengine's ``CheckpointHook`` after the save returns)
   never names a partial file.
3. **``resume=True`` without a file** continues from the checkpoint named in ``last_checkpoint``
   if it is complete, otherwise the newest complete one (:func:`.find_resumable_checkpoint`).
4. **Datasets are checked** (:mod:`.preflight`) once, on rank 0: when ``train()``, ``val()``
   or ``test()`` starts, the files and folders of every dataloader and evaluator it will use,
   all problems in one ``DatasetError`` line; around each dataloader's construction, parse
   errors of the annotation file named, and what the built dataset parsed (classes, category
   ids, every image file, label values) after it.
5. **Non-finite losses stop training** (:class:`.FiniteLossHook`, registered unless the config
   has one); the fast-path decisions of the run are saved (:class:`.FastPathsHook`, likewise).
6. **SIGTERM and SIGUSR1 stop training at a checkpoint of the current iteration** on every rank
   (:class:`.StopOnSignalHook`, registered unless the config has one; :mod:`.preemption`).
7. **Distributed runs without CUDA** start a gloo process group and wrap the model in
   :class:`.CPUDistributedDataParallel` (:mod:`.dist` says why mmengine cannot).
8. **A model that cannot be built** is a one-line :class:`ModelBuildError` (``CONVNEXT_DEBUG=1``
   for the traceback).

Exact mid-epoch resume is the train loop's job: ``train_cfg.type =
'convnext_backbone.ResumableEpochBasedTrainLoop'`` (our recipe bases set it).

Select it with ``runner_type = 'convnext_backbone.ResumableRunner'``; our tools use it for every
config that names no ``runner_type``.
"""
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.dist import broadcast_object_list, master_only
from mmengine.hooks import CheckpointHook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import Runner
from mmengine.runner.checkpoint import _load_checkpoint_to_model

from ..checkpoint import CheckpointError, check_fit, read_checkpoint, unwrap_state_dict
from ..checkpoint.load import load_matching
from ..errors import UserError, debug_enabled
from ..registry import RUNNERS, SCOPE
from . import preflight
from .checkpoint_files import atomic_target, find_resumable_checkpoint
from .dist import CPUDistributedDataParallel, init_cpu_process_group, on_rank0
from .hooks import FastPathsHook, FiniteLossHook
from .preemption import StopOnSignalHook
from .preflight import DatasetError

_SPLITS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


class ModelBuildError(UserError, ValueError):
    """The config's model cannot be built (a bad argument, an unknown type)."""


def explain_model_error(err: BaseException) -> ModelBuildError:
    """One line for an error raised while a model was built.

    Args:
        err (BaseException): What building raised.

    Returns:
        ModelBuildError: e.g. ``cannot build the model: unknown ConvNeXt arch 'tinyy'; choose
        one of ...`` or ``cannot build the model: TypeError: FPN.__init__() got an unexpected
        keyword argument 'foo'``.
    """
    # a KeyError's str() is the repr of its message (mmengine's "X is not in the registry")
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    message = text.strip().splitlines()[0] if text.strip() else ''
    if not isinstance(err, (ValueError, KeyError)) or not message:
        message = f'{type(err).__name__}: {message}'.rstrip(': ')
    return ModelBuildError(f'cannot build the model: {message}')


@RUNNERS.register_module()
class ResumableRunner(Runner):
    """mmengine ``Runner`` whose runs resume after any interruption and stop early on bad input.

    Takes exactly ``Runner``'s arguments; see the module docstring for what changes and why.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for hook_type in (FiniteLossHook, StopOnSignalHook, FastPathsHook):
            if not any(isinstance(hook, hook_type) for hook in self.hooks):
                self.register_hook(hook_type())
        for hook in self.hooks:
            if (isinstance(hook, CheckpointHook) and hook.max_keep_ckpts == 1
                    and self._saves_more_than_once(hook)):
                self.logger.warning(
                    'CheckpointHook max_keep_ckpts=1 deletes the previous checkpoint before '
                    'writing the next one, so a crash while saving leaves nothing to resume '
                    'from: use max_keep_ckpts >= 2')

    def _saves_more_than_once(self, hook: CheckpointHook) -> bool:
        loop = self._train_loop if isinstance(self._train_loop, dict) else {}
        total = loop.get('max_epochs' if hook.by_epoch else 'max_iters')
        return not isinstance(total, int) or hook.interval < total

    def build_model(self, model: Union[torch.nn.Module, Dict]) -> torch.nn.Module:
        """``Runner.build_model``; an error while building is one :class:`ModelBuildError` line.

        Set ``CONVNEXT_DEBUG=1`` (or pass ``--debug`` to our tools) for the full traceback.
        """
        try:
            return super().build_model(model)
        except Exception as err:  # noqa: BLE001 - a config mistake becomes one line
            if debug_enabled():
                raise
            raise explain_model_error(err) from err

    def train(self) -> torch.nn.Module:
        """``Runner.train`` after checking the data of training and validation at once; the
        signal handlers of :class:`.StopOnSignalHook` are put back however training ends.

        Raises:
            DatasetError: Files or folders of the train or val dataloader or the val evaluator
                are missing (all of them in one line, on every rank).
            TrainingStopped: A stop signal ended training after writing a checkpoint.
        """
        self.check_data_paths(['train'] + (['val'] if self._val_loop is not None else []))
        try:
            return super().train()
        finally:
            for hook in self.hooks:
                if isinstance(hook, StopOnSignalHook):
                    hook.restore_handlers()

    def val(self) -> dict:
        """``Runner.val`` after checking the val dataloader's and evaluator's files."""
        self.check_data_paths(['val'])
        return super().val()

    def test(self) -> dict:
        """``Runner.test`` after checking the test dataloader's and evaluator's files."""
        self.check_data_paths(['test'])
        return super().test()

    def check_data_paths(self, splits: Sequence[str]) -> None:
        """Check the files and folders of the dataloaders and evaluators of ``splits`` at once.

        Args:
            splits (Sequence[str]): Of 'train', 'val', 'test'.

        Raises:
            DatasetError: Every missing path, in one line (on every rank; rank 0 looks).
        """
        entries: List[Tuple[str, Any]] = []
        for split in splits:
            loader = getattr(self, f'_{split}_dataloader', None)
            if isinstance(loader, dict) and isinstance(loader.get('dataset'), dict):
                entries.append((f'{split}_dataloader.dataset', loader['dataset']))
            evaluator = getattr(self, f'_{split}_evaluator', None)
            if isinstance(evaluator, (dict, list, tuple)):
                entries.append((f'{split}_evaluator', evaluator))
        if entries:
            on_rank0(lambda: preflight.check_paths(entries), DatasetError)

    # -- distributed set-up ----------------------------------------------------------------------
    def setup_env(self, env_cfg: Dict) -> None:
        """``Runner.setup_env``; without CUDA a distributed run starts its gloo group first."""
        if self.distributed and not torch.distributed.is_initialized() \
                and not torch.cuda.is_available():
            init_cpu_process_group(self.launcher, env_cfg.get('dist_cfg', {}))
        super().setup_env(env_cfg)

    def wrap_model(self, model_wrapper_cfg: Optional[Dict], model: torch.nn.Module) -> Any:
        """``Runner.wrap_model``; without CUDA a distributed run uses
        :class:`CPUDistributedDataParallel` unless the config names a wrapper."""
        if self.distributed and model_wrapper_cfg is None and not torch.cuda.is_available():
            model_wrapper_cfg = dict(
                type=f'{SCOPE}.{CPUDistributedDataParallel.__name__}', broadcast_buffers=False,
                find_unused_parameters=self.cfg.get('find_unused_parameters', False))
        return super().wrap_model(model_wrapper_cfg, model)

    # -- datasets --------------------------------------------------------------------------------
    def build_dataloader(self, dataloader: Any, seed: Optional[int] = None,
                         diff_rank_seed: bool = False) -> Any:
        """``Runner.build_dataloader`` with the dataset checks of :mod:`.preflight`.

        Raises:
            DatasetError: The data is missing, empty or malformed (one line, on every rank).
        """
        dataset = dataloader.get('dataset') if isinstance(dataloader, dict) else None
        if not isinstance(dataset, dict):
            return super().build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)
        where = next((f'{split}.dataset' for split in _SPLITS
                      if getattr(self, f'_{split}', None) is dataloader), 'dataset')
        on_rank0(lambda: preflight.check_config(dataset, where), DatasetError)
        try:
            built = super().build_dataloader(dataloader, seed=seed,
                                             diff_rank_seed=diff_rank_seed)
        except Exception as err:  # noqa: BLE001 - parse errors of the data become one line
            explained = preflight.explain_build_error(dataset, where, err)
            if explained is None:
                raise
            raise explained from None
        model = self.model.module if is_model_wrapper(self.model) else self.model
        on_rank0(lambda: preflight.check_built(built.dataset, where, model), DatasetError)
        return built

    # -- loading ---------------------------------------------------------------------------------
    def load_checkpoint(self, filename: str, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: Optional[Sequence[tuple]] = None) -> dict:
        """``Runner.load_checkpoint`` reading through :func:`read_checkpoint`.

        Args:
            filename (str): Checkpoint path or URL.
            map_location (str | callable): Unused: the file is read on the CPU and the weights
                are copied to the model's device. Defaults to 'cpu'.
            strict (bool): Require the checkpoint to fit the model exactly, checked before
                anything is loaded. Defaults to False (mmengine's default: what fits is loaded,
                one line says how much, and a file of which nothing fits is refused).
            revise_keys (Sequence[tuple], optional): (pattern, replacement) pairs applied to the
                keys. Defaults to stripping ``module.``.

        Returns:
            dict: The loaded checkpoint.

        Raises:
            CheckpointError: The file is missing, unreadable, refused, or does not fit (strict:
                exactly; otherwise: not a tensor of it, see ``load_matching``).
        """
        checkpoint = read_checkpoint(filename)
        self.call_hook('after_load_checkpoint', checkpoint=checkpoint)
        model = self.model.module if is_model_wrapper(self.model) else self.model
        # what mmengine's load_state_dict loads into: TTA models load their inner model
        inner = model.module if isinstance(model, BaseTTAModel) else model
        keys = [(r'^module\.', '')] if revise_keys is None else list(revise_keys)
        if strict:
            fit, _, _ = check_fit(inner.state_dict(), unwrap_state_dict(checkpoint))
            if not fit:
                raise CheckpointError(f'checkpoint {filename} does not fit the model: '
                                      f'{fit.describe()}')
            checkpoint = _load_checkpoint_to_model(model, checkpoint, strict, revise_keys=keys)
        else:
            state = unwrap_state_dict(checkpoint)
            for pattern, replacement in keys:
                state = type(state)((re.sub(pattern, replacement, k), v)
                                    for k, v in state.items())
            load_matching(inner, state, filename, logger=self.logger)
        self._has_loaded = True
        self.logger.info(f'Load checkpoint from {filename}')
        return checkpoint

    def load_or_resume(self) -> None:
        """``Runner.load_or_resume``; ``resume=True`` without ``load_from`` picks the checkpoint
        with :func:`find_resumable_checkpoint` (skipping a missing or cut-off one)."""
        if not self._has_loaded and self._resume and self._load_from is None:
            # rank 0 chooses, so that every rank resumes from the same file
            choice = [find_resumable_checkpoint(self.work_dir) if self.rank == 0 else None]
            broadcast_object_list(choice)
            found = choice[0]
            if found is None:
                self.logger.warning(f'--resume: no checkpoint in {self.work_dir}, so training '
                                    'starts from the beginning')
                self._resume = False
            else:
                self._load_from = found
                self.logger.info(f'Resuming from {found}')
        super().load_or_resume()

    # -- saving ----------------------------------------------------------------------------------
    @master_only
    def save_checkpoint(self, out_dir: str, filename: str,
                        file_client_args: Optional[dict] = None, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, meta: Optional[dict] = None,
                        by_epoch: bool = True, backend_args: Optional[dict] = None) -> None:
        """``Runner.save_checkpoint``, written atomically on local disks.

        Remote back ends (``backend_args``, ``file_client_args`` or a ``scheme://`` out_dir) are
        written as mmengine does. Arguments are those of ``Runner.save_checkpoint``.
        """
        if file_client_args is not None or backend_args is not None or '://' in out_dir:
            super().save_checkpoint(out_dir, filename, file_client_args, save_optimizer,
                                    save_param_scheduler, meta, by_epoch, backend_args)
            return
        with atomic_target(os.path.join(out_dir, filename)) as partial:
            folder, name = os.path.split(partial)
            super().save_checkpoint(folder, name, None, save_optimizer, save_param_scheduler,
                                    meta, by_epoch, None)
