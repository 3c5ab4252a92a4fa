# UperNet + ConvNeXt-S (ImageNet-1K), ADE20K 512x512, 160k: Table 4, 48.7 mIoU ss / 49.6 ms+flip.
_base_ = './upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='small',
        drop_path_rate=0.3,
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_small_1k_224.pth')))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=12))
