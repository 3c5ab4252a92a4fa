"""bf16 inference of whole models (convnext_backbone.precision): mmcv ops and output layers in
float32, the rest under autocast; refused where bf16 is not native."""
import os
import subprocess
import sys

import pytest
import torch
from helpers import ROOT
from torch import nn

from convnext_backbone import machine
from convnext_backbone.precision import Float32, prepare_bf16

DEMO_DET = os.path.join(ROOT, 'configs', 'demo', 'mask-rcnn_convnext-demo_lite-fpn_shapes.py')
DEMO_SEG = os.path.join(ROOT, 'configs', 'demo', 'upernet_convnext-demo_lite_shapes.py')

needs_ops = pytest.mark.skipif(
    subprocess.run([sys.executable, '-c', 'import mmcv.ops, mmdet, mmseg'],
                   capture_output=True).returncode != 0,
    reason='mmcv ops / mmdet / mmseg not installed')
needs_bf16 = pytest.mark.skipif(not machine.native_bf16(),
                                reason=f'{machine.cpu_model()} has no native bf16')


def _model(config):
    from convnext_backbone import cli
    torch.manual_seed(0)
    return cli.build_model(cli.read_config(config))


def test_float32_runs_its_module_in_float32_with_autocast_off():
    seen = []
    linear = nn.Linear(8, 4)
    linear.register_forward_hook(lambda m, i, o: seen.append((i[0].dtype, o.dtype)))
    wrapped = Float32(linear)
    with torch.autocast('cpu', torch.bfloat16):
        out = wrapped(torch.randn(2, 8, dtype=torch.bfloat16))
    assert seen == [(torch.float32, torch.float32)]  # the module's own hooks fire
    assert out.dtype == torch.float32
    assert wrapped.out_features == 4  # the wrapped module's attributes are the wrapper's


def test_float32_cast_back_returns_outputs_in_the_input_dtype():
    wrapped = Float32(nn.Identity(), cast_back=True)
    assert wrapped(torch.randn(3, dtype=torch.bfloat16)).dtype == torch.bfloat16
    assert wrapped(torch.randn(3)).dtype == torch.float32


@needs_ops
def test_prepare_bf16_wraps_mmcv_ops_and_output_layers_once():
    model = _model(DEMO_DET)
    wrapped = prepare_bf16(model)
    assert 'rpn_head.rpn_cls' in wrapped and 'roi_head.bbox_head.fc_reg' in wrapped
    assert 'roi_head.mask_head.conv_logits' in wrapped
    assert any(name.startswith('roi_head.bbox_roi_extractor.roi_layers') for name in wrapped)
    assert not any(name.startswith('backbone') for name in wrapped)
    # mmdet's SingleRoIExtractor reads RoIAlign's output_size through the wrapper
    assert model.roi_head.bbox_roi_extractor.roi_layers[0].output_size == (7, 7)
    assert prepare_bf16(model) == []  # idempotent


def _batch(scope, size):
    from bench.models import synthetic_batch
    return synthetic_batch(scope, (size, size), 1, train=False)


def _fp32_then_bf16(config, scope, size):
    """The config's test_step output on one synthetic image in fp32, then after
    ``prepare_bf16`` under bf16 autocast (random weights, the same model)."""
    model = _model(config)
    batch = _batch(scope, size)
    with torch.no_grad():
        ref = model.test_step(batch)[0]
        prepare_bf16(model)
        with torch.autocast('cpu', torch.bfloat16):
            out = model.test_step(batch)[0]
    return ref, out


@needs_ops
@needs_bf16
def test_mask_rcnn_test_step_runs_in_bf16_with_float32_boxes_close_to_float32():
    ref, out = _fp32_then_bf16(DEMO_DET, 'mmdet', 160)
    ref, out = ref.pred_instances, out.pred_instances
    assert out.bboxes.dtype == torch.float32 and out.scores.dtype == torch.float32
    assert len(out) > 0
    # the best-scoring box of fp32 is found in bf16 within a few pixels
    best = ref.bboxes[ref.scores.argmax()]
    assert (out.bboxes - best).abs().max(dim=1).values.min() < 4.0


@needs_ops
@needs_bf16
def test_upernet_test_step_in_bf16_agrees_with_float32_on_most_pixels():
    ref, out = _fp32_then_bf16(DEMO_SEG, 'mmseg', 128)
    assert out.seg_logits.data.dtype == torch.float32
    agree = (out.pred_sem_seg.data == ref.pred_sem_seg.data).float().mean().item()
    assert agree > 0.95


@needs_ops
def test_test_tool_refuses_bf16_in_one_line_where_onednn_may_not_use_it(tmp_path):
    # ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN below its bf16 kernels on any CPU
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA='AVX2', CUDA_VISIBLE_DEVICES='')
    run = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'tools', 'test.py'), DEMO_DET, __file__, '--bf16',
         '--work-dir', str(tmp_path / 'work')],
        env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and '--bf16' in lines[0] and 'native bf16' in lines[0], run.stderr
