"""Test (evaluate) an mmdet 3.x detector or mmseg 1.x segmentor checkpoint with mmengine's Runner.

Usage::

    python tools/test.py CONFIG CHECKPOINT [--tta] [--show-dir DIR] [--out FILE_OR_DIR]
        [--work-dir DIR] [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm]
    bash tools/dist_test.sh CONFIG CHECKPOINT NUM_GPUS [ARGS ...]

The checkpoint is loaded strictly: every weight of the model must be in the file with the right
shape, or the run stops with the list of mismatches. Official fine-tuned checkpoints of the
mmdet 2.x / mmseg 0.x era load as they are (see tools/convert_mmdet2_checkpoint.py and
README.md, "COCO detection"). The metrics are logged and written to
``<work_dir>/test_metrics.json``.
"""
import argparse
import json
import logging
import os
import os.path as osp
import sys
from typing import List, Optional

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from mmengine.config import Config, ConfigDict  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from train import add_common_args, fail, load_config, prepare, user_errors  # noqa: E402

# mmdet's default flip TTA (used when a detection config has no tta_model / tta_pipeline).
DET_TTA_MODEL = dict(type='DetTTAModel',
                     tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
DET_TTA_META_KEYS = ('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip',
                     'flip_direction')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line of test.py."""
    parser = argparse.ArgumentParser(
        description='Evaluate a checkpoint of an mmdet detector or mmseg segmentor (the '
        'config\'s default_scope decides) on the config\'s test set.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file or URL (loaded strictly)')
    parser.add_argument(
        '--tta', action='store_true',
        help='test-time augmentation from the config\'s tta_model and tta_pipeline (and '
        'tta_test_cfg, which replaces model.test_cfg, if set). Detection configs without them '
        'get mmdet\'s horizontal-flip TTA (boxes only: mmdet 3.3 cannot merge masks); '
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
    add_common_args(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def enable_visualization(cfg: Config, show_dir: str) -> None:
    """Turn the config's visualization hook on and point it at ``show_dir``.

    Note:
        A relative ``show_dir`` is relative to the current directory for mmdet configs too;
        mmdet's own test.py puts it under ``<work_dir>/<timestamp>/``.
    """
    show_dir = osp.abspath(show_dir)
    hooks = cfg.get('default_hooks') or {}
    if 'visualization' not in hooks:
        fail('--show-dir needs default_hooks.visualization in the config (mmdet\'s '
             'DetVisualizationHook or mmseg\'s SegVisualizationHook)')
    hooks['visualization']['draw'] = True
    if cfg.default_scope == 'mmdet':
        hooks['visualization']['test_out_dir'] = show_dir
    else:
        cfg.visualizer['save_dir'] = show_dir


def enable_tta(cfg: Config) -> None:
    """Wrap the model in the config's TTA model and use its TTA pipeline.

    Detection configs without ``tta_model`` / ``tta_pipeline`` get mmdet's horizontal-flip TTA,
    as mmdet's own test.py does; it merges boxes only, so models with a mask head need their own
    ``tta_model``. Segmentation configs must define both.
    """
    has_model, has_pipeline = 'tta_model' in cfg, 'tta_pipeline' in cfg
    if cfg.default_scope == 'mmseg' and not (has_model and has_pipeline):
        fail('--tta needs tta_model and tta_pipeline in the config (e.g. '
             'tta_model=dict(type=\'SegTTAModel\') and a TestTimeAug pipeline)')
    if cfg.default_scope == 'mmdet':
        roi_head = cfg.model.get('roi_head') or {}
        if not has_model and (roi_head.get('mask_head') is not None
                              or cfg.model.get('mask_head') is not None):
            fail('--tta: this model predicts masks, which mmdet 3.3\'s DetTTAModel cannot merge; '
                 'define a tta_model that supports masks in the config or test without --tta')
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


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of ``tools/test.py``."""
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options, args.launcher, args.work_dir)
    if not osp.isfile(args.checkpoint) and '://' not in args.checkpoint:
        fail(f'checkpoint not found: {args.checkpoint}')
    # Loaded below, strictly; the Runner's own loading (load_from) is not strict.
    cfg.load_from = None
    cfg.resume = False
    if args.show_dir:
        enable_visualization(cfg, args.show_dir)
    if args.tta:
        enable_tta(cfg)
    if args.out is not None and cfg.default_scope == 'mmseg':
        cfg.test_evaluator['output_dir'] = args.out
    if args.out is not None and cfg.default_scope == 'mmdet' and not args.out.endswith(
            ('.pkl', '.pickle')):
        fail(f'--out {args.out}: mmdet predictions are dumped to a .pkl file')

    try:
        runner = prepare(cfg)
        if args.out is not None and cfg.default_scope == 'mmdet':
            from mmdet.evaluation import DumpDetResults
            runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
        runner.load_checkpoint(args.checkpoint, map_location='cpu', strict=True)
        metrics = runner.test()
    except user_errors() as err:
        fail(str(err), code=1)

    if is_main_process():
        path = osp.join(cfg.work_dir, 'test_metrics.json')
        with open(path, 'w', encoding='utf-8') as f:
            json.dump({k: _plain(v) for k, v in (metrics or {}).items()}, f, indent=2)
        print_log(f'Test metrics written to {osp.abspath(path)}', logger='current',
                  level=logging.INFO)


def _plain(value):
    # numpy scalars and arrays -> JSON types
    if hasattr(value, 'tolist'):
        return value.tolist()
    return value


if __name__ == '__main__':
    main()
