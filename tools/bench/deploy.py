"""``--deploy``: end-to-end inference per image of a deployed model: PyTorch beside our ONNX export
in ONNX Runtime and OpenVINO, through the same test step.

For each task (:data:`DEPLOY`: Mask R-CNN ConvNeXt-T at 800x1216, UperNet ConvNeXt-T at 512x683,
the size the ADE20K test pipeline gives a 4:3 image) the config's model gets random weights
(:func:`confident_`: detections pass the score threshold, as a trained model's do), is exported
once with the package's export into a temporary folder, and the same synthetic image is run by

- ``PyTorch fp32``: ``model.test_step``, as ``tools/test.py`` runs it (inside
  ``frozen_weights``: the backbone's weights cast and packed once);
- ``PyTorch bf16``: the same under bf16 autocast with the model prepared as
  ``tools/test.py --bf16`` prepares it (:func:`convnext_backbone.precision.prepare_bf16`);
- ``ONNX Runtime fp32``, ``OpenVINO f32``, ``OpenVINO bf16``: ``test_step`` of the exported
  model that ``tools/test_onnx.py`` evaluates (:func:`convnext_backbone.deploy.runtime.
  runtime_model`: the graph, and mmdet's rescaling and mask pasting at the original size, or
  mmseg's sliding windows and resize around it),

each with ``--threads`` threads, in interleaved rounds (:func:`~.common.interleaved`). Every row
runs the data preprocessor, the network and the post-processing that ``tools/test.py`` /
``tools/test_onnx.py`` run per image; loading and resizing the image (the same for all) is left
out. The bf16 rows are timed where ``--dtypes`` holds bf16 (by default where the CPU has native
bf16). A runtime that is not installed is left out in one line. ``open s`` is the time to open
an exported model once (ONNX Runtime's session, OpenVINO's read and compile of the file).
"""
import argparse
import contextlib
import functools
import os.path as osp
import tempfile
import time
from typing import Any, Callable, Dict, List

import numpy as np
import torch
from torch import nn

from convnext_backbone import cli, frozen_weights

from .common import all_ok, autocast, interleaved, print_table, randomise_
from .models import bf16_model, synthetic_batch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
#: task -> (config, test image (H, W)).
DEPLOY = {'det': ('configs/mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py', (800, 1216)),
          'seg': ('configs/upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py', (512, 683))}
#: The exported rows: name -> (runtime, precision, the ``--dtypes`` entry it needs).
RUNTIME_ROWS = {'ONNX Runtime fp32': ('onnxruntime', 'f32', 'fp32'),
                'OpenVINO f32': ('openvino', 'f32', 'fp32'),
                'OpenVINO bf16': ('openvino', 'bf16', 'bf16')}


def confident_(model: nn.Module) -> nn.Module:
    """Make random weights predict like trained ones where it changes the work done: the box
    classifier's weights times 5 (a random one gives each of COCO's 80 classes a score near 1/81,
    below the 0.05 threshold: no detection would reach the mask head) and the mask logits' times
    30 (masks not all near 0.5), as ``tests/test_onnx.py``'s ``random_model``.

    Args:
        model (nn.Module): A detector or segmentor (a segmentor is left as it is).

    Returns:
        nn.Module: ``model``.
    """
    roi_head = getattr(model, 'roi_head', None)
    if roi_head is None:
        return model
    with torch.no_grad():
        heads = roi_head.bbox_head if isinstance(roi_head.bbox_head, nn.ModuleList) \
            else [roi_head.bbox_head]
        for head in heads:
            head.fc_cls.weight.mul_(5)
        if roi_head.with_mask:
            masks = roi_head.mask_head if isinstance(roi_head.mask_head, nn.ModuleList) \
                else [roi_head.mask_head]
            for head in masks:
                head.conv_logits.weight.mul_(30)
    return model


def _exported(cfg: Any, path: str, runtime: str, precision: str, threads: int) -> nn.Module:
    """The exported model of ``tools/test_onnx.py`` (:func:`runtime_model`), built."""
    from mmengine.registry import MODELS, init_default_scope

    from convnext_backbone.deploy.runtime import runtime_model
    init_default_scope(cfg.default_scope)
    return MODELS.build(runtime_model(cfg, path, threads, runtime, precision))


def _summary(scope: str, result: Any) -> Dict[str, np.ndarray]:
    """What a test step predicted: boxes and labels, or the label map."""
    if scope == 'mmseg':
        return dict(label_map=result.pred_sem_seg.data.numpy())
    inst = result.pred_instances
    return dict(boxes=inst.bboxes.float().numpy(), labels=inst.labels.numpy())


