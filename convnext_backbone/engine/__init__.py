"""Training and testing machinery, one responsibility per module.

- :mod:`.runner`: :class:`ResumableRunner`, mmengine's Runner for runs that survive interruption;
- :mod:`.loops`: :class:`ResumableEpochBasedTrainLoop`, exact mid-epoch resume;
- :mod:`.hooks`: :class:`FiniteLossHook`;
- :mod:`.checkpoint_files`: atomic writes and finding the checkpoint to resume from;
- :mod:`.preflight`: dataset checks;
- :mod:`.dist`: distributed runs without CUDA.
"""
from .checkpoint_files import atomic_target, find_resumable_checkpoint
from .dist import CPUDistributedDataParallel
from .hooks import FiniteLossHook, NonFiniteLossError
from .loops import ResumableEpochBasedTrainLoop
from .preflight import DatasetError
from .runner import ResumableRunner

__all__ = ['CPUDistributedDataParallel', 'DatasetError', 'FiniteLossHook', 'NonFiniteLossError',
           'ResumableEpochBasedTrainLoop', 'ResumableRunner', 'atomic_target',
           'find_resumable_checkpoint']
