# UperNet + ConvNeXt-XL (ImageNet-22K), ADE20K 640x640, 160k: Table 4, 53.6 mIoU ss / 54.0 ms+flip.
# The L recipe (fp32) with lr 8e-5.
_base_ = './upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py'

model = dict(
    backbone=dict(
        arch='xlarge',
        init_cfg=dict(
            checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_xlarge_22k_224.pth')),
    decode_head=dict(in_channels=[256, 512, 1024, 2048]),
    auxiliary_head=dict(in_channels=1024))
optim_wrapper = dict(optimizer=dict(lr=8e-5))
