# Mask R-CNN + FPN with a ConvNeXt-T backbone (ImageNet-1K pre-training) on COCO: 3x schedule
# (36 epochs), multi-scale + crop augmentation, mixed precision.
# Table 3 of Liu et al., "A ConvNet for the 2020s" (CVPR 2022): 46.2 box AP, 41.7 mask AP,
# 48M params, 262G FLOPs at 1280x800.
# Recipe source: facebookresearch/ConvNeXt, object_detection/configs/convnext/
#   mask_rcnn_convnext_tiny_patch4_window7_mstrain_480-800_adamw_3x_coco_in1k.py
# Trained with 8 GPUs x 2 images: tools/dist_train.sh CONFIG 8.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    './_base_/coco-instance_ms-crop-3x_adamw-layer-decay.py',
]

# The official non-EMA ImageNet-1K classification weights (any layout loads: see
# convnext_backbone.checkpoint).
checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_tiny_1k_224.pth'

# RPN, box head (Shared2FC) and mask head (4 convs) are mmdet's Mask R-CNN defaults, as in the
# official base config.
model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_backbone.ConvNeXt',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.4,
        # Every official det/seg config sets 1.0; it only matters for weights not in the
        # checkpoint.
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[96, 192, 384, 768]))
