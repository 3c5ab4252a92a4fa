"""The demo: data generator, backbone pretraining, configs and the shortened end-to-end run."""
import filecmp
import json
import os
import subprocess
import sys

import cv2
import make_demo_data
import numpy as np
import pretrain_demo
import pytest
import torch
from helpers import ROOT

DET_CFG = os.path.join(ROOT, 'configs', 'demo', 'mask-rcnn_convnext-demo_lite-fpn_shapes.py')
SEG_CFG = os.path.join(ROOT, 'configs', 'demo', 'upernet_convnext-demo_lite_shapes.py')


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    """Both datasets, small: 12 train / 3 val images each."""
    out = tmp_path_factory.mktemp('demo_data')
    make_demo_data.main(['--out', str(out), '--det-train', '12', '--det-val', '3',
                         '--det-size', '96', '--seg-train', '12', '--seg-val', '3',
                         '--seg-size', '64'])
    return out


def _files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, files in os.walk(root) for f in files)


def test_generator_writes_identical_files_on_every_run(demo_data, tmp_path):
    make_demo_data.main(['--out', str(tmp_path), '--det-train', '12', '--det-val', '3',
                         '--det-size', '96', '--seg-train', '12', '--seg-val', '3',
                         '--seg-size', '64'])
    files = _files(demo_data)
    assert files == _files(tmp_path)
    assert len(files) == 2 + 15 + 2 * 15  # 2 JSON, 15 COCO images, 15 ADE images + 15 PNGs
    different = [f for f in files if not filecmp.cmp(demo_data / f, tmp_path / f, shallow=False)]
    assert different == []


def test_generator_seed_changes_the_images(tmp_path):
    for seed in (0, 1):
        make_demo_data.main(['--out', str(tmp_path / str(seed)), '--which', 'det', '--seed',
                             str(seed), '--det-train', '2', '--det-val', '1', '--det-size', '64'])
    a = cv2.imread(str(tmp_path / '0' / 'demo_coco' / 'train' / '000000.jpg'))
    b = cv2.imread(str(tmp_path / '1' / 'demo_coco' / 'train' / '000000.jpg'))
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 5


@pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')
@pytest.mark.parametrize('split,count', [('train', 12), ('val', 3)])
def test_coco_split_loads_with_pycocotools_and_masks_lie_inside_boxes(demo_data, split, count):
    from pycocotools.coco import COCO
    coco = COCO(str(demo_data / 'demo_coco' / 'annotations' / f'instances_{split}.json'))
    assert len(coco.getImgIds()) == count
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(make_demo_data.SHAPES)
    for img in coco.loadImgs(coco.getImgIds()):
        assert os.path.isfile(demo_data / 'demo_coco' / split / img['file_name'])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img['id']))
        assert len(anns) >= 1
        for ann in anns:
            mask = coco.annToMask(ann)
            assert mask.shape == (img['height'], img['width'])
            ys, xs = np.nonzero(mask)
            x, y, w, h = ann['bbox']
            assert w > 0 and h > 0 and x >= 0 and y >= 0
            assert x + w <= img['width'] and y + h <= img['height']
            # the polygon's mask fills its box (within the half-pixel contour convention)
            assert xs.min() >= x and ys.min() >= y
            assert xs.max() < x + w and ys.max() < y + h
            assert mask.sum() >= 0.7 * ann['area']
            assert ann['iscrowd'] == 0


def test_coco_train_split_has_every_class_and_overlapping_instances(demo_data):
    with open(demo_data / 'demo_coco' / 'annotations' / 'instances_train.json') as f:
        coco = json.load(f)
    assert {a['category_id'] for a in coco['annotations']} == {1, 2, 3, 4}
    boxes = {}
    for ann in coco['annotations']:
        boxes.setdefault(ann['image_id'], []).append(ann['bbox'])
    overlaps = 0
    for found in boxes.values():
        for i, (x1, y1, w1, h1) in enumerate(found):
            for x2, y2, w2, h2 in found[i + 1:]:
                overlaps += (min(x1 + w1, x2 + w2) > max(x1, x2)
                             and min(y1 + h1, y2 + h2) > max(y1, y2))
    assert overlaps >= 3


def test_ade_label_maps_match_images_and_use_every_class(demo_data):
    root = demo_data / 'demo_ade'
    seen = set()
    for split, count in (('training', 12), ('validation', 3)):
        images = sorted(os.listdir(root / 'images' / split))
        labels = sorted(os.listdir(root / 'annotations' / split))
        assert len(images) == len(labels) == count
        for image_name, label_name in zip(images, labels):
            assert image_name.endswith('.jpg') and label_name == image_name[:-4] + '.png'
            image = cv2.imread(str(root / 'images' / split / image_name))
            label = cv2.imread(str(root / 'annotations' / split / label_name),
                               cv2.IMREAD_UNCHANGED)
            assert label.dtype == np.uint8 and label.shape == image.shape[:2]
            assert label.max() <= len(make_demo_data.SEG_CLASSES)
            seen |= set(np.unique(label).tolist())
    # 0 is "other" (ignored with reduce_zero_label), 1..8 the classes
    assert seen == set(range(len(make_demo_data.SEG_CLASSES) + 1))


