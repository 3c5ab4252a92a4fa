# Mask R-CNN + ConvNeXt-T fine-tuned on your own COCO-format instance segmentation set
# (docs/own-data.md). Copy this file and change the lines marked EDIT; everything else comes from
# the shipped recipe (AdamW with layer-wise lr decay, mixed precision, the FPN and heads).
#
#   python tools/train.py my_config.py --auto-scale-lr     # --auto-scale-lr: fewer than 8 GPUs
#   python tools/test.py my_config.py work_dirs/my_config/epoch_12.pth
_base_ = '../mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'

# EDIT: data_root holds annotations/train.json, annotations/val.json (COCO format, polygon or
# RLE masks) and the images in train/ and val/. Set it here, not in a config inheriting this
# one: the paths below are made from it when this file is read.
data_root = 'data/my_coco/'
# EDIT: the object classes, as the "name"s of the json's "categories" (any order, any subset).
# Leave out '_background_', the category id 0 that labelme's COCO export writes: it is no object
# (the dataset check names it if it is listed).
classes = ('cat', 'dog')
# EDIT: the (long side, short side) images are tested at; training picks the short side at random
# from 60% to 100% of it. COCO's is (1333, 800); small objects want larger, few GPUs smaller.
image_scale = (1333, 800)
# EDIT: epochs; lr x0.1 after 2/3 and 11/12 of them, as mmdet's 1x schedule (8 and 11 of 12).
max_epochs = 12

# Starting weights, EDIT one of:
# (a) the recipe's ImageNet-1K backbone (its init_cfg, inherited): neck and heads start random;
# (b) a whole Mask R-CNN trained on COCO (e.g. work_dirs/.../epoch_36.pth of the recipe):
#     load_from = 'PATH'. The heads' last layers, made for 80 classes, keep their initialisation
#     and the log says how many tensors loaded, per part. A file holding a backbone alone is
#     refused there: give it to the backbone's init_cfg.
load_from = None

model = dict(
    roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                  mask_head=dict(num_classes=len(classes))))

short = image_scale[1]
train_pipeline = [
    # skip_unreadable=True: train on without images that cannot be read (the dataset check
    # lists them before training starts either way).
    dict(type='convnext_backbone.LoadImageFromFile', skip_unreadable=False),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', keep_ratio=True,
         scales=[(image_scale[0], s) for s in range(int(short * 0.6) // 32 * 32, short + 1, 32)]),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
metainfo = dict(classes=classes)
train_dataloader = dict(
    batch_size=2,
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo, ann_file='annotations/val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
# The metric reads the same file as the val dataset (the check warns when they differ).
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator

train_cfg = dict(max_epochs=max_epochs, val_interval=1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, gamma=0.1,
         milestones=[round(max_epochs * 2 / 3), round(max_epochs * 11 / 12)]),
]
# A checkpoint per epoch, the last 3 kept, plus the best by mask mAP (best_coco_segm_mAP_*.pth).
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=3, save_best='coco/segm_mAP',
                                     rule='greater'))
