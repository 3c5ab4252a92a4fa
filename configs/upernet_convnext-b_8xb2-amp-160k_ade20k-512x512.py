# UperNet + ConvNeXt-B (ImageNet-1K), ADE20K 512x512, 160k: Table 4, 49.1 mIoU ss / 49.9 ms+flip.
_base_ = './upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='base',
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_base_1k_224.pth')),
    decode_head=dict(in_channels=[128, 256, 512, 1024]),
    auxiliary_head=dict(in_channels=512))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