@pytest.mark.parametrize('kwargs,message', [
    (dict(size=32), 'too small'),
    (dict(counts={'test': 2}), "unknown split 'test'"),
    (dict(counts={'train': 0}), 'count must be >= 1'),
    (dict(max_objects=1), 'max_objects=1'),
])
def test_generator_rejects_bad_options(tmp_path, kwargs, message):
    args = dict(out_dir=str(tmp_path), counts={'train': 1}, size=64, max_objects=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_demo_data.make_coco(**args)


def test_pretraining_writes_an_official_checkpoint_the_backbone_loads(demo_data, tmp_path):
    from convnext_backbone import ConvNeXt
    from convnext_backbone.checkpoint import OFFICIAL_CLS, convert_state_dict, read_checkpoint
    arch = dict(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64])
    out = tmp_path / 'pre.pth'
    pretrain_demo.main(['--arch', json.dumps(arch), '--coco', str(demo_data / 'demo_coco'),
                        '--ade', str(demo_data / 'demo_ade'), '--out', str(out), '--iters', '2',
                        '--batch-size', '4', '--crop', '32', '--warmup', '1', '--threads', '1'])
    ckpt = read_checkpoint(str(out))
    state = ckpt['model']
    assert state['head.weight'].shape == (len(pretrain_demo.CLASSES), 64)
    assert state['norm.weight'].shape == (64,)
    assert not any(k.startswith('norm3') for k in state)
    assert convert_state_dict(ckpt).layout == OFFICIAL_CLS
    backbone = ConvNeXt(arch, init_cfg=dict(type='Pretrained', checkpoint=str(out)))
    backbone.init_weights()
    loaded = backbone.state_dict()
    for key in ('downsample_layers.0.0.weight', 'stages.2.1.pwconv2.weight', 'stages.3.0.gamma'):
        assert torch.equal(loaded[key], state[key])


def test_classifier_pools_before_its_norm_like_the_official_model():
    torch.manual_seed(0)
    model = pretrain_demo.ConvNeXtClassifier(dict(depths=[1, 1, 1, 1], dims=[8, 16, 32, 64]), 3)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    feat = model.backbone(x)[-1]  # stage 3 map, no output norm
    expected = model.head(torch.nn.functional.layer_norm(feat.mean((2, 3)), (64,),
                                                         model.norm.weight, model.norm.bias,
                                                         1e-6))
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_demo_configs_share_the_backbone_and_its_pretraining():
    from mmengine.config import Config
    det, seg = Config.fromfile(DET_CFG), Config.fromfile(SEG_CFG)
    assert det.model.backbone.arch == seg.model.backbone.arch
    assert det.model.backbone.init_cfg == seg.model.backbone.init_cfg
    assert det.model.backbone.type == seg.model.backbone.type == 'convnext_backbone.ConvNeXt'
    for cfg in (det, seg):
        assert cfg.optim_wrapper.constructor == 'convnext_backbone.LayerDecayOptimizerConstructor'
    assert det.model.roi_head.bbox_head.num_classes == len(make_demo_data.SHAPES)
    assert seg.model.decode_head.num_classes == len(make_demo_data.SEG_CLASSES)
    assert tuple(seg.train_dataloader.dataset.metainfo.classes) == make_demo_data.SEG_CLASSES
    assert seg.train_dataloader.dataset.reduce_zero_label
    assert det.val_evaluator.metric == ['bbox', 'segm']


def test_demo_detector_roi_features_match_pooling_nchw_feature_maps():
    """mmcv's RoIAlign reads its input as contiguous NCHW: the detector's FPN maps must be laid out
    so (channels-last maps were pooled as garbage, and the demo's mAP stayed near 0)."""
    from mmcv.ops import roi_align
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile(DET_CFG)
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model).eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 64, 64))
    rois = torch.tensor([[0., 3., 5., 40., 30.]])
    pooled = roi_align(feats[0], rois, 7, 0.25, 0, 'avg', True)
    expected = roi_align(feats[0].contiguous(), rois, 7, 0.25, 0, 'avg', True)
    assert torch.allclose(pooled, expected)


@pytest.mark.parametrize('env,message', [
    (dict(DEMO='detection'), 'DEMO=detection: use all, det or seg'),
    (dict(QUICK='yes'), 'QUICK=yes: use 0 or 1'),
])
def test_demo_script_rejects_bad_settings_before_doing_anything(tmp_path, env, message):
    run = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'demo.sh')],
                         env=dict(os.environ, WORK_DIR=str(tmp_path / 'work'), **env),
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert message in run.stderr
    assert not (tmp_path / 'work').exists()


