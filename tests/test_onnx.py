"""ONNX export (convnext_backbone.deploy, tools/export_onnx.py, tools/test_onnx.py), checked
against PyTorch with real ONNX Runtime sessions and OpenVINO compilations (f32 and bf16).

The models are tiny (ConvNeXt 1-1-1-1, 8..64 channels): what is checked (the graph's operators,
its agreement with mmdet / mmseg at sizes other than the traced one) does not depend on their
size. ``CONVNEXT_ONNX_FULL=1`` adds the T-size checks and timings of docs/deploy.md. The
OpenVINO tests skip where openvino is not installed, the bf16 ones where the CPU has no native
bf16 (OpenVINO's ``OPTIMIZATION_CAPABILITIES`` without ``BF16``).
"""
import functools
import importlib.util
import os
import runpy
import sys
import time

import numpy as np
import pytest
import torch
from helpers import ROOT
from mmengine.config import Config

from convnext_backbone import cli
from convnext_backbone.deploy import (
    MIN_OPSET,
    build_graph,
    custom_domain_ops,
    export_onnx,
    onnx_ops,
    ov_session,
    paste_masks,
)
from convnext_backbone.deploy.detector import per_stage
from convnext_backbone.deploy.graphs import AdaptivePool2d, BatchNormInference
from convnext_backbone.deploy.runtime import runtime_model
from convnext_backbone.deploy.session import OnnxGraph, open_session

onnx = pytest.importorskip('onnx')  # the deploy extra

CONFIGS = os.path.join(ROOT, 'configs')
DET_DEMO = os.path.join(CONFIGS, 'demo', 'mask-rcnn_convnext-demo_lite-fpn_shapes.py')
SEG_DEMO = os.path.join(CONFIGS, 'demo', 'upernet_convnext-demo_lite_shapes.py')
MASK_RCNN_T = os.path.join(CONFIGS, 'mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py')
CASCADE_T = os.path.join(CONFIGS, 'cascade-mask-rcnn_convnext-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py')  # noqa: E501
UPERNET_T = os.path.join(CONFIGS, 'upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py')
TINY = dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64])
FULL = os.environ.get('CONVNEXT_ONNX_FULL') == '1'
# the export refuses older torch in one line (tests/test_compat.py checks that refusal)
pytestmark = pytest.mark.skipif(
    not onnx_ops.compat.torch_at_least(onnx_ops.EXPORT_TORCH),
    reason=f'ONNX export needs torch >= {onnx_ops.EXPORT_TORCH} (this is {torch.__version__})')
HAS_OPENVINO = importlib.util.find_spec('openvino') is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO,
                                    reason='openvino not installed (the deploy extra)')
needs_openvino_bf16 = pytest.mark.skipif(
    not HAS_OPENVINO or 'BF16' not in ov_session.cpu_capabilities(
        ov_session.import_openvino().Core()),
    reason="bf16 in OpenVINO needs native bf16 (BF16 in the CPU's OPTIMIZATION_CAPABILITIES)")
#: Each runtime of the test loop, skipped where it is not installed.
RUNTIMES = ['onnxruntime', pytest.param('openvino', marks=needs_openvino)]


# -- models ----------------------------------------------------------------------------------
def tiny_seg_cfg() -> Config:
    cfg = Config.fromfile(SEG_DEMO)
    cfg.model.backbone.arch = TINY
    cfg.model.decode_head.update(in_channels=TINY['dims'], channels=16)
    cfg.model.auxiliary_head.update(in_channels=TINY['dims'][2], channels=8)
    return cfg


def tiny_det_cfg() -> Config:
    cfg = Config.fromfile(DET_DEMO)
    cfg.model.backbone.arch = TINY
    cfg.model.neck.in_channels = TINY['dims']
    return cfg


def tiny_cascade_cfg() -> Config:
    """Cascade Mask R-CNN T's recipe (SyncBN box heads of 4 convs + 1 fc, GIoU, class-specific
    regression, three mask heads) with tiny widths and 8 classes."""
    cfg = Config.fromfile(CASCADE_T)
    cfg.model.backbone.arch = TINY
    cfg.model.neck.update(in_channels=TINY['dims'], out_channels=32)
    cfg.model.rpn_head.update(in_channels=32, feat_channels=32)
    roi = cfg.model.roi_head
    roi.bbox_roi_extractor.out_channels = roi.mask_roi_extractor.out_channels = 32
    for head in roi.bbox_head:
        head.update(in_channels=32, conv_out_channels=32, fc_out_channels=64, num_classes=8)
    roi.mask_head.update(in_channels=32, conv_out_channels=32, num_classes=8)
    return cfg


