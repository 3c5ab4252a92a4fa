# Mask R-CNN + FPN with ConvNeXt-V2-B from its FCMAE pre-training on COCO: large-scale jitter
# (LSJ) 1024, 3x schedule (36 epochs), mixed precision.
# Recipe: mmdetection's projects/ConvNeXt-V2/configs/
#   mask-rcnn_convnext-v2-b_fpn_lsj-3x-fcmae_coco.py
# (mmdet PR#9619), which reports 52.9 box AP / 46.4 mask AP with it. The ConvNeXt-V2 authors have
# not published their detection fine-tuning settings: that PR lists three of its values as
# unverified guesses (drop path 0.4 out of {0.1, 0.2, 0.3, 0.4}; soft-NMS in the R-CNN test but
# plain NMS in the RPN; layer-wise decay 0.95 without a sweep). The ConvNeXt-V2 paper sweeps layer
# decay {0.9, 0.95} and drop path 0.2-0.5 per model.
# Trained with 8 GPUs x 4 images: tools/dist_train.sh CONFIG 8.
# mmdet's Mask R-CNN, and our COCO 3x base: mmdet's dataset, schedule and runtime bases, the 3x
# schedule (36 epochs, lr x0.1 after 27 and 33; mmdet's epoch loop, resumable inside an epoch),
# AdamW lr 1e-4 wd 0.05 with layer-wise decay 0.95, AMP. Below: what mmdet's project changes.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/coco-instance_ms-crop-3x_adamw-layer-decay.py',
]

# The FCMAE pre-training file of the ConvNeXt-V2 release (encoder, decoder and sparse-conv
# kernels: loaded strictly, decoder left out). mmdet's project starts from mmpretrain's
# conversion of this file (convnext-v2-base_3rdparty-fcmae_in1k_20230104-8a798eaf.pth, "Converted
# From" it in mmpretrain's configs/convnext_v2/metafile.yml), which loads too.
checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/convnextv2_base_1k_224_fcmae.pt'  # noqa: E501
image_size = (1024, 1024)

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_backbone.ConvNeXt',
        arch='v2-base',           # GRN, no layer scale
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]),
    # Soft-NMS for the final boxes; the RPN keeps mmdet's plain NMS (an open question of PR#9619).
    test_cfg=dict(rcnn=dict(nms=dict(type='soft_nms'))))

# LSJ: resize to 1024x1024 times a random ratio in 0.1-2.0 (aspect kept), crop 1024x1024 (crops
# without boxes allowed), drop boxes smaller than 0.01 px, flip. Test: mmdet's single scale
# 1333x800 from the base dataset config.
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=4, num_workers=8, dataset=dict(pipeline=train_pipeline))

# Warm-up over 1000 iterations (the base's is 500); 12 layer ids for a 27-block stage 2.
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33],
         gamma=0.1),
]
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))

# Note: mmdetection's projects/ConvNeXt-V2/configs/mask-rcnn_convnext-v2-b_fpn_lsj-3x-fcmae_coco.py
# keeps 1 checkpoint; mmengine then deletes it before writing the next, so a crash while saving
# would leave nothing to resume from. 3, as our other recipes.
default_hooks = dict(checkpoint=dict(max_keep_ckpts=3))
# Note: mmdet's project keeps schedule_1x's base_batch_size=16 although it trains with 32; with
# `--auto-scale-lr` that would double the lr. Ours names the batch the lr was set for.
auto_scale_lr = dict(enable=False, base_batch_size=32)
