# UperNet + ConvNeXt-V2-T from its FCMAE pre-training on ADE20K, 512x512 crops, 160k iterations.
# No official or OpenMMLab config exists (mmsegmentation#2809; ConvNeXt-V2#8, #29, #49 ask for
# one), and no number has been published for this config.
# Note: every value is ours. We take Table 4's UperNet recipe for V1 T (the config we inherit:
# crop 512, drop path 0.4, AdamW lr 1e-4, stage-wise decay 0.9 over 6 layer ids, AMP, 160k) and
# swap in the V2 backbone (GRN, no layer scale: the inherited layer_scale_init_value is ignored)
# with the FCMAE weights (decoder and mask token left out when loading).
_base_ = '../upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='v2-tiny',
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/'
                                 'convnextv2_tiny_1k_224_fcmae.pt')))
