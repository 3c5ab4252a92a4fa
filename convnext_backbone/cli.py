"""What the command-line tools share: arguments, config loading, the runner, one-line errors.

``tools/train.py``, ``tools/test.py`` and the other tools import this module; they never import
each other.
"""
import argparse
import contextlib
import logging
import os
import os.path as osp
import sys
from typing import Iterator, List, NoReturn, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

SCOPES = ('mmdet', 'mmseg')
#: The runner of every config that names no ``runner_type``.
DEFAULT_RUNNER = 'convnext_backbone.ResumableRunner'
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')
#: Exit status of ``tools/train.py`` when a signal (SIGTERM, SIGUSR1) stopped training after it
#: wrote a checkpoint of the current iteration: run again with ``--resume``. 75 is EX_TEMPFAIL of
#: sysexits.h ("try again later"). ``tools/slurm_train.sh`` requeues on it and
#: ``tools/dist_launch.sh`` returns it; both spell it out, as shell cannot import it.
EXIT_STOPPED = 75


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit with ``<tool>: error: <message>`` on stderr, one line, no traceback."""
    sys.stderr.write(f'{osp.basename(sys.argv[0])}: error: {message}\n')
    sys.exit(code)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, for every tool that reads a config."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config settings, e.g. train_dataloader.batch_size=4 '
        'model.backbone.drop_path_rate=0.2 "param_scheduler.1.milestones=[8,11]" (no spaces '
        'inside a value)')


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options`` and ``--launcher``, for the tools that run a Runner."""
    parser.add_argument('--work-dir', help='directory for logs, checkpoints and results '
                        '(default: ./work_dirs/<config name>)')
    add_config_args(parser)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher: none (one process), pytorch (torchrun, see '
                        'dist_train.sh) or slurm (srun, see slurm_train.sh)')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def parse_args(parser: argparse.ArgumentParser,
               argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args`` that also exports ``--local-rank`` as ``LOCAL_RANK``."""
    args = parser.parse_args(argv)
    if getattr(args, 'local_rank', None) is not None:
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def read_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """Read a config and apply ``--cfg-options``; a missing file ends the tool in one line."""
    if not osp.isfile(path):
        fail(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def load_config(path: str, cfg_options: Optional[dict] = None, launcher: str = 'none',
                work_dir: Optional[str] = None) -> Config:
    """Read a config for a Runner: ``--cfg-options``, launcher, work dir and runner type.

    Args:
        path (str): Config file.
        cfg_options (dict, optional): Overrides from ``--cfg-options``. Defaults to None.
        launcher (str): 'none', 'pytorch' or 'slurm'. Defaults to 'none'.
        work_dir (str, optional): Overrides the config's ``work_dir``; without either it is
            ``./work_dirs/<config name>``. Defaults to None.

    Returns:
        Config: The config, whose ``default_scope`` is one of :data:`SCOPES`; ``runner_type``
        is :data:`DEFAULT_RUNNER` unless the config names one.
    """
    cfg = read_config(path, cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        fail(f'{path}: default_scope is {scope!r}; this tool runs mmdet and mmseg configs '
             f'(default_scope one of {SCOPES})')
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    if cfg.get('runner_type') is None:
        cfg.runner_type = DEFAULT_RUNNER
    return cfg


def use_fp32_without_gpu(cfg: Config) -> None:
    """Replace ``AmpOptimWrapper`` by ``OptimWrapper`` when no CUDA device exists.

    mmengine's AMP wrapper needs a GPU; on a CPU the run goes on in fp32 with a warning.
    """
    wrapper = cfg.get('optim_wrapper')
    if torch.cuda.is_available() or not wrapper or wrapper.get('type') != 'AmpOptimWrapper':
        return
    print_log('No CUDA device: AmpOptimWrapper needs a GPU, so this run trains in fp32 '
              '(optim_wrapper.type=OptimWrapper).', logger='current', level=logging.WARNING)
    wrapper.type = 'OptimWrapper'
    for key in _AMP_ONLY_KEYS:
        wrapper.pop(key, None)


def build_runner(cfg: Config):
    """The config's runner (``RUNNERS.build(cfg)``, as mmdet's and mmseg's tools do)."""
    from mmengine.registry import RUNNERS
    return RUNNERS.build(cfg)


def user_errors() -> tuple:
    """Errors whose message tells the whole story: a bad checkpoint or dataset, a non-finite
    loss, a launcher without its environment."""
    from .checkpoint import CheckpointError
    from .engine.hooks import NonFiniteLossError
    from .engine.preflight import DatasetError
    return CheckpointError, DatasetError, NonFiniteLossError


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn :func:`user_errors` raised inside into ``fail(message, code=1)``, and a stop on a
    signal (``TrainingStopped``, its checkpoint written) into exit status :data:`EXIT_STOPPED`."""
    from .engine.dist import close_process_group
    from .engine.preemption import TrainingStopped
    try:
        yield
    except user_errors() as err:
        fail(str(err), code=1)
    except TrainingStopped:  # every rank stops at the same iteration
        close_process_group()
        sys.exit(EXIT_STOPPED)


def existing_checkpoint(path: str) -> str:
    """``path`` if it is a file or URL; otherwise the tool ends with one line."""
    if not osp.isfile(path) and '://' not in path:
        fail(f'checkpoint not found: {path}')
    return path


def image_files(inputs: Sequence[str], extensions: Sequence[str]) -> List[str]:
    """Files named on the command line plus the images inside named folders (sorted, one level
    deep); a missing input or an image-less folder ends the tool with one line."""
    found: List[str] = []
    for item in inputs:
        if osp.isdir(item):
            names = sorted(n for n in os.listdir(item) if n.lower().endswith(tuple(extensions)))
            if not names:
                fail(f'folder {item} holds no image ({", ".join(extensions)})')
            found += [osp.join(item, n) for n in names]
        elif osp.isfile(item):
            found.append(item)
        else:
            fail(f'image or folder not found: {item}')
    return found


def build_model(cfg: Config) -> torch.nn.Module:
    """The config's model with random weights, for counting, timing or converting: nothing is
    downloaded (the backbone's ``init_cfg`` is dropped), SyncBN becomes BN, eval mode.

    Args:
        cfg (Config): An mmdet or mmseg config.

    Returns:
        nn.Module: The model.
    """
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope'))
    model_cfg = cfg.model.copy()
    if isinstance(model_cfg.get('backbone'), dict):
        model_cfg.backbone.pop('init_cfg', None)
    return revert_sync_batchnorm(MODELS.build(model_cfg)).eval()
