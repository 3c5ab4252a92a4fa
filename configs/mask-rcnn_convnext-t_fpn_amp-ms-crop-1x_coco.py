# Mask R-CNN + FPN with ConvNeXt-T (ImageNet-1K pre-training) on COCO: the 3x recipe shortened to
# the 1x schedule (12 epochs, lr steps after epochs 8 and 11), everything else unchanged.
# Note: not a row of the paper (no official 1x result); asked for by users who want a shorter
# run. The schedule is mmdet's standard 1x.
_base_ = './mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11],
         gamma=0.1),
]