def random_model(cfg: Config) -> torch.nn.Module:
    """The config's model with random weights, like a trained one in three ways: BatchNorm has
    non-trivial running statistics, the box classifier is confident (a random one gives every
    one of COCO's 80 classes a score near 1/81, below the 0.05 threshold) and mask logits are
    far from 0 (a random mask head's probabilities all sit near the 0.5 threshold, where float
    rounding decides each pixel)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)  # the same weights whichever test builds the module's model first
        model = cli.build_model(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.normal_(0, 0.5, generator=gen)
                module.running_var.uniform_(0.5, 2, generator=gen)
        roi_head = getattr(model, 'roi_head', None)
        if roi_head is not None:
            for head in per_stage(roi_head.bbox_head):
                head.fc_cls.weight.mul_(5)  # scores spread, not saturated at 1 (ties)
        if roi_head is not None and roi_head.with_mask:
            for head in per_stage(roi_head.mask_head):
                head.conv_logits.weight.mul_(30)
    return model


def export(model: torch.nn.Module, path, shape=(160, 224), part='model') -> str:
    export_onnx(build_graph(model, part), str(path), shape)
    return str(path)


# -- PyTorch references ------------------------------------------------------------------------
def bgr(image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) RGB -> BGR, as the data pipeline loads images."""
    return image.flip(0)


def mmdet_predict(model, image: torch.Tensor):
    """mmdet's prediction for one (1, 3, H, W) RGB image, at its size."""
    from mmdet.structures import DetDataSample
    h, w = image.shape[2:]
    sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                         scale_factor=(1., 1.)))
    data = model.data_preprocessor(dict(inputs=[bgr(image[0])], data_samples=[sample]), False)
    with torch.no_grad():
        return model.predict(data['inputs'], data['data_samples'], rescale=False)[0]


def mmseg_logits(model, images: torch.Tensor) -> torch.Tensor:
    """mmseg's ``encode_decode`` logits for (N, 3, H, W) RGB images, at their size."""
    data = model.data_preprocessor(dict(inputs=[bgr(i) for i in images]), False)
    with torch.no_grad():
        return model.encode_decode(data['inputs'], [dict(img_shape=images.shape[2:])])


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a, area_b = (a[:, 2:] - a[:, :2]).prod(-1), (b[:, 2:] - b[:, :2]).prod(-1)
    return inter / (area_a[:, None] + area_b[None] - inter + 1e-9)


def assert_detections_match(ref, boxes, scores, labels, masks=None, unmatched: int = 0) -> int:
    """Same detections as mmdet's ``InstanceData`` ``ref``: matched one to one (same label, box
    within 0.5 px, score within 1e-3), at most ``unmatched`` of them not; binary masks of the
    matched ones IoU > 0.99 (all their pixels together). Returns the number matched.

    A float-rounding difference can decide a near-tie (two proposals at the ``max_per_img``
    cut, two classes in a Cascade stage's argmax) the other way; the one detection it changes
    is then unmatched. The tests' tiny models have none; the T-size check allows 1 %.
    """
    ref_boxes, ref_scores = ref.bboxes.numpy(), ref.scores.numpy()
    ref_labels = ref.labels.numpy()
    boxes, scores, labels = (np.asarray(t) for t in (boxes, scores, labels))
    assert abs(len(boxes) - len(ref_boxes)) <= unmatched and len(ref_boxes) > 0
    close = ((np.abs(boxes[:, None] - ref_boxes[None]).max(-1) <= 0.5)
             & (np.abs(scores[:, None] - ref_scores[None]) <= 1e-3)
             & (labels[:, None] == ref_labels[None]))
    pairs, used = [], set()
    for i in range(len(boxes)):
        j = next((j for j in np.flatnonzero(close[i]) if j not in used), None)
        if j is not None:
            pairs.append((i, j))
            used.add(j)
    assert len(pairs) >= len(ref_boxes) - unmatched, f'{len(pairs)} of {len(ref_boxes)} matched'
    if masks is not None:
        mine, theirs = zip(*pairs)
        ref_masks, masks = ref.masks.numpy()[list(theirs)], np.asarray(masks)[list(mine)]
        inter = (ref_masks & masks).sum((1, 2))
        union = (ref_masks | masks).sum((1, 2))
        assert (union > 0).mean() > 0.5  # most masks are not empty: they are compared
        assert inter.sum() / union.sum() > 0.99
        # each mask: a pixel whose probability is within the box's rounding of 0.5 may flip,
        # which costs a 50-pixel mask 0.02
        assert np.where(union > 0, inter / np.maximum(union, 1), 1).min() > 0.95
    return len(pairs)


