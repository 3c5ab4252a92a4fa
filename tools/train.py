"""Train an mmdet 3.x detector or mmseg 1.x segmentor from a config.

Usage::

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp] [--auto-scale-lr]
        [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm] [--debug]
    bash tools/dist_train.sh CONFIG NUM_PROCESSES [ARGS ...]     # torchrun, one process per GPU

The config's ``default_scope`` ('mmdet' or 'mmseg') selects the codebase; its ``runner_type``
the runner (``convnext_backbone.ResumableRunner`` when it names none). Without CUDA the run
trains in fp32, and distributed runs use gloo and a CPU DistributedDataParallel.

Mistakes in the model config, the data, the checkpoints or the work dir end the run with one
line (before the runner logs its environment, where they can be found then); ``--debug`` (or
``CONVNEXT_DEBUG=1``) shows the full traceback instead.

SIGTERM or SIGUSR1 stops training after the current iteration with a checkpoint of it and exit
status 75 (``cli.EXIT_STOPPED``). A restarted job (SLURM_RESTART_COUNT or
TORCHELASTIC_RESTART_COUNT > 0) continues from the work dir's last complete checkpoint by itself
(docs/cluster.md).
"""
import argparse
import os.path as osp

# first: it sets how OpenMP threads wait before torch loads (convnext_backbone/openmp.py)
import convnext_backbone  # noqa: F401

# isort: split
import torch
from mmengine.logging import print_log

from convnext_backbone import cli, errors
from convnext_backbone.engine.dist import close_process_group, exit_process
from convnext_backbone.engine.preemption import resume_after_restart


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train an mmdet detector or mmseg segmentor (the config's default_scope "
        'decides).')
    parser.add_argument('config', help='config file, e.g. '
                        'configs/mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py')
    parser.add_argument(
        '--resume', nargs='?', const='auto', metavar='CKPT',
        help='resume training (model, optimizer, schedulers, iteration) from CKPT, or without '
        'CKPT from the latest complete checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='mixed-precision training (AmpOptimWrapper, dynamic loss scale; '
                        'needs a GPU)')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help="scale the lr linearly with the total batch size against the "
                        "config's auto_scale_lr.base_batch_size")
    cli.add_runner_args(parser)
    return cli.parse_args(parser)


def main() -> None:
    args = parse_args()
    cfg = cli.load_config(args.config, args.cfg_options, args.launcher, args.work_dir)

    if args.amp:
        if not torch.cuda.is_available():
            errors.fail("--amp needs a CUDA device (mmengine's AmpOptimWrapper); none is available")
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    cli.use_fp32_without_gpu(cfg)

    if args.auto_scale_lr:
        if 'base_batch_size' not in (cfg.get('auto_scale_lr') or {}):
            errors.fail(f'--auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in '
                        f'{args.config}')
        cfg.auto_scale_lr.enable = True

    if args.resume == 'auto' or resume_after_restart(cfg.work_dir):
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, cli.existing_checkpoint(args.resume)

    with cli.one_line_errors():
        cli.build_runner(cfg).train()
    distributed = close_process_group()
    print_log(f'Training done: checkpoints and logs are in {osp.abspath(cfg.work_dir)}',
              logger='current')
    if distributed:
        exit_process(0)


if __name__ == '__main__':
    main()
