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
    './_base_/coco-instance_ms-crop-3x_adamw-layer-decay.py',
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

# AdamW lr 2e-4 with layer-wise lr decay 0.7: lr of a backbone parameter = lr * 0.7 ** (6 + 1 -
# layer id) (stem 0.082 x lr ... stage 3 0.7 x lr, neck and heads 1 x lr).
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.7), optimizer=dict(lr=2e-4))