# -- exported graphs, once per module ----------------------------------------------------------
def exported(factory, name: str, cfg: Config):
    """A random-weight model of ``cfg`` and its graph, exported once per module."""
    model = random_model(cfg)
    return model, export(model, factory.mktemp(name) / f'{name}.onnx')


@pytest.fixture(scope='module')
def seg(tmp_path_factory):
    return exported(tmp_path_factory, 'seg', tiny_seg_cfg())


@pytest.fixture(scope='module')
def det(tmp_path_factory):
    return exported(tmp_path_factory, 'det', tiny_det_cfg())


@pytest.fixture(scope='module')
def cascade(tmp_path_factory):
    return exported(tmp_path_factory, 'cascade', tiny_cascade_cfg())


@pytest.fixture(scope='module')
def backbone(tmp_path_factory):
    """The backbone exported by tools/export_onnx.py --part backbone from an official
    classification-layout checkpoint."""
    path = tmp_path_factory.mktemp('backbone')
    model = random_model(tiny_seg_cfg())
    torch.save({'model': model.backbone.state_dict()}, path / 'cls.pth')
    cfg_options = ['model.backbone.arch.depths=[1,1,1,1]', 'model.backbone.arch.dims=[8,16,32,64]']
    code, _ = run_tool('export_onnx.py', SEG_DEMO, str(path / 'cls.pth'), '--out',
                       str(path / 'backbone.onnx'), '--part', 'backbone', '--shape', '96', '64',
                       '--cfg-options', *cfg_options)
    assert code == 0
    return model, str(path / 'backbone.onnx')


def run_tool(name: str, *args: str):
    """Run tools/<name> in this process; returns (exit code, stderr of a failure)."""
    argv = sys.argv
    sys.argv = [name, *args]
    try:
        runpy.run_path(os.path.join(ROOT, 'tools', name), run_name='__main__')
    except SystemExit as exit_:
        return exit_.code, ''
    finally:
        sys.argv = argv
    return 0, ''


# -- agreement with PyTorch --------------------------------------------------------------------
@pytest.mark.parametrize('batch,height,width', [(2, 160, 224), (1, 100, 150), (3, 64, 64)])
def test_segmentor_logits_and_label_map_match_mmseg_at_any_size(seg, batch, height, width):
    model, path = seg
    images = torch.rand(batch, 3, height, width) * 255
    ref = mmseg_logits(model, images)
    out = OnnxGraph(path, threads=1)(images)
    assert out['seg_logits'].shape == ref.shape
    assert ((out['seg_logits'] - ref).abs().max() / ref.abs().max()).item() < 1e-4
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4  # pixels where the argmax is not a near-tie
    assert out['label_map'].dtype == torch.int64
    assert torch.equal(out['label_map'][clear], ref.argmax(1)[clear])


@pytest.mark.parametrize('which', ['det', 'cascade'])
@pytest.mark.parametrize('height,width', [(160, 224), (181, 130)])
def test_detector_outputs_match_mmdet_predict_at_any_size(request, which, height, width):
    model, path = request.getfixturevalue(which)
    image = torch.rand(1, 3, height, width) * 255
    ref = mmdet_predict(model, image).pred_instances
    out = OnnxGraph(path, threads=1)(image)
    assert out['masks'].shape[1:] == (height, width) and out['labels'].dtype == torch.int64
    assert_detections_match(ref, out['boxes'], out['scores'], out['labels'],
                            out['masks'] >= model.test_cfg.rcnn.mask_thr_binary)


def test_backbone_outputs_match_the_backbone_on_normalised_input(backbone):
    model, path = backbone
    images = torch.rand(2, 3, 100, 70) * 255
    data = model.data_preprocessor(dict(inputs=[bgr(i) for i in images]), False)
    with torch.no_grad():
        ref = model.backbone(data['inputs'])
    out = OnnxGraph(path, threads=1)(images)
    assert list(out) == [f'stage{i}' for i in range(4)]
    for got, want in zip(out.values(), ref):
        assert got.shape == want.shape
        assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4


# -- OpenVINO: f32 as PyTorch, bf16 close --------------------------------------------------------
def openvino(path: str, precision: str = 'f32'):
    return open_session(path, 'openvino', threads=1, precision=precision)


