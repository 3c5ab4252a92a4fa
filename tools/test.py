"""Evaluate an mmdet 3.x detector or mmseg 1.x segmentor checkpoint on the config's test set.

Usage::

    python tools/test.py CONFIG CHECKPOINT [--tta] [--show-dir DIR] [--out FILE_OR_DIR]
        [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm] [--debug]
        [--bf16]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_PROCESSES [ARGS ...]

The checkpoint must fit the config's model exactly (every weight, every shape), or the run stops
naming the first differences. Metrics are logged and written to ``<work_dir>/test_metrics.json``.
Errors are one line (``--debug``: the full traceback).
"""
import argparse
import json
import os.path as osp

# first: it sets how OpenMP threads wait before torch loads (convnext_backbone/openmp.py)
import convnext_backbone  # noqa: F401

# isort: split
import torch
from mmengine.config import ConfigDict
from mmengine.dist import is_main_process
from mmengine.logging import print_log

from convnext_backbone import cli, errors, frozen_weights, precision
from convnext_backbone.engine.dist import close_process_group, exit_process

# mmdet's default flip TTA, as mmdet's tools/test.py builds it for configs without tta_model.
DET_TTA_MODEL = dict(type='DetTTAModel',
                     tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
DET_TTA_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate a checkpoint of an mmdet detector or mmseg segmentor (the "
        "config's default_scope decides) on the config's test set.")
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file or URL (must fit the model exactly)')
    parser.add_argument(
        '--tta', action='store_true',
        help="test-time augmentation from the config's tta_model and tta_pipeline (and "
        'tta_test_cfg, which replaces model.test_cfg, if set). Detection configs without them '
        "get mmdet's horizontal-flip TTA (boxes only: mmdet 3.3 cannot merge masks); "
        'segmentation configs must define them')
    parser.add_argument(
        '--show-dir',
        help='save images with the predictions drawn. mmdet: every test image, into DIR; '
        'mmseg: into DIR/vis_data/vis_image, every `default_hooks.visualization.interval`-th '
        'image')
    parser.add_argument(
        '--out',
        help='mmdet: dump the raw predictions to this .pkl file; mmseg: write the predicted '
        'label maps as PNG files into this directory')
    parser.add_argument(
        '--bf16', action='store_true',
        help='test under bfloat16 autocast, with mmcv ops and the heads\' output layers in '
        'float32 (convnext_backbone.precision); refused where bf16 is not native')
    cli.add_runner_args(parser)
    return cli.parse_args(parser)


def enable_visualization(cfg, show_dir: str) -> None:
    """Turn on the config's visualization hook, saving into ``show_dir`` (made absolute)."""
    if 'visualization' not in (cfg.get('default_hooks') or {}):
        errors.fail("--show-dir needs default_hooks.visualization in the config (mmdet's "
                    "DetVisualizationHook or mmseg's SegVisualizationHook)")
    show_dir = osp.abspath(show_dir)
    if cfg.default_scope == 'mmdet':
        from mmdet.engine.hooks.utils import trigger_visualization_hook
        trigger_visualization_hook(cfg, argparse.Namespace(show=False, show_dir=show_dir))
    else:  # mmseg 1.2 keeps its equivalent inside its tools/test.py
        cfg.default_hooks.visualization.draw = True
        cfg.visualizer.save_dir = show_dir


def enable_tta(cfg) -> None:
    """Wrap the model in the config's TTA model and use its TTA pipeline.

    Detection configs without ``tta_model`` / ``tta_pipeline`` get mmdet's horizontal-flip TTA,
    as mmdet's own tools/test.py does; it merges boxes only, so models with a mask head need
    their own ``tta_model``. Segmentation configs must define both.
    """
    has_model, has_pipeline = 'tta_model' in cfg, 'tta_pipeline' in cfg
    if cfg.default_scope == 'mmseg' and not (has_model and has_pipeline):
        errors.fail("--tta needs tta_model and tta_pipeline in the config (e.g. "
                    "tta_model=dict(type='SegTTAModel') and a TestTimeAug pipeline)")
    if cfg.default_scope == 'mmdet':
        roi_head = cfg.model.get('roi_head') or {}
        if not has_model and (roi_head.get('mask_head') is not None
                              or cfg.model.get('mask_head') is not None):
            errors.fail("--tta: this model predicts masks, which mmdet 3.3's DetTTAModel cannot "
                        'merge; define a tta_model that supports masks in the config or test '
                        'without --tta')
        if not has_model:
            cfg.tta_model = DET_TTA_MODEL
        if not has_pipeline:
            dataset = cfg.test_dataloader.dataset
            while 'dataset' in dataset:
                dataset = dataset.dataset
            pipeline = list(dataset.pipeline)
            pipeline[-1] = dict(
                type='TestTimeAug',
                transforms=[[dict(type='RandomFlip', prob=1.), dict(type='RandomFlip', prob=0.)],
                            [dict(type='PackDetInputs', meta_keys=DET_TTA_META_KEYS)]])
            cfg.tta_pipeline = pipeline
    if cfg.get('tta_test_cfg') is not None:
        cfg.model.test_cfg = cfg.tta_test_cfg
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def main() -> None:
    args = parse_args()
    cfg = cli.load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    checkpoint = cli.existing_checkpoint(args.checkpoint)
    cfg.load_from, cfg.resume = None, False  # loaded below, strictly
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.tta:
        enable_tta(cfg)
    if args.out is not None and cfg.default_scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
    if args.out is not None and cfg.default_scope == 'mmdet' \
            and not args.out.endswith(('.pkl', '.pickle')):
        errors.fail(f'--out {args.out}: mmdet predictions are dumped to a .pkl file')

    with cli.one_line_errors():
        if args.bf16:
            precision.use_bf16(cfg, 'cuda' if torch.cuda.is_available() else 'cpu')
        runner = cli.build_runner(cfg)
        if args.out is not None and cfg.default_scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        runner.load_checkpoint(checkpoint, strict=True)
        with frozen_weights(runner.model):  # the backbone casts and packs its weights once
            metrics = runner.test()

    if is_main_process():
        path = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump({k: v.tolist() if hasattr(v, 'tolist') else v
                       for k, v in (metrics or {}).items()}, f, indent=2)
        print_log(f'Test metrics written to {osp.abspath(path)}', logger='current')
    if close_process_group():
        exit_process(0)


if __name__ == '__main__':
    main()
