# Mask R-CNN + FPN with the DINOv3 ConvNeXt-S on COCO: our Mask R-CNN S recipe (the config we
# inherit: Mask R-CNN T's optimiser, Cascade S's drop path 0.6, 12 layer ids) with DINOv3 weights.
# No number has been published for this config.
_base_ = '../mask-rcnn_convnext-s_fpn_amp-ms-crop-3x_coco.py'

# Gated download; or the HF repo facebook/dinov3-convnext-small-pretrain-lvd1689m's
# model.safetensors.
checkpoint = 'checkpoints/dinov3_convnext_small_pretrain_lvd1689m-296db49d.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))
