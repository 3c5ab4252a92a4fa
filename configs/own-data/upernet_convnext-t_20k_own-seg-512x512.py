# UperNet + ConvNeXt-T fine-tuned on your own semantic segmentation set (docs/own-data.md). Copy
# this file and change the lines marked EDIT; everything else comes from the shipped ADE20K recipe
# (AdamW with stage-wise lr decay, mixed precision, UPerHead and the auxiliary FCNHead).
#
#   python tools/train.py my_config.py --auto-scale-lr     # --auto-scale-lr: fewer than 8 GPUs
#   python tools/test.py my_config.py work_dirs/my_config/iter_20000.pth
_base_ = '../upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'

# EDIT: data_root holds images/{train,val}/NAME.jpg and labels/{train,val}/NAME.png, one label
# map per image: a single-channel or palette PNG whose pixel value v is classes[v], 255 ignored
# (labelme's SegmentationClassPNG files are such palette PNGs, _background_ = 0). Set it here,
# not in a config inheriting this one: the paths below are made from it when this file is read.
data_root = 'data/my_seg/'
# EDIT: one name per label value, from 0. Label 0 here is a class ('background'), so
# reduce_zero_label is False; where 0 means "not labelled" (ADE20K), drop it from the classes and
# set reduce_zero_label = True (the dataset check refuses a 'background' class 0 with it).
classes = ('background', 'road', 'car')
reduce_zero_label = False
# EDIT: training crops (the model sees crop_size pixels) and the (long side, short side) images
# are scaled to before cropping (x0.5..2 in training) and for testing.
crop_size = (512, 512)
image_scale = (2048, 512)
# EDIT: iterations (of 2 images per GPU), and how often to validate and save a checkpoint.
max_iters = 20000
interval = 2000

# Starting weights, EDIT one of:
# (a) the recipe's ImageNet-1K backbone (its init_cfg, inherited): the heads start random;
# (b) a whole UperNet trained on ADE20K: load_from = 'PATH'. Its heads' last layers, made for
#     150 classes, keep their initialisation and the log says how many tensors loaded, per part.
load_from = None

model = dict(
    data_preprocessor=dict(size=crop_size),
    decode_head=dict(num_classes=len(classes)),
    auxiliary_head=dict(num_classes=len(classes)),
    # sliding crop_size windows, 2/3 of a window apart (the recipe's 341 for 512)
    test_cfg=dict(mode='slide', crop_size=crop_size,
                  stride=tuple(c * 2 // 3 for c in crop_size)))

train_pipeline = [
    # skip_unreadable=True: train on without images that cannot be read (the dataset check
    # lists them before training starts either way).
    dict(type='convnext_backbone.LoadImageFromFile', skip_unreadable=False),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=image_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
seg_dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=dict(classes=classes),
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=reduce_zero_label)
train_dataloader = dict(dataset=dict(
    _delete_=True, **seg_dataset, pipeline=train_pipeline,
    data_prefix=dict(img_path='images/train', seg_map_path='labels/train')))
val_dataloader = dict(dataset=dict(
    _delete_=True, **seg_dataset, pipeline=test_pipeline,
    data_prefix=dict(img_path='images/val', seg_map_path='labels/val')))
test_dataloader = val_dataloader

train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=min(1500, max_iters)),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=0, end=max_iters),
]
# A checkpoint every `interval` iterations, the last 3 kept, plus the best by mIoU.
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=interval, max_keep_ckpts=3,
                                     save_best='mIoU', rule='greater'))