@needs_openvino
@pytest.mark.parametrize('batch,height,width', [(2, 160, 224), (1, 100, 150), (3, 64, 64)])
def test_openvino_f32_segmentor_matches_mmseg_as_onnxruntime_does(seg, batch, height, width):
    """The same tolerance as ONNX Runtime's: float32 throughout, only the order of the sums
    differs (measured rel. err ~1e-6)."""
    model, path = seg
    images = torch.rand(batch, 3, height, width) * 255
    ref = mmseg_logits(model, images)
    out = openvino(path)(images)
    assert out['seg_logits'].shape == ref.shape
    assert ((out['seg_logits'] - ref).abs().max() / ref.abs().max()).item() < 1e-4
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-4
    assert out['label_map'].dtype == torch.int64
    assert torch.equal(out['label_map'][clear], ref.argmax(1)[clear])


@needs_openvino
@pytest.mark.parametrize('which', ['det', 'cascade'])
@pytest.mark.parametrize('height,width', [(160, 224), (181, 130)])
def test_openvino_f32_detector_matches_mmdet_as_onnxruntime_does(request, which, height, width):
    """NonMaxSuppression, RoiAlign and the dynamic detection count run in OpenVINO as in ONNX
    Runtime: the same detections one to one, within the same tolerances."""
    model, path = request.getfixturevalue(which)
    image = torch.rand(1, 3, height, width) * 255
    ref = mmdet_predict(model, image).pred_instances
    out = openvino(path)(image)
    assert out['masks'].shape[1:] == (height, width) and out['labels'].dtype == torch.int64
    assert_detections_match(ref, out['boxes'], out['scores'], out['labels'],
                            out['masks'] >= model.test_cfg.rcnn.mask_thr_binary)


@needs_openvino_bf16
@pytest.mark.parametrize('batch,height,width', [(2, 160, 224), (1, 100, 150), (3, 64, 64)])
def test_openvino_bf16_segmentor_is_close_to_mmseg(seg, batch, height, width):
    """bf16 keeps 8 significant bits: PyTorch's own bf16 autocast (tools/test.py --bf16) gave
    this model logits rel. err 0.95-1.4e-2, OpenVINO bf16 0.96-1.2e-2. Below 3e-2 (twice
    that), a pixel whose top two logits differ by more than 2 x 3e-2 x max|logit| cannot
    change its label; over all pixels >= 98 % agree (measured 99.2-99.6 %)."""
    model, path = seg
    images = torch.rand(batch, 3, height, width) * 255
    ref = mmseg_logits(model, images)
    out = openvino(path, 'bf16')(images)
    scale = ref.abs().max()
    assert ((out['seg_logits'] - ref).abs().max() / scale).item() < 3e-2
    top2 = ref.topk(2, dim=1).values
    clear = (top2[:, 0] - top2[:, 1]) > 6e-2 * scale
    assert clear.float().mean() > 0.5  # most pixels are compared
    assert torch.equal(out['label_map'][clear], ref.argmax(1)[clear])
    assert (out['label_map'] == ref.argmax(1)).float().mean() >= 0.98


@needs_openvino_bf16
@pytest.mark.parametrize('height,width', [(160, 224), (181, 130)])
def test_openvino_bf16_detector_is_close_to_mmdet(det, height, width):
    """bf16 moves boxes and scores a little and may swap near-ties at the score threshold and
    max_per_img. PyTorch's own bf16 (float32 output layers) against its float32, on this
    model at 160x224 and 800x1216: 85-95 % of the detections found again with the same label
    at IoU > 0.9, median box error 0.24-0.32 px, median score error 0.010-0.018, masks of
    those IoU 0.82-0.90 (this random mask head's logits are scaled up 30 times); OpenVINO bf16
    80-90 %, 0.27-0.30 px, 0.009-0.025, 0.83-0.87. The bounds: >= 75 %, < 1 px, < 0.05,
    > 0.75."""
    model, path = det
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(3)) * 255
    ref = mmdet_predict(model, image).pred_instances
    out = openvino(path, 'bf16')(image)
    iou = box_iou(ref.bboxes.numpy(), out['boxes'].numpy())
    iou[ref.labels.numpy()[:, None] != out['labels'].numpy()[None]] = 0
    best, found = iou.max(1), iou.argmax(1)
    kept = best > 0.9
    assert len(ref.bboxes) >= 10 and kept.mean() >= 0.75, f'{kept.sum()} of {len(kept)}'
    boxes_err = np.abs(out['boxes'].numpy()[found[kept]] - ref.bboxes.numpy()[kept]).max(1)
    scores_err = np.abs(out['scores'].numpy()[found[kept]] - ref.scores.numpy()[kept])
    assert np.median(boxes_err) < 1 and np.median(scores_err) < 0.05
    masks, ref_masks = out['masks'].numpy()[found[kept]] >= 0.5, ref.masks.numpy()[kept]
    assert (masks & ref_masks).sum() / (masks | ref_masks).sum() > 0.75