def _agreement(scope: str, out: Dict[str, np.ndarray], ref: Dict[str, np.ndarray]) -> float:
    """Pixels with the reference's label, or reference detections found again (same label,
    IoU > 0.9), as a fraction."""
    if scope == 'mmseg':
        return float((out['label_map'] == ref['label_map']).mean())
    a, b = ref['boxes'], out['boxes']
    if len(a) == 0 or len(b) == 0:
        return float(len(a) == len(b))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    iou = inter / ((a[:, 2:] - a[:, :2]).prod(-1)[:, None]
                   + (b[:, 2:] - b[:, :2]).prod(-1)[None] - inter + 1e-9)
    iou[ref['labels'][:, None] != out['labels'][None]] = 0
    return float((iou.max(1) > 0.9).mean())


def bench_deploy(args: argparse.Namespace) -> bool:
    """End-to-end inference per image of each task of ``args.deploy``: PyTorch fp32 / bf16,
    ONNX Runtime fp32, OpenVINO f32 / bf16.

    Args:
        args (argparse.Namespace): The benchmark's options (``deploy``, ``shape``, ``threads``,
            ``dtypes``, ``warmup``, ``repeat``).

    Returns:
        bool: False when a float32 runtime's prediction disagrees with PyTorch's fp32 (fewer
        than 99 % of the detections found again, or of the pixels with the same label).
    """
    return all_ok(args.deploy, lambda task: bench_deploy_task(task, args))


def bench_deploy_task(task: str, args: argparse.Namespace) -> bool:
    """One task of :func:`bench_deploy`.

    Args:
        task (str): A key of :data:`DEPLOY`.
        args (argparse.Namespace): The benchmark's options.

    Returns:
        bool: As :func:`bench_deploy`.
    """
    from convnext_backbone.deploy import build_graph, export_onnx
    from convnext_backbone.deploy.session import DeployError, check_runtime
    config, default_shape = DEPLOY[task]
    h, w = args.shape or default_shape
    cfg = cli.read_config(osp.join(ROOT, config))
    scope = cfg.get('default_scope')
    torch.manual_seed(0)
    model = confident_(randomise_(cli.build_model(cfg)))
    batch = synthetic_batch(scope, (h, w), 1, train=False)
    runs: Dict[str, Callable[[], Any]] = {}
    opened: Dict[str, float] = {}  # seconds to open each exported model (session, compile)

    def pytorch(module: nn.Module, dtype: str) -> Any:
        with torch.no_grad(), autocast(dtype):
            return module.test_step(batch)[0]

    pytorch_models = {'PyTorch fp32': (model, 'fp32')}
    if 'bf16' in args.dtypes:
        pytorch_models['PyTorch bf16'] = (bf16_model(model), 'bf16')
    runs.update((name, functools.partial(pytorch, module, dtype))
                for name, (module, dtype) in pytorch_models.items())
    wanted: List[str] = []
    for name, (runtime, precision, dtype) in RUNTIME_ROWS.items():
        if dtype not in args.dtypes:
            continue
        try:
            check_runtime(runtime, precision)
        except DeployError as err:
            print(f'# {name} left out: {err}')
            continue
        wanted.append(name)
    with contextlib.ExitStack() as frozen, \
            tempfile.TemporaryDirectory(prefix='convnext-deploy-') as folder:
        for module, _ in pytorch_models.values():  # as tools/test.py runs them
            frozen.enter_context(frozen_weights(module))
        if wanted:
            path = osp.join(folder, 'model.onnx')
            with torch.no_grad():
                export_onnx(build_graph(model), path, (h, w))
            for name in wanted:
                runtime, precision, _ = RUNTIME_ROWS[name]
                started = time.perf_counter()
                exported = _exported(cfg, path, runtime, precision, args.threads)
                opened[name] = time.perf_counter() - started
                runs[name] = lambda exported=exported: exported.test_step(batch)[0]
        results = {name: _summary(scope, run()) for name, run in runs.items()}
        medians, best = interleaved(runs, args.warmup, args.repeat)
    ref = results['PyTorch fp32']
    ok, rows = True, []
    for name, seconds in medians.items():
        agree = _agreement(scope, results[name], ref)
        if 'bf16' not in name and agree < 0.99:
            ok = False
        found = ('' if scope == 'mmseg' else f'{len(results[name]["boxes"])} detections, ')
        what = 'pixels' if scope == 'mmseg' else 'detections'
        rows.append([name, f'{seconds:.3f}', f'{best[name]:.3f}',
                     f'{medians["PyTorch fp32"] / seconds:.2f}x',
                     f'{opened[name]:.1f}' if name in opened else '',
                     f'{found}{100 * agree:.1f} % of fp32 PyTorch\'s {what}'])
    mode = f", test_cfg.mode={cfg.model.test_cfg.get('mode', 'whole')}" if scope == 'mmseg' \
        else ''
    print_table(f'Deployed end to end, one image ({type(model).__name__} test_step), '
                f'{osp.basename(config)}, 1x3x{h}x{w}{mode}, random weights, {args.threads} '
                f'threads, median of {args.repeat}',
                ['runtime', 'median s', 'best s', 'speed-up vs PyTorch fp32', 'open s',
                 'prediction'], rows)
    return ok
