# Mask R-CNN + FPN with ConvNeXt-S (ImageNet-1K pre-training) on COCO: 3x schedule, multi-scale +
# crop augmentation, mixed precision.
# Note: not a row of the paper (the official release has no Mask R-CNN S recipe). We keep
# Mask R-CNN T's optimiser (lr 1e-4, layer decay 0.95) and take the drop path rate of the
# official Cascade Mask R-CNN S (0.6); num_layers is 12 as for every 27-block stage-2 model.
_base_ = './mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'

checkpoint = 'https://dl.fbaipublicfiles.com/convnext/convnext_small_1k_224.pth'
model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.6,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint)))

optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