@needs_openvino_bf16
def test_openvino_bf16_pastes_the_masks_in_float32(det):
    """In bf16 OpenVINO computes the graph's mask pasting (two MatMuls fed by pixel
    coordinates) in bf16: at 800x1216 its masks overlapped the float32 pasting of the same
    probabilities by IoU 0.76. The session pastes ``mask_probs`` itself (ov_session's note)."""
    _, path = det
    image = torch.rand(1, 3, 800, 1216, generator=torch.Generator().manual_seed(3)) * 255
    session = openvino(path, 'bf16')
    out = session(image)
    assert out['masks'].shape == (len(out['boxes']), 800, 1216)
    assert (out['masks'] >= 0.5).any(dim=(1, 2)).float().mean() > 0.5  # masks to compare
    pasted = paste_masks(out['mask_probs'], out['boxes'], 800, 1216)
    assert (out['masks'] - pasted).abs().max() < 1e-5


@needs_openvino
@pytest.mark.parametrize('precision', ['f32', pytest.param('bf16', marks=needs_openvino_bf16)])
def test_openvino_session_compiles_with_the_threads_and_precision_asked(seg, precision):
    session = open_session(seg[1], 'openvino', threads=1, precision=precision)
    assert session.compiled.get_property('INFERENCE_NUM_THREADS') == 1
    assert session.compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name() == precision
    assert session.describe().startswith('OpenVINO 20')
    assert f'{precision}, threads 1' in session.describe()


# -- what is in the graphs ---------------------------------------------------------------------
@pytest.mark.parametrize('which', ['seg', 'det', 'cascade', 'backbone'])
def test_exported_graph_has_only_standard_onnx_operators(request, which):
    _, path = request.getfixturevalue(which)
    model = onnx.load(path)
    onnx.checker.check_model(model)
    assert custom_domain_ops(model) == []
    assert all(o.version >= MIN_OPSET for o in model.opset_import if o.domain in ('', 'ai.onnx'))
    ops = {n.op_type for n in model.graph.node}
    # one LayerNormalization per LayerNorm: no decomposed ReduceMean/Pow/Sqrt LayerNorm
    assert 'LayerNormalization' in ops and 'Pow' not in ops
    if which in ('det', 'cascade'):
        assert {'NonMaxSuppression', 'RoiAlign'} <= ops
        roi_align = next(n for n in model.graph.node if n.op_type == 'RoiAlign')
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in roi_align.attribute}
        assert attrs['coordinate_transformation_mode'] == b'half_pixel'  # mmcv aligned=True


def test_custom_domain_ops_finds_operators_in_subgraphs_and_functions():
    from onnx import TensorProto, helper
    inner = helper.make_graph([helper.make_node('RoIAlign', ['x'], ['y'], domain='mmcv')],
                              'then', [], [helper.make_tensor_value_info('y', TensorProto.FLOAT,
                                                                         None)])
    nodes = [helper.make_node('If', ['c'], ['y'], then_branch=inner, else_branch=inner),
             helper.make_node('Helper', ['y'], ['z'], domain='local')]
    graph = helper.make_graph(nodes, 'g', [helper.make_tensor_value_info('c', TensorProto.BOOL,
                                                                         [])],
                              [helper.make_tensor_value_info('z', TensorProto.FLOAT, None)])
    function = helper.make_function('local', 'Helper', ['a'], ['b'],
                                     [helper.make_node('TRTPlugin', ['a'], ['b'],
                                                       domain='trt')],
                                     [helper.make_opsetid('', 18)])
    model = helper.make_model(graph, functions=[function])
    assert sorted(custom_domain_ops(model)) == ['local::Helper', 'mmcv::RoIAlign',
                                               'mmcv::RoIAlign', 'trt::TRTPlugin']


# -- the pieces written for export, against what they replace -----------------------------------
@pytest.mark.parametrize('size,out', [((13, 9), 6), ((2, 3), 6), ((7, 7), 3), ((5, 8), (2, 3))])
def test_adaptive_pool_equals_torch_adaptive_avg_pool(size, out):
    x = torch.randn(2, 3, *size)
    assert torch.allclose(AdaptivePool2d(out)(x), torch.nn.AdaptiveAvgPool2d(out)(x), atol=1e-6)


