# UperNet + ConvNeXt-B (ImageNet-22K), ADE20K 640x640, 160k: Table 4, 52.6 mIoU ss / 53.1 ms+flip.
# Same model and optimiser as the 512 config of B; the data scale grows to 2560x640 (crop 640).
_base_ = './upernet_convnext-b_8xb2-amp-160k_ade20k-512x512.py'

crop_size = (640, 640)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        init_cfg=dict(checkpoint='https://dl.fbaipublicfiles.com/convnext/convnext_base_22k_224.pth')),
    test_cfg=dict(crop_size=crop_size, stride=(426, 426)))

# mmseg's ADE20K 640x640 pipelines (mmseg::_base_/datasets/ade20k_640x640.py).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2560, 640), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2560, 640), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
tta_scale = (2560, 640)
tta_ratios = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(int(tta_scale[0] * r), int(tta_scale[1] * r)),
                  keep_ratio=True) for r in tta_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations')],
            [dict(type='PackSegInputs')],
        ]),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
