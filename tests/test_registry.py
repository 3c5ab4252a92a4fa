"""mmdet and mmseg configs name the backbone as convnext_backbone.ConvNeXt, with no imports."""
import subprocess
import sys

import pytest
import torch
from mmengine.config import ConfigDict

SMALL = dict(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))


def _detector_cfg():
    return dict(
        type='MaskRCNN',
        data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True,
                               pad_size_divisor=32),
        backbone=dict(type='convnext_backbone.ConvNeXt', arch=SMALL, drop_path_rate=0.1),
        neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=16, num_outs=5),
        rpn_head=dict(
            type='RPNHead', in_channels=16, feat_channels=16,
            anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                                  strides=[4, 8, 16, 32, 64]),
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                            target_stds=[1.0] * 4),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        roi_head=dict(
            type='StandardRoIHead',
            bbox_roi_extractor=dict(type='SingleRoIExtractor',
                                    roi_layer=dict(type='RoIAlign', output_size=7,
                                                   sampling_ratio=0),
                                    out_channels=16, featmap_strides=[4, 8, 16, 32]),
            bbox_head=dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32,
                           roi_feat_size=7, num_classes=2,
                           bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                           target_stds=[0.1, 0.1, 0.2, 0.2]),
                           reg_class_agnostic=False,
                           loss_cls=dict(type='CrossEntropyLoss', loss_weight=1.0),
                           loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
            mask_roi_extractor=dict(type='SingleRoIExtractor',
                                    roi_layer=dict(type='RoIAlign', output_size=14,
                                                   sampling_ratio=0),
                                    out_channels=16, featmap_strides=[4, 8, 16, 32]),
            mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=16, conv_out_channels=16,
                           num_classes=2, loss_mask=dict(type='CrossEntropyLoss', use_mask=True,
                                                         loss_weight=1.0))),
        train_cfg=dict(
            rpn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3,
                                   min_pos_iou=0.3, match_low_quality=True),
                     sampler=dict(type='RandomSampler', num=64, pos_fraction=0.5,
                                  neg_pos_ub=-1, add_gt_as_proposals=False),
                     allowed_border=-1, pos_weight=-1, debug=False),
            rpn_proposal=dict(nms_pre=200, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7),
                              min_bbox_size=0),
            rcnn=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5,
                                    min_pos_iou=0.5, match_low_quality=True),
                      sampler=dict(type='RandomSampler', num=32, pos_fraction=0.25,
                                   neg_pos_ub=-1, add_gt_as_proposals=True),
                      mask_size=28, pos_weight=-1, debug=False)),
        test_cfg=dict(
            rpn=dict(nms_pre=200, max_per_img=100, nms=dict(type='nms', iou_threshold=0.7),
                     min_bbox_size=0),
            rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5),
                      max_per_img=10, mask_thr_binary=0.5)))


def _segmentor_cfg():
    return dict(
        type='EncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                               std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                               seg_pad_val=255, size=(64, 64)),
        backbone=dict(type='convnext_backbone.ConvNeXt', arch=SMALL),
        decode_head=dict(type='UPerHead', in_channels=[8, 16, 32, 64], in_index=[0, 1, 2, 3],
                         pool_scales=(1, 2, 3, 6), channels=16, dropout_ratio=0.1, num_classes=3,
                         norm_cfg=dict(type='BN', requires_grad=True), align_corners=False,
                         loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                          loss_weight=1.0)),
        train_cfg=dict(), test_cfg=dict(mode='whole'))


def test_mmdet_scope_builds_a_mask_rcnn_that_trains_a_step():
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.registry import DefaultScope
    from mmengine.structures import InstanceData
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = MODELS.build(ConfigDict(_detector_cfg()))
    assert type(model.backbone).__module__ == 'convnext_backbone.convnext'
    sample = DetDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                         pad_shape=(64, 64), scale_factor=(1., 1.)))
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, 10:40, 12:44] = 1
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[12., 10., 44., 40.]]),
                                       labels=torch.tensor([1]),
                                       masks=BitmapMasks(masks.numpy(), 64, 64))
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)],
             data_samples=[sample]), training=True)
    losses = model(**data, mode='loss')
    total = sum(sum(v) if isinstance(v, list) else v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total)
    assert model.backbone.stages[0][0].pwconv1.weight.grad is not None


def test_mmseg_scope_builds_an_upernet_that_trains_a_step():
    from mmengine.registry import DefaultScope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(ConfigDict(_segmentor_cfg()))
    assert type(model.backbone).__module__ == 'convnext_backbone.convnext'
    samples = []
    for _ in range(2):  # the pooled 1x1 maps of UPerHead's PPM need batch > 1 for BatchNorm
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), ori_shape=(64, 64),
                                             pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 64, 64)))
        samples.append(sample)
    data = model.data_preprocessor(
        dict(inputs=[torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in samples],
             data_samples=samples), training=True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total)


@pytest.mark.parametrize('scope', ['mmdet', 'mmseg'])
def test_fresh_interpreter_finds_the_backbone_without_custom_imports(scope):
    # No import of convnext_backbone anywhere: mmengine must find it from the type prefix alone.
    code = (f'from mmengine.registry import DefaultScope\n'
            f'from {scope}.registry import MODELS\n'
            f'import sys\n'
            f'with DefaultScope.overwrite_default_scope("{scope}"):\n'
            f'    m = MODELS.build(dict(type="convnext_backbone.ConvNeXt", arch="v2-atto"))\n'
            f'print(type(m).__module__, m.out_channels)\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['convnext_backbone.convnext', '(40,', '80,', '160,', '320)']