def test_batch_norm_inference_equals_batch_norm_in_eval_mode():
    bn = torch.nn.BatchNorm2d(5).eval()
    with torch.no_grad():
        bn.running_mean.normal_(), bn.running_var.uniform_(0.5, 2)
        bn.weight.normal_(), bn.bias.normal_()
    x = torch.randn(3, 5, 4, 6)
    assert torch.allclose(BatchNormInference(bn)(x), bn(x), atol=1e-5)


def test_paste_masks_equals_mmdet_paste_with_grid_sample():
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask
    gen = torch.Generator().manual_seed(0)
    probs = torch.rand(6, 1, 28, 28, generator=gen)
    boxes = torch.tensor([[3., 4., 40., 30.], [-5., 10., 20., 70.], [50., 2., 63.5, 9.],
                          [10., 10., 10.5, 40.], [0., 0., 64., 48.], [30., 20., 90., 60.]])
    ref, _ = _do_paste_mask(probs, boxes, 48, 64, skip_empty=False)
    assert torch.allclose(paste_masks(probs[:, 0], boxes, 48, 64), ref, atol=1e-5)


# -- exported models in mmengine's test loop, in each runtime ------------------------------------
@pytest.fixture(scope='module')
def tiny_data(tmp_path_factory):
    import make_demo_data  # tools/
    out = tmp_path_factory.mktemp('data')
    make_demo_data.make_coco(str(out / 'coco'), {'val': 3}, size=96, max_objects=3)
    make_demo_data.make_ade(str(out / 'ade'), {'validation': 2}, size=96)
    return out


def loader_of(cfg: Config):
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    init_default_scope(cfg.default_scope)
    return Runner.build_dataloader(cfg.test_dataloader)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_exported_detector_predicts_like_mmdet_on_rescaled_images(det, tiny_data, runtime):
    from mmengine.registry import MODELS
    model, path = det
    cfg = tiny_det_cfg()
    cfg.test_dataloader.dataset.update(data_root=str(tiny_data / 'coco') + '/',
                                       ann_file='annotations/instances_val.json',
                                       data_prefix=dict(img='val/'))
    cfg.test_dataloader.dataset.pipeline[1].scale_factor = 1.5  # boxes and masks scale back
    loader = loader_of(cfg)  # sets the config's default scope, which the build needs
    exported_model = MODELS.build(runtime_model(cfg, path, threads=1, runtime=runtime))
    assert exported_model.graph.runtime == runtime
    for batch in loader:
        with torch.no_grad():
            refs = model.test_step(batch)
        outs = exported_model.test_step(batch)
        for ref, out in zip(refs, outs):
            assert out.pred_instances.masks.shape[1:] == ref.ori_shape
            inst = out.pred_instances
            assert_detections_match(ref.pred_instances, inst.bboxes, inst.scores, inst.labels,
                                    inst.masks)


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_exported_segmentor_runs_mmseg_sliding_windows_around_the_graph(seg, tiny_data, runtime):
    from mmengine.registry import MODELS
    model, path = seg
    cfg = tiny_seg_cfg()
    cfg.test_dataloader.dataset.data_root = str(tiny_data / 'ade')
    cfg.model.test_cfg = dict(mode='slide', crop_size=(64, 64), stride=(40, 40))
    model.test_cfg = cfg.model.test_cfg
    loader = loader_of(cfg)  # sets the config's default scope, which the build needs
    exported_model = MODELS.build(runtime_model(cfg, path, threads=1, runtime=runtime))
    assert exported_model.graph.runtime == runtime
    for batch in loader:
        with torch.no_grad():
            refs = model.test_step(batch)
        for ref, out in zip(refs, exported_model.test_step(batch)):
            logits, want = out.seg_logits.data, ref.seg_logits.data
            assert logits.shape == want.shape == (8, 96, 96)
            assert ((logits - want).abs().max() / want.abs().max()).item() < 1e-4
            assert (out.pred_sem_seg.data == ref.pred_sem_seg.data).float().mean() > 0.999


def test_the_earlier_onnx_runtime_model_names_build_the_exported_models():
    """Configs written with the names of the ONNX Runtime-only models still build."""
    from mmengine.registry import MODELS

    from convnext_backbone.deploy.exported_detector import ExportedDetector
    from convnext_backbone.deploy.exported_segmentor import ExportedSegmentor
    assert MODELS.get('convnext_backbone.ONNXRuntimeDetector') is ExportedDetector
    assert MODELS.get('convnext_backbone.ONNXRuntimeSegmentor') is ExportedSegmentor


