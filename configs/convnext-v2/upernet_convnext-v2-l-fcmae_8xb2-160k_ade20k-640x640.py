# UperNet + ConvNeXt-V2-L from its FCMAE pre-training on ADE20K, 640x640 crops, 160k iterations.
# Note: every value is ours (no published config or number): Table 4's recipe for V1 L at 640
# (the config we inherit: drop path 0.4, lr 1e-4, stage-wise decay 0.9 over 12 layer ids, fp32)
# with the V2 backbone and its FCMAE weights.
_base_ = '../upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        arch='v2-large',
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/'
                                 'convnextv2_large_1k_224_fcmae.pt')))
