"""``--before``: our backbone as an earlier checkout of this repository computes it, side by side
with the current code, in the same interleaved rounds."""
import argparse
import os
import os.path as osp
import shutil
import subprocess
import sys
import tempfile
import weakref
from typing import Any, Dict, List, Optional

import torch
from torch import nn

#: The worker program, run as a script in a process of its own.
WORKER = osp.join(osp.dirname(osp.abspath(__file__)), 'earlier_worker.py')


class EarlierCheckout:
    """Our backbone as an earlier checkout of this repository computes it, in a worker process.

    Two versions of one package cannot be imported into one process, so the earlier one runs
    in a worker of its own (:mod:`.earlier_worker`, ``PYTHONPATH`` = the checkout) that builds
    the same arch with the same weights and input and runs it when asked;
    :func:`~.common.interleaved` times each request beside the current code's runs, in the same
    rounds.

    Args:
        path (str): The checkout (e.g. ``git worktree add /tmp/before 85cd133``).
        arch (str): The arch.
        state (dict): The weights (our state dict).
        x (torch.Tensor): The input.
        train (bool): Time a training step (needs ``weights``) instead of inference.
        weights (list[torch.Tensor], optional): The loss weights of the training step.
        fuse (bool): Call the earlier backbone's ``fuse()`` first (it had one).
    """

    def __init__(self, path: str, arch: str, state: dict, x: torch.Tensor, train: bool = False,
                 weights: Optional[List[torch.Tensor]] = None, fuse: bool = False) -> None:
        self._dir = tempfile.mkdtemp(prefix='convnext-before-')
        setup = osp.join(self._dir, 'setup.pt')
        torch.save(dict(arch=arch, state=state, x=x, train=train, weights=weights, fuse=fuse),
                   setup)
        env = dict(os.environ, PYTHONPATH=osp.abspath(path))
        self._proc = subprocess.Popen(
            [sys.executable, WORKER, setup, str(torch.get_num_threads())],
            cwd=self._dir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self._proc.stdout.readline().split()
        if not ready or ready[0] != 'ready':
            raise RuntimeError(f'the checkout at {path} did not start its backbone (see above)')
        #: Whether the earlier backbone has ``fuse()``.
        self.has_fuse = ready[1:] == ['True']
        # The worker and its folder (the weights and input, a result: hundreds of MB for a
        # large arch) go when this object does, at the latest when the benchmark exits.
        self._cleanup = weakref.finalize(self, _stop, self._proc, self._dir)

    def _ask(self, line: str) -> None:
        self._proc.stdin.write(line + '\n')
        self._proc.stdin.flush()
        if self._proc.stdout.readline().strip() != 'ok':
            raise RuntimeError('the earlier checkout\'s worker failed (see above)')

    def __call__(self, dtype: str) -> None:
        """One run (inference or training step) in precision ``dtype``."""
        self._ask(f'run {dtype}')

    def result(self, dtype: str) -> Any:
        """One run's outputs (inference) or weight gradients by name (training)."""
        path = osp.join(self._dir, 'result.pt')
        self._ask(f'save {dtype} {path}')
        return torch.load(path, weights_only=True)


def _stop(proc: subprocess.Popen, folder: str) -> None:
    """End a worker (its stdin closed: it ends at the end of its requests; else SIGKILL) and
    remove its folder."""
    try:
        proc.stdin.close()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        proc.kill()
        proc.wait()
    shutil.rmtree(folder, ignore_errors=True)


def before_models(args: argparse.Namespace, ours: nn.Module, x: torch.Tensor, train: bool,
                  weights: Optional[List[torch.Tensor]] = None) -> Dict[str, EarlierCheckout]:
    """The ``--before`` checkout's backbone, and its ``fuse()``d one where it had ``fuse()``.

    Args:
        args (argparse.Namespace): The options (``before``: the checkout, ``arch``).
        ours (nn.Module): Our backbone, whose weights the earlier one gets.
        x (torch.Tensor): The input.
        train (bool): Time a training step instead of inference.
        weights (list[torch.Tensor], optional): The loss weights of the training step.

    Returns:
        dict[str, EarlierCheckout]: 'before' (and 'before fused').
    """
    state = ours.state_dict()
    models = {'before': EarlierCheckout(args.before, args.arch, state, x, train, weights)}
    if models['before'].has_fuse and not train:
        models['before fused'] = EarlierCheckout(args.before, args.arch, state, x, train,
                                                 weights, fuse=True)
    return models
