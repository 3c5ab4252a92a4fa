# Mask R-CNN + FPN with the DINOv3 ConvNeXt-B on COCO, 3x, AMP. No number has been published.
# Note: Table 3 has no Mask R-CNN B. We keep the S config's optimiser (lr 1e-4, layer-wise decay
# 0.95, 12 layer ids) and take the drop path of Table 3's Cascade B with large-data (22K)
# pre-training, 0.6.
_base_ = './mask-rcnn_convnext-s-dinov3_fpn_amp-ms-crop-3x_coco.py'

# Gated download; or the HF repo facebook/dinov3-convnext-base-pretrain-lvd1689m's
# model.safetensors.
checkpoint = 'checkpoints/dinov3_convnext_base_pretrain_lvd1689m-801f2ba9.pth'
model = dict(
    backbone=dict(arch='base', drop_path_rate=0.6, init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=[128, 256, 512, 1024]))
