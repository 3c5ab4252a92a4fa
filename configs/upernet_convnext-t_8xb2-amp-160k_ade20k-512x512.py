# UperNet + ConvNeXt-T (ImageNet-1K pre-training) on ADE20K, 512x512 crops, 160k iterations.
# The official recipe of Table 4 (Liu et al., CVPR 2022): 46.0 mIoU single-scale, 46.7 ms+flip.
# Trained with 8 GPUs x 2 images; `tools/test.py CONFIG CKPT` gives the single-scale sliding-window
# column and `tools/test.py CONFIG CKPT --tta` the multi-scale + flip column.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]

crop_size = (512, 512)
checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth'

model = dict(
    # Pads each training batch to the crop size (the official `Pad(size=crop_size)`).
    data_preprocessor=dict(size=crop_size),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='convnext_backbone.ConvNeXt',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    # UPerHead (512 channels, pool scales 1/2/3/6, dropout 0.1, SyncBN) and the auxiliary FCNHead
    # on stage 2 (256 channels, loss weight 0.4) come from the base config.
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    # Single-scale test: sliding 512x512 windows with stride 341 on the image resized to 2048x512.
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# Multi-scale + flip test (`--tta`): the whole image (no sliding window) at 0.5 ... 1.75 times the
# test scale (2048, 512), each also flipped; SegTTAModel averages the softmax scores.
# Note: mmseg's base `tta_pipeline` scales the raw image by each ratio; we scale the test scale
# instead, as mmseg 0.x's MultiScaleFlipAug did for the official results.
tta_scale = (2048, 512)
tta_ratios = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
tta_model = dict(type='SegTTAModel')
tta_test_cfg = dict(mode='whole')
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(tta_scale[0] * r), int(tta_scale[1] * r)),
                  keep_ratio=True) for r in tta_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]

# AdamW with stage-wise lr decay 0.9 (num_layers 6 for T, 12 for the 27-block stage 2 models).
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='convnext_backbone.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6))

# Linear warm-up over 1500 iterations from 1e-6, then poly decay (power 1, min 0) to 160k.
# Note: both schedulers start at 0, so the lr is base_lr * warm-up factor * (1 - iter / 160000),
# mmcv 1.x's `poly` policy with linear warm-up used for the official results (mmseg's own ConvNeXt
# configs start the poly decay at iteration 1500 instead, 0.9% higher lr from there on).
# mmengine's schedulers reach their end value one iteration early: within 0.1% of the official lr.
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=160000),
]

# 8 GPUs x 2 images = batch 16.
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
# Keep the last 3 checkpoints (mmseg's schedule_160k keeps all 10, one per 16k iterations).
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
