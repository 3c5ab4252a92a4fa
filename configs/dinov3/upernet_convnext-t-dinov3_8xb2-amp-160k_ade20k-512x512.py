# UperNet + the DINOv3 ConvNeXt-T (pre-trained on LVD-1689M) on ADE20K: Table 4's recipe for
# ConvNeXt-T (the config we inherit: 512x512 crops, 160k, drop path 0.4, AdamW lr 1e-4,
# stage-wise decay 0.9 over 6 layer ids, AMP) with DINOv3 weights. No number has been published
# for this config. DINOv3's final norm is loaded into norm3 (it normalises the spatial tokens).
_base_ = '../upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'

# Gated download; or the HF repo facebook/dinov3-convnext-tiny-pretrain-lvd1689m's
# model.safetensors (names as in transformers' convert_dinov3_convnext_to_hf.py).
checkpoint = 'checkpoints/dinov3_convnext_tiny_pretrain_lvd1689m-21b726bb.pth'
model = dict(backbone=dict(init_cfg=dict(checkpoint=checkpoint)))
