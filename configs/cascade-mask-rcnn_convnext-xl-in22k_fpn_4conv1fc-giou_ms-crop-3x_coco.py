# Cascade Mask R-CNN (4conv1fc GIoU heads) + FPN with ConvNeXt-XL (ImageNet-22K pre-training) on
# COCO, 3x schedule, multi-scale + crop augmentation, full fp32 precision.
# Table 3 (Liu et al., CVPR 2022): 55.2 box AP, 47.7 mask AP, 407M params, 1898G FLOPs.
# Recipe source: facebookresearch/ConvNeXt, object_detection/configs/convnext/cascade_mask_rcnn_
#   convnext_xlarge_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco_in22k.py
# What changes from T: arch and FPN inputs, drop path 0.8, 22K pretrained weights, lr 1e-4,
# num_layers 12 and no mixed precision.
_base_ = './cascade-mask-rcnn_convnext-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'

# The 22K classifier head in this file is not loaded (only backbone weights are).
checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_224.pth'
model = dict(
    backbone=dict(
        arch='xlarge',
        drop_path_rate=0.8,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)),
    neck=dict(in_channels=[256, 512, 1024, 2048]))

# fp32 as the official L/XL runs (use_fp16=False): fp16 L/XL runs are known to hit NaN losses.
# Layer decay 0.7 as T.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(lr=1e-4),
    paramwise_cfg=dict(num_layers=12))
