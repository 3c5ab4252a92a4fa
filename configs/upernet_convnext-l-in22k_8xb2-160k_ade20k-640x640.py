# UperNet + ConvNeXt-L (ImageNet-22K), ADE20K 640x640, 160k: Table 4, 53.2 mIoU ss / 53.7 ms+flip.
# Trained in fp32 like the official recipe (fp16 gives NaN losses for some users at this size).
_base_ = './upernet_convnext-b-in22k_8xb2-amp-160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        arch='large',
        init_cfg=dict(
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_large_22k_224.pth')),
    decode_head=dict(in_channels=[192, 384, 768, 1536]),
    auxiliary_head=dict(in_channels=768))
optim_wrapper = dict(type='OptimWrapper')
