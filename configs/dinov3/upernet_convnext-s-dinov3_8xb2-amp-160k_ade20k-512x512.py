# UperNet + the DINOv3 ConvNeXt-S on ADE20K: Table 4's recipe for ConvNeXt-S (the config we
# inherit: 512x512, drop path 0.3, stage-wise decay 0.9 over 12 layer ids, AMP) with DINOv3
# weights. No number has been published for this config.
_base_ = '../upernet_convnext-s_8xb2-amp-160k_ade20k-512x512.py'

# Gated download; or the HF repo facebook/dinov3-convnext-small-pretrain-lvd1689m's
# model.safetensors.
checkpoint = 'checkpoints/dinov3_convnext_small_pretrain_lvd1689m-296db49d.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))
