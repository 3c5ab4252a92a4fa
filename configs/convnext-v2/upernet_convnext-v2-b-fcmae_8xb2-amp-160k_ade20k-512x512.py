# UperNet + ConvNeXt-V2-B from its FCMAE pre-training on ADE20K, 512x512 crops, 160k iterations.
# Note: every value is ours (no published config or number): Table 4's recipe for V1 B at 512
# (the config we inherit: drop path 0.4, lr 1e-4, stage-wise decay 0.9 over 12 layer ids, AMP)
# with the V2 backbone and its FCMAE weights.
_base_ = '../upernet_convnext-b_8xb2-amp-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='v2-base',
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/'
                                 'convnextv2_base_1k_224_fcmae.pt')))
