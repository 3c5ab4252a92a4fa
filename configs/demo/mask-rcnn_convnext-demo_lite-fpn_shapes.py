# The demo: Mask R-CNN with a small ConvNeXt on the generated shapes dataset
# (tools/make_demo_data.py), trained and evaluated (COCO bbox + segm mAP) on a CPU in minutes.
# Run it with `make demo` or `bash tools/demo.sh` (README.md, "The demo": recipe and figures).
#
# The paper's pipeline in miniature: the backbone is first pretrained as a classifier on crops of
# the same images (tools/pretrain_demo.py, official classification checkpoint layout), then loaded
# with init_cfg=Pretrained and fine-tuned with layer-wise lr decay.
# Note: compared with the COCO configs, everything is shrunk to fit a 2-core CPU: a ConvNeXt with
# depths 2-2-4-2 and 32..256 channels (no drop path for 600 iterations), a 64-channel 4-level FPN
# and heads, anchors of 24-192 px for 25-70 px objects, 128 sampled RoIs, the generated images at
# their size (tools/make_demo_data.py --det-size), and an iteration schedule with cosine decay.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/default_runtime.py',
]

# Shared with the segmentation demo (configs/demo/upernet_convnext-demo_lite_shapes.py) and read
# by tools/pretrain_demo.py --config.
arch = dict(depths=(2, 2, 4, 2), dims=(32, 64, 128, 256))
pretrained = 'work_dirs/demo/pretrain/convnext-demo_shapes-cls.pth'
data_root = 'data/demo_coco/'
classes = ('circle', 'triangle', 'square', 'star')
channels = 64
max_iters = 600

model = dict(
    backbone=dict(
        _delete_=True,
        type='convnext_backbone.ConvNeXt',
        arch=arch,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=list(arch['dims']), out_channels=channels, num_outs=4),
    rpn_head=dict(
        in_channels=channels,
        feat_channels=channels,
        anchor_generator=dict(scales=[6], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32])),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=channels, finest_scale=40),
        bbox_head=dict(in_channels=channels, fc_out_channels=256, num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=channels, finest_scale=40),
        mask_head=dict(in_channels=channels, conv_out_channels=channels, num_convs=2,
                       num_classes=len(classes))),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=300),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=100),
        rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale_factor=1.0),  # images are used at their generated size
    dict(type='RandomFlip', prob=0.5, direction=['horizontal', 'vertical']),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0),  # images are used at their generated size
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
metainfo = dict(classes=classes,
                palette=[(230, 40, 40), (240, 220, 40), (200, 40, 200), (40, 220, 220)])
train_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    batch_sampler=None,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_train.json',
        data_prefix=dict(img='train/'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=2,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        ann_file='annotations/instances_val.json',
        data_prefix=dict(img='val/'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# No evaluation during training: tools/test.py evaluates the final checkpoint (tools/demo.sh).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters,
                 val_begin=max_iters + 1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=100, end=max_iters, eta_min_ratio=0.01),
]
# AdamW with layer-wise lr decay, as the official recipe, at a demo-sized lr.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='convnext_backbone.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='layer_wise', num_layers=6),
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    # `tools/test.py ... --show-dir DIR` draws every test image with its boxes and masks.
    visualization=dict(type='DetVisualizationHook', score_thr=0.5))
log_processor = dict(by_epoch=False, window_size=20)
env_cfg = dict(dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=2)
