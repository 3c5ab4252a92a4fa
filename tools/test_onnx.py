"""Evaluate an exported ONNX model with ONNX Runtime or OpenVINO (CPU) on the config's test set.

Usage::

    python tools/test_onnx.py CONFIG FILE.onnx [--runtime onnxruntime|openvino]
        [--precision f32|bf16] [--threads N] [--work-dir DIR] [--cfg-options KEY=VALUE ...]

The same test pipeline, data loader and metric (COCO bbox/segm mAP, mIoU) as ``tools/test.py``
runs; only the model is the runtime's session of FILE.onnx (``convnext_backbone.deploy``), so
the two tools' metrics compare directly. CONFIG is the config the file was exported from.

- ``--runtime onnxruntime`` (default): ONNX Runtime's CPU execution provider, float32.
- ``--runtime openvino``: ``openvino.Core().compile_model(FILE.onnx, 'CPU')`` with
  ``INFERENCE_PRECISION_HINT`` = ``--precision``: ``f32`` (default) or ``bf16`` (where the CPU
  has native bf16: OpenVINO lists ``BF16`` among its ``OPTIMIZATION_CAPABILITIES``).
- ``--threads N``: ONNX Runtime's ``intra_op_num_threads``, OpenVINO's ``INFERENCE_NUM_THREADS``
  (default: the runtime's own, one per core).

Metrics are logged and written to ``<work_dir>/test_metrics.json`` (default work dir:
``./work_dirs/<config name>/<runtime>``, ``.../openvino-bf16`` for bf16).
"""
import argparse
import os.path as osp

# first: it sets how OpenMP threads wait before torch loads (convnext_backbone/openmp.py)
import convnext_backbone  # noqa: F401

# isort: split
from mmengine.fileio import dump
from mmengine.logging import print_log

from convnext_backbone import cli, errors
from convnext_backbone.deploy.runtime import runtime_model
from convnext_backbone.deploy.session import RUNTIMES, DeployError, check_runtime


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Evaluate an exported ONNX model with ONNX Runtime or OpenVINO on the test '
        'set of the config it was exported from (same pipeline and metric as tools/test.py).')
    parser.add_argument('config', help='config file')
    parser.add_argument('onnx', help='.onnx file written by tools/export_onnx.py')
    parser.add_argument('--runtime', choices=tuple(RUNTIMES), default='onnxruntime',
                        help='onnxruntime (default) or openvino')
    parser.add_argument('--precision', default='f32',
                        help='f32 (default) or bf16 (OpenVINO, where the CPU has native bf16)')
    parser.add_argument('--threads', type=int,
                        help="the runtime's intra-op threads (default: its own, one per core)")
    parser.add_argument('--work-dir', help='directory for logs and metrics (default: '
                        './work_dirs/<config name>/<runtime>[-bf16])')
    cli.add_config_args(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.onnx):
        errors.fail(f'ONNX file not found: {args.onnx}')
    try:
        check_runtime(args.runtime, args.precision)
    except DeployError as err:
        errors.fail(str(err))
    cfg = cli.load_config(args.config, args.cfg_options, work_dir=args.work_dir)
    if args.work_dir is None:
        suffix = '' if args.precision == 'f32' else f'-{args.precision}'
        cfg.work_dir = osp.join(cfg.work_dir, args.runtime + suffix)
    try:
        cfg.model = runtime_model(cfg, args.onnx, args.threads, args.runtime, args.precision)
    except ValueError as err:
        errors.fail(str(err), code=1)
    cfg.load_from, cfg.resume = None, False
    with cli.one_line_errors():
        metrics = cli.build_runner(cfg).test()
    path = osp.join(cfg.work_dir, 'test_metrics.json')
    dump(metrics or {}, path, indent=2)  # mmengine's JSON handler writes numpy values as lists
    print_log(f'Test metrics written to {osp.abspath(path)}', logger='current')


if __name__ == '__main__':
    main()
