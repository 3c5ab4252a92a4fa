# Cascade Mask R-CNN (4conv1fc GIoU heads) + FPN with ConvNeXt-S (ImageNet-1K pre-training) on COCO,
# 3x schedule, multi-scale + crop augmentation, mixed precision.
# Table 3 (Liu et al., CVPR 2022): 51.9 box AP, 45.0 mask AP, 108M params, 827G FLOPs.
# Recipe source: facebookresearch/ConvNeXt, object_detection/configs/convnext/
# cascade_mask_rcnn_convnext_small_patch4_window7_mstrain_480-800_giou_4conv1f_adamw_3x_coco_in1k.py
# What changes from T: arch, drop path 0.6, pretrained weights, num_layers 12.
_base_ = './cascade-mask-rcnn_convnext-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py'

checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_small_1k_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))

# lr 2e-4 and layer decay 0.7 as T; 12 layer ids for the 27 blocks of stage 2.
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
