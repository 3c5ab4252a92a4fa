"""Training and testing machinery, one responsibility per module.

- :mod:`.runner`: :class:`ResumableRunner`, mmengine's Runner for runs that survive interruption;
- :mod:`.loops`: :class:`ResumableEpochBasedTrainLoop`, exact mid-epoch resume;
- :mod:`.hooks`: :class:`FiniteLossHook`, :class:`FastPathsHook`;
- :mod:`.checkpoint_files`: atomic writes and finding the checkpoint to resume from;
- :mod:`.preflight`: dataset checks;
- :mod:`.dist`: distributed runs without CUDA;
- :mod:`.preemption`: :class:`StopOnSignalHook`, a checkpoint of the current iteration on
  SIGTERM / SIGUSR1 on every rank;
- :mod:`.compiled_eval`: :class:`CompileForTestHook`, ``torch.compile`` for val/test.
"""
from .checkpoint_files import atomic_target, find_resumable_checkpoint
from .compiled_eval import CompileForTestHook
from .dist import CPUDistributedDataParallel
from .hooks import FastPathsHook, FiniteLossHook, NonFiniteLossError
from .loops import ResumableEpochBasedTrainLoop
from .preemption import StopOnSignalHook
from .preflight import DatasetError
from .runner import ResumableRunner

__all__ = ['CPUDistributedDataParallel', 'CompileForTestHook', 'DatasetError', 'FastPathsHook',
           'FiniteLossHook',
           'NonFiniteLossError', 'ResumableEpochBasedTrainLoop', 'ResumableRunner',
           'StopOnSignalHook', 'atomic_target', 'find_resumable_checkpoint']