# -- the tools' errors -------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo_seg_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp('ckpt') / 'seg.pth'
    torch.save({'state_dict': cli.build_model(Config.fromfile(SEG_DEMO)).state_dict()}, path)
    return str(path)


@pytest.mark.parametrize('args,message', [
    (['--opset', '17'], 'opset 17: use >= 18'),
    (['--shape', '48', '300'], 'shape 48x300: this graph needs height and width >= 64'),
])
def test_export_tool_refuses_bad_options_in_one_line(demo_seg_checkpoint, tmp_path, capfd,
                                                       args, message):
    out = tmp_path / 'x.onnx'
    code, _ = run_tool('export_onnx.py', SEG_DEMO, demo_seg_checkpoint, '--out', str(out),
                       *args)
    err = capfd.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert err.startswith(f'export_onnx.py: error: {message}')
    assert not out.exists()


def test_export_tool_names_an_unsupported_test_nms(tmp_path, capfd):
    checkpoint = tmp_path / 'det.pth'
    torch.save({'state_dict': cli.build_model(tiny_det_cfg()).state_dict()}, checkpoint)
    code, _ = run_tool('export_onnx.py', DET_DEMO, str(checkpoint), '--out',
                       str(tmp_path / 'x.onnx'), '--cfg-options',
                       'model.backbone.arch.depths=[1,1,1,1]',
                       'model.backbone.arch.dims=[8,16,32,64]',
                       'model.neck.in_channels=[8,16,32,64]',
                       'model.test_cfg.rcnn.nms.type=soft_nms')
    err = capfd.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert "test_cfg.rcnn.nms={'type': 'soft_nms'" in err and "nms=dict(type='nms'" in err


def test_test_tool_refuses_a_graph_of_the_other_task(seg, capfd):
    code, _ = run_tool('test_onnx.py', DET_DEMO, seg[1])
    err = capfd.readouterr().err.strip().splitlines()[-1]
    assert code == 1
    assert f'{seg[1]} holds a segmentor graph; this needs a detector graph' in err


def tool_error(capfd) -> str:
    """The tool's whole stderr, which must be its one error line."""
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines  # no traceback, no usage
    return lines[0]


@pytest.mark.parametrize('args,message', [
    (['--runtime', 'openvino', '--precision', 'fp16'], '--precision fp16: use one of f32, bf16'),
    (['--precision', 'bf16'], '--precision bf16: ONNX Runtime runs the float32 graph in float32 '
     'only; use --runtime openvino for bf16, or --precision f32'),
])
def test_test_tool_refuses_a_precision_its_runtime_has_not_in_one_line(seg, capfd, args,
                                                                       message):
    code, _ = run_tool('test_onnx.py', SEG_DEMO, seg[1], *args)
    assert code == 2
    assert tool_error(capfd) == f'test_onnx.py: error: {message}'


@needs_openvino
def test_test_tool_refuses_openvino_bf16_without_native_bf16(seg, capfd, monkeypatch):
    monkeypatch.setattr(ov_session, 'cpu_capabilities', lambda core: ['FP32', 'INT8', 'BIN'])
    code, _ = run_tool('test_onnx.py', SEG_DEMO, seg[1], '--runtime', 'openvino',
                       '--precision', 'bf16')
    assert code == 2
    assert tool_error(capfd) == (
        'test_onnx.py: error: --precision bf16: this CPU has no native bf16 (OpenVINO lists its '
        'CPU capabilities as FP32, INT8, BIN, without BF16); use --precision f32')


def test_test_tool_names_the_pip_command_when_openvino_is_missing(seg, capfd, monkeypatch):
    monkeypatch.setitem(sys.modules, 'openvino', None)  # import openvino raises ImportError
    code, _ = run_tool('test_onnx.py', SEG_DEMO, seg[1], '--runtime', 'openvino')
    assert code == 2
    assert tool_error(capfd) == (
        'test_onnx.py: error: --runtime openvino: the openvino package is not installed; pip '
        'install openvino (or the deploy extra: pip install -e ".[deploy]")')


@pytest.mark.parametrize('runtime', RUNTIMES)
def test_test_tool_refuses_a_missing_file_in_one_line(tmp_path, capfd, runtime):
    missing = str(tmp_path / 'model.onnx')
    code, _ = run_tool('test_onnx.py', SEG_DEMO, missing, '--runtime', runtime)
    assert code == 2
    assert tool_error(capfd) == f'test_onnx.py: error: ONNX file not found: {missing}'


