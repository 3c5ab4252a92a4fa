# Cascade Mask R-CNN (4conv1fc GIoU heads) + FPN with ConvNeXt-B (ImageNet-1K pre-training) on COCO,
# 3x schedule, multi-scale + crop augmentation, mixed precision.
# Table 3 (Liu et al., CVPR 2022): 52.7 box AP, 45.6 mask AP, 146M params, 964G FLOPs.
# Recipe source: facebookresearch/ConvNeXt, object_detection/configs/convnext/
# cascade_mask_rcnn_convnext_base_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco_in1k.py
# What changes from T: arch and FPN inputs, drop path 0.7, pretrained weights, layer decay 0.8,
# num_layers 12.
_base_ = './cascade-mask-rcnn_convnext-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'

checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224.pth'
model = dict(
    backbone=dict(
        arch='base',
        drop_path_rate=0.7,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# lr 2e-4 as T.
optim_wrapper = dict(paramwise_cfg=dict(decay_rate=0.8, num_layers=12))
