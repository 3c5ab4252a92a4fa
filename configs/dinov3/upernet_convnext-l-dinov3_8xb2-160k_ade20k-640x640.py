# UperNet + the DINOv3 ConvNeXt-L on ADE20K: Table 4's recipe for ConvNeXt-L (22K; the config we
# inherit: 640x640, drop path 0.4, stage-wise decay 0.9 over 12 layer ids, fp32) with DINOv3
# weights. No number has been published for this config.
_base_ = '../upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py'

# Gated download; or the HF repo facebook/dinov3-convnext-large-pretrain-lvd1689m's
# model.safetensors.
checkpoint = 'checkpoints/dinov3_convnext_large_pretrain_lvd1689m-61fa432d.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))
