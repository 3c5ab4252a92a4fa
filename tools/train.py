"""Train an mmdet 3.x detector or mmseg 1.x segmentor from a config with mmengine's Runner.

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm]
    bash tools/dist_train.sh CONFIG NUM_GPUS [ARGS ...]      # torchrun, one process per GPU

The config's ``default_scope`` ('mmdet' or 'mmseg') selects the codebase. The runner is
``convnext_backbone.SafeRunner`` unless the config names its own ``runner_type``.

On a machine without CUDA, distributed runs (``--launcher pytorch|slurm``) use the gloo backend
and a CPU DistributedDataParallel: useful to check the distributed path on a laptop or in CI.

``tools/test.py`` reuses the helpers of this file.
"""
import argparse
import datetime
import logging
import os
import os.path as osp
import subprocess
import sys
from typing import List, NoReturn, Optional

REPO_ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)  # run from a clone without installing the package

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm  # noqa: E402
from mmengine.registry import MODEL_WRAPPERS, RUNNERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import convnext_backbone  # noqa: E402,F401 (registers our modules, quiets mmengine)

SCOPES = ('mmdet', 'mmseg')
SAFE_RUNNER = 'convnext_backbone.SafeRunner'
CPU_DDP = 'ConvNeXtCPUDistributedDataParallel'
_AMP_ONLY_KEYS = ('loss_scale', 'dtype', 'use_fsdp')


