# UperNet + the DINOv3 ConvNeXt-B on ADE20K: Table 4's recipe for ConvNeXt-B with large-data
# (22K) pre-training (the config we inherit: 640x640, drop path 0.4, stage-wise decay 0.9 over 12
# layer ids, AMP) with DINOv3 weights. No number has been published for this config.
# Note: for B and L we take Table 4's 22K rows (640 crops), DINOv3 being pre-trained on far more
# images (LVD-1689M); its 1K row of B (512) differs only in the data scale.
_base_ = '../upernet_convnext-b-in22k_8xb2-amp-160k_ade20k-640x640.py'

# Gated download; or the HF repo facebook/dinov3-convnext-base-pretrain-lvd1689m's
# model.safetensors.
checkpoint = 'checkpoints/dinov3_convnext_base_pretrain_lvd1689m-801f2ba9.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))
