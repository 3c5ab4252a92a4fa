"""Distributed runs on machines without CUDA, and checks that run once for all ranks.

mmengine's ``init_dist`` (``mmengine/dist/utils.py``: ``_init_dist_pytorch`` and
``_init_dist_slurm``) calls ``torch.cuda.set_device`` before starting the process group, which
fails with CPU-only torch; and ``Runner.wrap_model`` passes ``device_ids=[LOCAL_RANK]`` to
``DistributedDataParallel``, which torch refuses for CPU modules. On GPUs both are fine and
mmengine's code runs unchanged; this module holds only the CPU part they lack: starting a gloo
process group (:func:`init_cpu_process_group`) and a DDP wrapper without ``device_ids``
(:class:`CPUDistributedDataParallel`).
"""
import atexit
import datetime
import logging
import os
import subprocess
import sys
from typing import Callable, List, NoReturn, Optional

import torch
import torch.distributed as torch_dist
from mmengine.dist import broadcast_object_list, get_rank
from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm

from ..registry import MODEL_WRAPPERS

_NEEDED = ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's ``MMDistributedDataParallel`` for models on the CPU (gloo backend).

    SyncBN layers, which need CUDA, become plain BN (statistics per process).

    Args:
        module (nn.Module): The model, on the CPU.
        device_ids (list[int], optional): Ignored: torch requires None for CPU modules.
        **kwargs: Passed to ``MMDistributedDataParallel``.
    """

    def __init__(self, module: torch.nn.Module, device_ids: Optional[List[int]] = None,
                 **kwargs) -> None:
        super().__init__(module=revert_sync_batchnorm(module), device_ids=None, **kwargs)


def init_cpu_process_group(launcher: str, dist_cfg: dict) -> None:
    """Start a gloo process group, what ``mmengine.dist.init_dist`` does less the CUDA call.

    Args:
        launcher (str): 'pytorch' (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR/PORT) or 'slurm'
            (derived from SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID and SLURM_NODELIST as
            mmengine's ``_init_dist_slurm`` does).
        dist_cfg (dict): ``env_cfg.dist_cfg``; ``backend`` other than gloo is replaced (with a
            log line) and ``timeout`` (seconds) is honoured.

    Raises:
        RuntimeError: A variable the launcher should have set is missing, named.
    """
    backend = dist_cfg.get('backend', 'gloo')
    if backend != 'gloo':
        print_log(f"No CUDA device: distributed backend {backend!r} replaced by 'gloo'.",
                  logger='current', level=logging.WARNING)
    if launcher == 'slurm':
        os.environ['RANK'] = os.environ['SLURM_PROCID']
        os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
        os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
        os.environ.setdefault('MASTER_PORT', '29500')
        if 'MASTER_ADDR' not in os.environ:
            nodes = os.environ['SLURM_NODELIST']
            os.environ['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {nodes} | head -n1')
    missing = [key for key in _NEEDED if key not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher {launcher} needs the environment variables '
                           f'{", ".join(missing)} (set by torchrun / tools/dist_train.sh, or '
                           'srun / tools/slurm_train.sh)')
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    torch_dist.init_process_group(backend='gloo', rank=int(os.environ['RANK']),
                                  world_size=int(os.environ['WORLD_SIZE']), **kwargs)


def close_process_group() -> bool:
    """End a distributed run that every rank finished alike: a barrier, then
    ``destroy_process_group`` (nothing without a process group).

    Call it only where all ranks arrive (the end of training or testing, a stop on a signal),
    never after an error on one rank: the barrier would wait for the others. Then end the
    process with :func:`exit_process`.

    Returns:
        bool: Whether there was a process group (a distributed run).
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return False
    torch_dist.barrier()
    torch_dist.destroy_process_group()
    return True


def exit_process(status: int) -> NoReturn:
    """End a rank of a distributed run after :func:`close_process_group`, without the
    interpreter's teardown: atexit functions run, logging and stdio are flushed, then
    ``os._exit(status)``.

    Note:
        mmengine never destroys the process group and its DDP wrapper keeps a reference to it,
        so gloo's threads are torn down at interpreter exit in no fixed order. With torch 2.13
        one 2-rank gloo run in about 16 aborted there ("terminate called without an active
        exception", SIGABRT) even after ``destroy_process_group``, and torchrun reported a
        complete run as failed: a script of a few DDP steps, barrier and destroy, run 80 times
        under torchrun on 2 CPU ranks here, aborted 5 times; ending with this, 0 of 80.

    Args:
        status (int): The exit status.
    """
    try:
        atexit._run_exitfuncs()  # what interpreter exit would run first
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(status)


def on_rank0(check: Callable[[], None], error: type) -> None:
    """Run ``check`` on rank 0 only; if it fails, every rank fails with its message.

    So a check costs one process its time and memory instead of all of them, and no rank is
    left waiting at the next collective operation when it fails. Without a process group this
    is just ``check()``.

    Args:
        check (callable): The check; raises to fail.
        error (type): Exception class raised on the other ranks with rank 0's message (rank 0
            raises what ``check`` raised).
    """
    message: List[Optional[str]] = [None]
    failure: Optional[BaseException] = None
    if get_rank() == 0:
        try:
            check()
        except Exception as err:  # noqa: BLE001 - passed on to every rank, then re-raised
            failure, message[0] = err, str(err)
    broadcast_object_list(message)
    if failure is not None:
        raise failure
    if message[0] is not None:
        raise error(message[0])
