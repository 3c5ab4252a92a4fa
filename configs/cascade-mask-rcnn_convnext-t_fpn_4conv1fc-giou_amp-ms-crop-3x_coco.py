# Cascade Mask R-CNN + FPN with a ConvNeXt-T backbone (ImageNet-1K pre-training) on COCO: box
# heads of 4 shared convs + 1 fc (SyncBN) with GIoU loss, 3x schedule, multi-scale + crop
# augmentation, mixed precision.
# Table 3 of Liu et al., "A ConvNet for the 2020s" (CVPR 2022): 50.4 box AP, 43.7 mask AP,
# 86M params, 741G FLOPs at 1280x800.
# Recipe source: facebookresearch/ConvNeXt, object_detection/configs/convnext/
# cascade_mask_rcnn_convnext_tiny_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco_in1k.py
# Trained with 8 GPUs x 2 images: tools/dist_train.sh CONFIG 8.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth'

# The three cascade stages differ only in the box coder's target stds (the stages' IoU thresholds
# 0.5 / 0.6 / 0.7 are in the base config's train_cfg).
cascade_target_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1],
                       [0.033, 0.033, 0.067, 0.067]]
model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_backbone.ConvNeXt',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]),
    roi_head=dict(bbox_head=[
        dict(
            # mmdet's Shared4Conv1FCBBoxHead, spelled out as in the official config.
            type='ConvFCBBoxHead',
            num_shared_convs=4,
            num_shared_fcs=1,
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0., 0., 0., 0.],
                            target_stds=stds),
            reg_class_agnostic=False,
            # GIoU is computed on decoded boxes.
            reg_decoded_bbox=True,
            norm_cfg=dict(type='SyncBN', requires_grad=True),
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0))
        for stds in cascade_target_stds
    ]))

# Augmentation from DETR / Sparse R-CNN (the official configs' AutoAugment): flip, then one of two
# policies at random: (a) shorter side one of 480..800 (step 32), longer side <= 1333; (b) shorter
# side one of 400/500/600, a random crop of 384..600 px (absolute range, crops without boxes
# allowed), then policy (a)'s resize. Scales are (w, h) as in mmcv 2.x; with keep_ratio the long
# and short sides are what count.
multi_scales = [(1333, short) for short in range(480, 801, 32)]
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',
        transforms=[
            [dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize',
                     scales=[(1333, 400), (1333, 500), (1333, 600)],
                     keep_ratio=True),
                dict(type='RandomCrop',
                     crop_type='absolute_range',
                     crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True),
            ],
        ]),
    dict(type='PackDetInputs'),
]
# 8 GPUs x 2 images = batch 16. The test pipeline (single scale 1333x800) is mmdet's base one.
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))

# 3x schedule: 36 epochs, lr x0.1 after epochs 27 and 33, linear warm-up over the first 500
# iterations from 0.001 x lr (the official Swin/ConvNeXt detection schedule).
# Note: mmdet's own ConvNeXt port warms up over 1000 iterations; we keep the official 500.
max_epochs = 36
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]

# AdamW with layer-wise lr decay: lr of a backbone parameter = lr * 0.7 ** (6 + 1 - layer id)
# (stem 0.082 x lr ... stage 3 0.7 x lr, neck and heads 1 x lr); no weight decay on norms,
# layer scales and biases. Mixed precision (dynamic loss scale), as the official fp16 runs.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='convnext_backbone.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.7, decay_type='layer_wise', num_layers=6),
    optimizer=dict(
        _delete_=True, type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=0.05))

# lr is set for a total batch of 16; `--cfg-options auto_scale_lr.enable=True` rescales it
# linearly to another number of GPUs x batch_size.
auto_scale_lr = dict(enable=False, base_batch_size=16)
