# Mask R-CNN + FPN with the DINOv3 ConvNeXt-T (pre-trained on LVD-1689M) on COCO: Table 3's
# recipe for ConvNeXt-T (the config we inherit: 3x, multi-scale + crop, drop path 0.4, AdamW lr
# 1e-4, layer-wise decay 0.95 over 6 layer ids, AMP) with DINOv3 weights. No number has been
# published for this config.
# DINOv3's final norm ('norm' = 'norms.3') normalises the spatial patch tokens, so it is loaded
# into norm3; norm0..2 start at weight 1, bias 0 (DINOv3 has none).
_base_ = '../mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'

# The DINOv3 weights are gated: download them once, then put them here (the raw .pth, or the
# model.safetensors of the HF repo facebook/dinov3-convnext-tiny-pretrain-lvd1689m; file and repo
# names as in transformers' convert_dinov3_convnext_to_hf.py).
checkpoint = 'checkpoints/dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))
