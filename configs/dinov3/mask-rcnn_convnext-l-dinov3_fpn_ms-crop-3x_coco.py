# Mask R-CNN + FPN with the DINOv3 ConvNeXt-L on COCO, 3x, fp32. No number has been published.
# Note: Table 3 has no Mask R-CNN L. We keep the B config's optimiser and take Table 3's Cascade L
# drop path (0.7) and its fp32 training.
_base_ = './mask-rcnn_convnext-b-dinov3_fpn_amp-ms-crop-3x_coco.py'

# Gated download; or the HF repo facebook/dinov3-convnext-large-pretrain-lvd1689m's
# model.safetensors.
checkpoint = 'checkpoints/dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth'
model = dict(
    backbone=dict(arch='large', drop_path_rate=0.7, init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[192, 384, 768, 1536]))
optim_wrapper = dict(type='OptimWrapper')