# -- full size (CONVNEXT_ONNX_FULL=1; the figures of docs/deploy.md) ------------------------------
@pytest.mark.skipif(not FULL, reason='T-size export and timing: set CONVNEXT_ONNX_FULL=1')
@pytest.mark.parametrize('config', [MASK_RCNN_T, CASCADE_T, UPERNET_T])
def test_full_size_t_model_matches_pytorch_at_two_sizes(config, tmp_path):
    """Random-weight T models at 512x683 and 800x1216: the agreement, and the time of one
    image with PyTorch (as tools/test.py runs it) and with ONNX Runtime, both on 2 threads
    (median of 3 runs, interleaved, after one warm-up run each)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        cfg = Config.fromfile(config)
        model = random_model(cfg)
        started = time.perf_counter()
        path = export(model, tmp_path / 'model.onnx', shape=(512, 683))
        print(f'\n{os.path.basename(config)}: export {time.perf_counter() - started:.0f} s, '
              f'{os.path.getsize(path) / 2**20:.0f} MiB')
        graph = OnnxGraph(path, threads=2)
        for height, width in ((512, 683), (800, 1216)):
            gen = torch.Generator().manual_seed(2)
            image = torch.rand(1, 3, height, width, generator=gen) * 255
            runs = {'pytorch': functools.partial(
                        mmseg_logits if cfg.default_scope == 'mmseg' else mmdet_predict,
                        model, image),
                    'onnxruntime': functools.partial(graph, image)}
            ref, out = runs['pytorch'](), runs['onnxruntime']()
            if cfg.default_scope == 'mmseg':
                err = ((out['seg_logits'] - ref).abs().max() / ref.abs().max()).item()
                assert err < 1e-4
                found = f'logits rel. err {err:.1e}'
            else:
                ref = ref.pred_instances
                matched = assert_detections_match(ref, out['boxes'], out['scores'],
                                                  out['labels'], out['masks'] >= 0.5,
                                                  unmatched=len(ref.bboxes) // 100)
                found = f'{matched} of {len(ref.bboxes)} detections matched'
            times = {'pytorch': [], 'onnxruntime': []}
            for _ in range(3):
                for name, run in runs.items():
                    started = time.perf_counter()
                    run()
                    times[name].append(time.perf_counter() - started)
            print(f'  {height}x{width}: {found}; PyTorch {np.median(times["pytorch"]):.2f} s, '
                  f'ONNX Runtime {np.median(times["onnxruntime"]):.2f} s')
    finally:
        torch.set_num_threads(threads)


DEMO_WORK = os.environ.get('CONVNEXT_ONNX_DEMO')  # e.g. work_dirs/demo, after bash tools/demo.sh


@pytest.mark.skipif(not DEMO_WORK, reason='set CONVNEXT_ONNX_DEMO=<demo work dir> after '
                    'bash tools/demo.sh (its data in data/)')
@pytest.mark.parametrize('task,config,images', [
    ('det', DET_DEMO, 'demo_coco/val'), ('seg', SEG_DEMO, 'demo_ade/images/validation')])
def test_demo_model_matches_pytorch_on_val_images_at_two_sizes(task, config, images):
    """The demo's trained model and its exported graph (``<work>/<task>/model.onnx``) on the
    first 3 validation images at their size and resized to 240x320."""
    import cv2

    from convnext_backbone.checkpoint import load_state_strictly, read_checkpoint, unwrap_state_dict
    work = os.path.join(DEMO_WORK, task)
    model = cli.build_model(Config.fromfile(config))
    with open(os.path.join(work, 'last_checkpoint')) as f:
        checkpoint = f.read().strip()
    load_state_strictly(model, unwrap_state_dict(read_checkpoint(checkpoint)), checkpoint,
                        config)
    graph = OnnxGraph(os.path.join(work, 'model.onnx'), threads=1)
    folder = os.path.join(os.environ.get('DATA_DIR', 'data'), images)
    for name in sorted(os.listdir(folder))[:3]:
        rgb = cv2.imread(os.path.join(folder, name))[:, :, ::-1]
        for image in (rgb, cv2.resize(rgb, (320, 240))):
            x = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].float()
            out = graph(x)
            if task == 'seg':
                ref = mmseg_logits(model, x)
                assert ((out['seg_logits'] - ref).abs().max() / ref.abs().max()).item() < 1e-4
                assert torch.equal(out['label_map'], ref.argmax(1))
            else:
                ref = mmdet_predict(model, x).pred_instances
                assert_detections_match(ref, out['boxes'], out['scores'], out['labels'],
                                        out['masks'] >= 0.5)
