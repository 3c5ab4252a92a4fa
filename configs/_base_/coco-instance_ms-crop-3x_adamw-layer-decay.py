# The COCO training recipe shared by the ConvNeXt Mask R-CNN and Cascade Mask R-CNN configs of
# Table 3 (Liu et al., CVPR 2022; facebookresearch/ConvNeXt object_detection/configs/convnext/):
# dataset, multi-scale + crop augmentation, 3x schedule with warm-up, AdamW with layer-wise lr
# decay (Mask R-CNN T's lr and rate; the other configs override them), mixed precision.
# The model comes from the config that inherits this file.
_base_ = [
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]

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
# The loop is mmdet's EpochBasedTrainLoop, but an interrupted run resumes inside the epoch where
# it stopped (mmengine's restarts the epoch from its first batch).
max_epochs = 36
train_cfg = dict(type='convnext_backbone.ResumableEpochBasedTrainLoop', max_epochs=max_epochs,
                 val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]

# AdamW with layer-wise lr decay: lr of a backbone parameter = lr * 0.95 ** (6 + 1 - layer id)
# (stem 0.698 x lr ... stage 3 0.95 x lr, neck and heads 1 x lr); no weight decay on norms,
# layer scales and biases. Mixed precision (dynamic loss scale), as the official fp16 runs.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='convnext_backbone.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.95, decay_type='layer_wise', num_layers=6),
    optimizer=dict(
        _delete_=True, type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))

# lr is set for a total batch of 16; `--cfg-options auto_scale_lr.enable=True` rescales it
# linearly to another number of GPUs x batch_size.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Keep the last 3 epoch checkpoints (mmdet's default_runtime keeps all 36: about 0.6 GB each for
# Mask R-CNN T with its AdamW state). 3, not 1: mmengine deletes the oldest before writing the
# next, so with 1 a crash while saving would leave nothing to resume from.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