def test_quick_demo_trains_tests_and_draws_both_tasks(tmp_path):
    env = dict(os.environ, QUICK='1', THREADS='1', DATA_DIR=str(tmp_path / 'data'),
               WORK_DIR=str(tmp_path / 'work'), PYTHON=sys.executable)
    run = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'demo.sh')], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    work = tmp_path / 'work'
    with open(work / 'det' / 'test_metrics.json') as f:
        det = json.load(f)
    with open(work / 'seg' / 'test_metrics.json') as f:
        seg = json.load(f)
    assert 0 <= det['coco/bbox_mAP'] <= 1 and 0 <= det['coco/segm_mAP'] <= 1
    assert 0 <= seg['mIoU'] <= 100
    det_pictures = [f for f in _files(work / 'det' / 'vis') if f.endswith('.jpg')]
    seg_pictures = [f for f in _files(work / 'seg' / 'vis') if f.endswith('.png')]
    assert len(det_pictures) == 4 and len(seg_pictures) == 4
    assert 'Mask R-CNN: bbox mAP' in run.stdout and 'UperNet: mIoU' in run.stdout
    # the fine-tuning started from the pretraining, through init_cfg=Pretrained
    assert 'layout: official classification' in run.stdout + run.stderr
    _check_onnx_stages(work, det, seg, run.stdout)
    # where bf16 is native, both models were tested again with tools/test.py --bf16
    from convnext_backbone import machine
    if machine.native_bf16():
        with open(work / 'det' / 'bf16' / 'test_metrics.json') as f:
            bf16_det = json.load(f)
        with open(work / 'seg' / 'bf16' / 'test_metrics.json') as f:
            bf16_seg = json.load(f)
        assert abs(bf16_det['coco/bbox_mAP'] - det['coco/bbox_mAP']) <= 0.01
        assert abs(bf16_det['coco/segm_mAP'] - det['coco/segm_mAP']) <= 0.01
        assert abs(bf16_seg['mIoU'] - seg['mIoU']) <= 1.0
        assert 'Mask R-CNN bf16: bbox mAP' in run.stdout and 'UperNet bf16: mIoU' in run.stdout


def _check_onnx_stages(work, det, seg, stdout):
    """Both trained models exported to ONNX (standard operators only) and evaluated in ONNX
    Runtime with the same pipeline and metric: the metrics of PyTorch; on a torch older than the
    export needs, the demo says it skipped them."""
    from convnext_backbone import compat
    from convnext_backbone.deploy.onnx_ops import EXPORT_TORCH
    if not compat.torch_at_least(EXPORT_TORCH):
        assert stdout.count('ONNX Runtime: skipped') == 2
        assert not (work / 'det' / 'model.onnx').exists()
        return
    import onnx

    from convnext_backbone.deploy import custom_domain_ops
    for task in ('det', 'seg'):
        assert custom_domain_ops(onnx.load(str(work / task / 'model.onnx'))) == []
    with open(work / 'det' / 'onnxruntime' / 'test_metrics.json') as f:
        ort_det = json.load(f)
    with open(work / 'seg' / 'onnxruntime' / 'test_metrics.json') as f:
        ort_seg = json.load(f)
    assert abs(ort_det['coco/bbox_mAP'] - det['coco/bbox_mAP']) <= 0.01
    assert abs(ort_det['coco/segm_mAP'] - det['coco/segm_mAP']) <= 0.01
    assert abs(ort_seg['mIoU'] - seg['mIoU']) <= 0.5  # mmseg reports percentages
    assert 'ONNX Runtime: bbox mAP' in stdout and 'ONNX Runtime: mIoU' in stdout
    _check_openvino_stages(work, det, seg, stdout)


def _check_openvino_stages(work, det, seg, stdout):
    """Where OpenVINO is installed both files were evaluated in it: in f32 with PyTorch's metrics,
    in bf16 (where its CPU plugin has native bf16) within bf16's tolerance; elsewhere the demo
    says it skipped them."""
    from convnext_backbone.deploy.session import DeployError, check_runtime
    ran = []
    for precision in ('f32', 'bf16'):
        folder = 'openvino' if precision == 'f32' else f'openvino-{precision}'
        try:
            check_runtime('openvino', precision)
        except DeployError:
            assert not (work / 'det' / folder).exists()
            continue
        ran.append(precision)
        with open(work / 'det' / folder / 'test_metrics.json') as f:
            ov_det = json.load(f)
        with open(work / 'seg' / folder / 'test_metrics.json') as f:
            ov_seg = json.load(f)
        assert abs(ov_det['coco/bbox_mAP'] - det['coco/bbox_mAP']) <= 0.01
        assert abs(ov_det['coco/segm_mAP'] - det['coco/segm_mAP']) <= 0.01
        assert abs(ov_seg['mIoU'] - seg['mIoU']) <= (0.5 if precision == 'f32' else 1.0)
        assert f'OpenVINO {precision}: bbox mAP' in stdout
        assert f'OpenVINO {precision}: mIoU' in stdout
    if not ran:
        assert stdout.count('OpenVINO: skipped') == 2