@MODEL_WRAPPERS.register_module(name=CPU_DDP, force=True)
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DistributedDataParallel wrapper for models on the CPU (gloo backend).

    mmengine's Runner always passes ``device_ids=[LOCAL_RANK]``, which torch refuses for CPU
    modules; this wrapper drops it. SyncBN layers, which need CUDA, become plain BN (statistics
    per process).

    Args:
        module (nn.Module): The model, on the CPU.
        device_ids (list[int], optional): Ignored (must be None for CPU modules).
        **kwargs: Passed to ``MMDistributedDataParallel``.
    """

    def __init__(self, module: torch.nn.Module, device_ids: Optional[List[int]] = None,
                 **kwargs) -> None:
        module = revert_sync_batchnorm(module)
        super().__init__(module=module, device_ids=None, **kwargs)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add the arguments shared by train.py and test.py (after CONFIG and CHECKPOINT)."""
    parser.add_argument('--work-dir', help='directory for logs, checkpoints and results '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction, metavar='KEY=VALUE',
        help='override config settings, e.g. train_dataloader.batch_size=4 '
        'model.backbone.drop_path_rate=0.2 "param_scheduler.1.milestones=[8,11]" (no spaces '
        'inside a value)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm'], default='none',
                        help='job launcher: none (one process), pytorch (torchrun, see '
                        'dist_train.sh) or slurm (srun, see slurm_train.sh)')
    # torch.distributed.launch passes --local-rank; torchrun sets LOCAL_RANK instead.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0,
                        help=argparse.SUPPRESS)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line of train.py."""
    parser = argparse.ArgumentParser(
        description='Train an mmdet detector or mmseg segmentor (the config\'s default_scope '
        'decides) with mmengine\'s Runner.')
    parser.add_argument('config', help='config file, e.g. '
                        'configs/mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CKPT',
        help='resume training (model, optimizer, scheduler, iteration) from CKPT, or without '
        'CKPT from the latest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (AmpOptimWrapper, dynamic loss scale; '
                        'needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr linearly with the total batch size against the '
                        'config\'s auto_scale_lr.base_batch_size')
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def fail(message: str, code: int = 2) -> NoReturn:
    """Exit with a one-line error naming this tool."""
    sys.stderr.write(f'{osp.basename(sys.argv[0])}: error: {message}\n')
    sys.exit(code)


def load_config(path: str, cfg_options: Optional[dict] = None, launcher: str = 'none',
                work_dir: Optional[str] = None) -> Config:
    """Read a config, apply ``--cfg-options`` and set the launcher and work dir.

    Args:
        path (str): Config file.
        cfg_options (dict, optional): Overrides from ``--cfg-options``. Defaults to None.
        launcher (str): 'none', 'pytorch' or 'slurm'. Defaults to 'none'.
        work_dir (str, optional): Overrides the config's ``work_dir``; without either it is
            ``./work_dirs/<config name>``. Defaults to None.

    Returns:
        Config: The config, whose ``default_scope`` is one of ``SCOPES``.
    """
    if not osp.isfile(path):
        fail(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        fail(f'{path}: default_scope is {scope!r}; this tool runs mmdet and mmseg configs '
             f'(default_scope one of {SCOPES})')
    cfg.launcher = launcher
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(path))[0])
    return cfg


def set_default_runner(cfg: Config) -> None:
    """Use ``convnext_backbone.SafeRunner`` unless the config sets ``runner_type``.

    Falls back to mmengine's ``Runner`` (with a log line) only when ``convnext_backbone.runner``
    cannot be imported.
    """
    if cfg.get('runner_type') is not None:
        return
    try:
        import convnext_backbone.runner  # noqa: F401
    except ImportError as err:
        print_log(f'convnext_backbone.runner cannot be imported ({err}); using mmengine\'s '
                  'Runner instead of convnext_backbone.SafeRunner', logger='current',
                  level=logging.WARNING)
        return
    cfg.runner_type = SAFE_RUNNER


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


def init_cpu_distributed(cfg: Config) -> None:
    """Start the process group on a machine without CUDA, before the Runner does.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device``, which fails on CPU-only torch. Here
    the gloo backend is used (``nccl`` in the config is replaced, with a log line) and the model is
    wrapped by :class:`CPUDistributedDataParallel`. The Runner sees an initialised process group
    and skips its own initialisation.
    """
    if cfg.launcher == 'none' or torch.cuda.is_available():
        return
    import torch.distributed as dist
    if dist.is_initialized():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = env_cfg.setdefault('dist_cfg', {})
    backend = dist_cfg.get('backend', 'gloo')
    if backend != 'gloo':
        print_log(f'No CUDA device: distributed backend {backend!r} replaced by \'gloo\'.',
                  logger='current', level=logging.WARNING)
        dist_cfg['backend'] = backend = 'gloo'
    if cfg.launcher == 'slurm':
        _slurm_env()
    for key in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT'):
        if key not in os.environ:
            fail(f'--launcher {cfg.launcher} needs the environment variable {key} (set by '
                 'torchrun / tools/dist_train.sh)')
    kwargs = {}
    if dist_cfg.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=dist_cfg['timeout'])
    dist.init_process_group(backend=backend, rank=int(os.environ['RANK']),
                            world_size=int(os.environ['WORLD_SIZE']), **kwargs)
    if cfg.get('model_wrapper_cfg') is None:
        cfg.model_wrapper_cfg = dict(type=CPU_DDP, broadcast_buffers=False,
                                     find_unused_parameters=cfg.get('find_unused_parameters',
                                                                    False))


def _slurm_env() -> None:
    # What mmengine's slurm initialisation derives from SLURM's variables.
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')
    os.environ.setdefault('MASTER_PORT', '29500')
    if 'MASTER_ADDR' not in os.environ:
        nodes = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {nodes} | head -n1')


def build_runner(cfg: Config) -> Runner:
    """Build the runner: ``RUNNERS.build`` when the config has ``runner_type``, else
    ``Runner.from_cfg``."""
    if cfg.get('runner_type') is not None:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


def prepare(cfg: Config) -> Runner:
    """The steps shared by train.py and test.py after the config is final: runner type, CPU
    distributed set-up, then the runner."""
    set_default_runner(cfg)
    init_cpu_distributed(cfg)
    return build_runner(cfg)


def user_errors() -> tuple:
    """Errors whose message tells the whole story (a bad checkpoint or dataset, a non-finite
    loss): train.py and test.py print them as one line instead of a traceback."""
    from convnext_backbone.checkpoint import CheckpointError
    from convnext_backbone.datasets_check import DatasetError
    from convnext_backbone.runner import NonFiniteLossError
    return CheckpointError, DatasetError, NonFiniteLossError


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``tools/train.py``."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if args.amp:
        if not torch.cuda.is_available():
            fail('--amp needs a CUDA device (mmengine\'s AmpOptimWrapper); none is available')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    use_fp32_without_gpu(cfg)
    if args.auto_scale_lr:
        auto = cfg.get('auto_scale_lr')
        if not auto or 'base_batch_size' not in auto:
            fail(f'--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in '
                 f'{args.config}')
        auto.enable = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        if not osp.isfile(args.resume) and '://' not in args.resume:
            fail(f'checkpoint to resume from not found: {args.resume}')
        cfg.resume = True
        cfg.load_from = args.resume

    try:
        prepare(cfg).train()
    except user_errors() as err:
        fail(str(err), code=1)
    print_log(f'Training done: checkpoints and logs are in {osp.abspath(cfg.work_dir)}',
              logger='current')


if __name__ == '__main__':
    main()
