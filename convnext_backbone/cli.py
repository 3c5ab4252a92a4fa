"""What the command-line tools share: arguments, config loading, the runner, one-line errors.

``tools/train.py``, ``tools/test.py`` and the other tools import this module; they never import
each other.

Errors a user can act on (:class:`convnext_backbone.errors.UserError`: a bad checkpoint,
dataset, config, model config or work dir, a non-finite loss) end a tool with one line
(:func:`convnext_backbone.errors.fail`); ``--debug`` or ``CONVNEXT_DEBUG=1`` shows the full
traceback instead.
"""
import argparse
import contextlib
import logging
import os
import os.path as osp
import sys
import tempfile
from typing import Iterator, List, Optional, Sequence

import torch
from mmengine.config import Config, DictAction
from mmengine.logging import print_log

from . import config
from .errors import DEBUG_ENV, UserError, debug_enabled, fail, one_line

SCOPES = ('mmdet', 'mmseg')
#: The runner of every config that names no ``runner_type``.
DEFAULT_RUNNER = 'convnext_backbone.ResumableRunner'
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')
#: Exit status of ``tools/train.py`` when a signal (SIGTERM, SIGUSR1) stopped training after it
#: wrote a checkpoint of the current iteration: run again with ``--resume``. 75 is EX_TEMPFAIL of
#: sysexits.h ("try again later"). ``tools/slurm_train.sh`` requeues on it and
#: ``tools/dist_launch.sh`` returns it; both spell it out, as shell cannot import it.
EXIT_STOPPED = 75
_BACKBONE_TYPE = 'convnext_backbone.ConvNeXt'


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, for every tool that reads a config."""
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config settings, e.g. train_dataloader.batch_size=4 '
        'model.backbone.drop_path_rate=0.2 "param_scheduler.1.milestones=[8,11]" (no spaces '
        'inside a value)')


def add_debug_arg(parser: argparse.ArgumentParser) -> None:
    """``--debug``: full tracebacks instead of one-line errors (sets ``CONVNEXT_DEBUG=1``)."""
    parser.add_argument('--debug', action='store_true',
                        help=f'show the full traceback of an error instead of one line (same as '
                        f'{DEBUG_ENV}=1)')


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """``--work-dir``, ``--cfg-options``, ``--launcher`` and ``--debug``, for the tools that run
    a Runner."""
    parser.add_argument('--work-dir', help='directory for logs, checkpoints and results '
                        '(default: ./work_dirs/<config name>)')
    add_config_args(parser)
    add_debug_arg(parser)
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher: none (one process), pytorch (torchrun, see '
                        'dist_train.sh) or slurm (srun, see slurm_train.sh)')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def parse_args(parser: argparse.ArgumentParser,
               argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """``parser.parse_args`` that also exports ``--local-rank`` as ``LOCAL_RANK`` and
    ``--debug`` as ``CONVNEXT_DEBUG=1`` (so the runner and every rank see it)."""
    args = parser.parse_args(argv)
    if getattr(args, 'local_rank', None) is not None:
        os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    if getattr(args, 'debug', False):
        os.environ[DEBUG_ENV] = '1'
    return args


def read_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """:func:`convnext_backbone.config.read_config` for a tool: a missing file (the config or
    one of its bases) ends the tool in one line (exit status 2).

    Args:
        path (str): Config file.
        cfg_options (dict, optional): Overrides from ``--cfg-options``. Defaults to None.

    Returns:
        Config: The config.
    """
    with one_line(code=2):
        return config.read_config(path, cfg_options)


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
    """The config's runner (``RUNNERS.build(cfg)``, as mmdet's and mmseg's tools do), after
    :func:`check_backbone` and :func:`writable_dir` on the work dir, so that their mistakes come
    before the runner's environment and config log.

    Raises:
        ModelBuildError: The backbone's arguments are wrong, or (from the runner) the model
            cannot be built.
    """
    from mmengine.registry import RUNNERS
    check_backbone(cfg)
    writable_dir(cfg.work_dir)
    return RUNNERS.build(cfg)


def check_backbone(cfg: Config) -> None:
    """Build the config's ``convnext_backbone.ConvNeXt`` on the meta device (no memory, no
    weights read) to check its arguments.

    mmseg's ``EncoderDecoder`` passes ``model.pretrained`` to the backbone
    (``mmseg/models/segmentors/encoder_decoder.py``), so it is checked as the backbone's.

    Args:
        cfg (Config): An mmdet or mmseg config (a TTA model's ``module`` is looked into).

    Raises:
        ModelBuildError: ``model.backbone: MESSAGE``, one line.
    """
    from .convnext import ConvNeXt
    from .engine.runner import ModelBuildError
    model = cfg.get('model')
    while isinstance(model, dict) and 'backbone' not in model and isinstance(
            model.get('module'), dict):
        model = model['module']
    backbone = model.get('backbone') if isinstance(model, dict) else None
    if not isinstance(backbone, dict) or backbone.get('type') not in (_BACKBONE_TYPE, ConvNeXt):
        return
    kwargs = {k: v for k, v in backbone.items() if k != 'type'}
    if cfg.get('default_scope') == 'mmseg' and model.get('pretrained') is not None:
        kwargs.setdefault('pretrained', model['pretrained'])
    try:
        with torch.device('meta'):
            ConvNeXt(**kwargs)
    except (ValueError, TypeError) as err:
        if debug_enabled():
            raise
        raise ModelBuildError(f'model.backbone: {err}') from None


def writable_dir(path: str, option: str = '--work-dir') -> str:
    """``path``, created if needed; a folder that cannot be written ends the tool in one line.

    Args:
        path (str): The folder.
        option (str): The option that chooses it, for the message. Defaults to '--work-dir'.

    Returns:
        str: ``path``.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix='.write-test-'):
            pass
    except OSError as err:
        fail(f'cannot write to {path} ({err.strerror or type(err).__name__}): choose a writable '
             f'folder with {option}')
    return path


@contextlib.contextmanager
def building_model() -> Iterator[None]:
    """Turn any error raised inside (other than a ``UserError``) into a one-line
    ``ModelBuildError``, for tools that build a model outside the runner (``tools/infer.py``)."""
    from .engine.runner import explain_model_error
    try:
        yield
    except UserError:
        raise
    except Exception as err:  # noqa: BLE001 - a config mistake becomes one line
        if debug_enabled():
            raise
        raise explain_model_error(err) from err


@contextlib.contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn a ``UserError`` raised inside into ``fail(message, code=1)`` (re-raised with
    ``--debug``: :func:`convnext_backbone.errors.one_line`), and a stop on a signal
    (``TrainingStopped``, its checkpoint written) into exit status :data:`EXIT_STOPPED`."""
    from .engine.dist import close_process_group, exit_process
    from .engine.preemption import TrainingStopped
    try:
        with one_line(code=1):
            yield
    except TrainingStopped:  # every rank stops at the same iteration
        if close_process_group():
            exit_process(EXIT_STOPPED)
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
