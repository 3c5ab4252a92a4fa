"""tools/infer.py on grayscale, RGBA and 16-bit images (they just work), skipping a file that is
not an image, and refusing a checkpoint of another model or a missing image in one line."""
import importlib
import json
import os
import re

import cv2
import numpy as np
import pytest
import torch
from helpers import SMALL, load_tool, one_line
from make_demo_data import SHAPES

from convnext_backbone import ConvNeXt

pytestmark = pytest.mark.core

SEG_INFER_CONFIG = '''
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), out_indices=(3,)),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     concat_input=False, num_classes=8, norm_cfg=dict(type='SyncBN'),
                     loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(96, 64), keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
test_dataloader = dict(batch_size=1, dataset=dict(
    type='ADE20KDataset', data_root='nowhere', pipeline=test_pipeline,
    data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')))
'''

DET_INFER_CONFIG = '''
default_scope = 'mmdet'
model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True,
                           pad_size_divisor=32),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))),
    neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=16, num_outs=5),
    rpn_head=dict(
        type='RPNHead', in_channels=16, feat_channels=16,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[1.] * 4)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor', out_channels=16,
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                                featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32,
                       roi_feat_size=7, num_classes=4, reg_class_agnostic=False,
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                       target_stds=[0.1, 0.1, 0.2, 0.2])),
        mask_roi_extractor=dict(type='SingleRoIExtractor', out_channels=16,
                                roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
                                featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=16, conv_out_channels=16,
                       num_classes=4)),
    train_cfg=None,
    test_cfg=dict(
        rpn=dict(nms_pre=100, max_per_img=50, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=0),
        rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10,
                  mask_thr_binary=0.5)))
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(96, 64), keep_ratio=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                       'img_shape', 'scale_factor'))]
test_dataloader = dict(batch_size=1, dataset=dict(type='CocoDataset', data_root='nowhere',
                                                  pipeline=test_pipeline))
'''


def _images(folder):
    """A colour JPEG, a grayscale PNG, an RGBA PNG (transparent corner), a 16-bit grayscale PNG
    and a file that is not an image."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    color = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / 'color.jpg'), color)
    cv2.imwrite(str(folder / 'gray.png'), color[..., 0])
    rgba = np.dstack([color, np.full((48, 80), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    cv2.imwrite(str(folder / 'rgba.png'), rgba)
    cv2.imwrite(str(folder / 'gray16.png'), color[..., 1].astype(np.uint16) * 257)
    (folder / 'broken.png').write_bytes(b'not a png')
    return folder


@pytest.fixture(scope='module')
def infer_models(tmp_path_factory):
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    root = tmp_path_factory.mktemp('infer')
    out = {}
    for scope, text, meta in (
            ('mmseg', SEG_INFER_CONFIG, None),
            ('mmdet', DET_INFER_CONFIG, dict(classes=SHAPES, palette=[(255, 0, 0)] * 4))):
        config = root / f'tiny_{scope}.py'
        config.write_text(text)
        init_default_scope(scope)
        registry = importlib.import_module(f'{scope}.registry')
        torch.manual_seed(0)
        model = registry.MODELS.build(Config.fromfile(str(config)).model)
        ckpt = {'state_dict': model.state_dict()}
        if meta:
            ckpt['meta'] = dict(dataset_meta=meta)
        torch.save(ckpt, root / f'tiny_{scope}.pth')
        out[scope] = (str(config), str(root / f'tiny_{scope}.pth'))
    return out


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_infer_handles_grayscale_rgba_and_16_bit_images(tmp_path, infer_models, scope, capsys):
    config, ckpt = infer_models[scope]
    images = _images(tmp_path / 'images')
    out = tmp_path / 'out'
    load_tool('infer').main([config, ckpt, str(images), '--out', str(out), '--score-thr', '0'])
    err = capsys.readouterr().err
    assert f'skipped: cannot read image {images / "broken.png"}' in err
    entries = json.loads((out / 'predictions.json').read_text())
    assert [os.path.basename(e['image']) for e in entries] == ['color.jpg', 'gray.png',
                                                               'gray16.png', 'rgba.png']
    for entry in entries:
        assert (entry['width'], entry['height']) == (80, 48)
        vis = cv2.imread(entry['visualization'], cv2.IMREAD_UNCHANGED)
        assert vis.shape == (48, 80, 3)
        if scope == 'mmseg':
            label = cv2.imread(entry['label_map'], cv2.IMREAD_UNCHANGED)
            assert label.shape == (48, 80) and label.max() < 8
            assert sum(c['pixels'] for c in entry['classes']) == 48 * 80
        else:
            for inst in entry['instances']:
                assert inst['class'] in SHAPES and 0 <= inst['score'] <= 1
                x1, y1, x2, y2 = inst['bbox']
                assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 48
                assert inst['mask']['size'] == [48, 80]


def test_infer_refuses_a_checkpoint_of_another_model(tmp_path, infer_models, capsys):
    config, _ = infer_models['mmseg']
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': ConvNeXt(arch=SMALL).state_dict()}, other)
    images = _images(tmp_path / 'images')
    with pytest.raises(SystemExit) as err:
        load_tool('infer').main([config, str(other), str(images / 'color.jpg'), '--out',
                             str(tmp_path / 'out')])
    assert err.value.code == 1
    message = one_line(capsys.readouterr().err.strip())
    assert f'error: checkpoint {other} does not fit the model of {config}: ' in message
    assert 'model weights missing from the checkpoint, first' in message


def test_infer_names_a_missing_image(tmp_path, infer_models, capsys):
    config, ckpt = infer_models['mmseg']
    with pytest.raises(SystemExit):
        load_tool('infer').main([config, ckpt, str(tmp_path / 'nope.jpg'), '--out', str(tmp_path)])
    assert re.search('error: image or folder not found: .*nope.jpg', capsys.readouterr().err)



def test_infer_predicts_every_image_with_the_weights_frozen(tmp_path, infer_models, monkeypatch):
    from convnext_backbone import frozen, inference
    config, ckpt = infer_models['mmseg']
    frozen_at_predict = []
    real = inference.predict

    def predict(inferencer, scope, image):
        frozen_at_predict.append(frozen.holds(inferencer.model.backbone.downsample_layers[0][0].weight))
        return real(inferencer, scope, image)

    monkeypatch.setattr(inference, 'predict', predict)
    images = _images(tmp_path / 'images')
    load_tool('infer').main([config, ckpt, str(images / 'color.jpg'), str(images / 'gray.png'),
                             '--out', str(tmp_path / 'out')])
    assert frozen_at_predict == [True, True]
