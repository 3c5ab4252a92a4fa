# The segmentation demo: UperNet with a small ConvNeXt on the generated ADE20K-layout dataset
# (tools/make_demo_data.py), trained and evaluated (mIoU) on a CPU in minutes. Run it with
# `make demo` or `DEMO=seg bash tools/demo.sh` (README.md, "The demo": recipe and figures).
#
# It reuses the detection demo's backbone pretraining (tools/pretrain_demo.py: a classifier on crops
# of the generated images, saved in the official classification layout), loads it with
# init_cfg=Pretrained and fine-tunes with stage-wise lr decay, as the official ADE20K recipe.
# Note: compared with the ADE20K configs, everything is shrunk to fit a 2-core CPU: the demo
# ConvNeXt, 64-channel UPerHead and 32-channel auxiliary head, BN instead of SyncBN (one process),
# the generated images at their size (no resize or crop), an iteration schedule with cosine decay.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
]

# The same backbone as the detection demo, so one pretraining serves both.
arch = dict(depths=(2, 2, 4, 2), dims=(32, 64, 128, 256))
pretrained = 'work_dirs/demo/pretrain/convnext-demo_shapes-cls.pth'
data_root = 'data/demo_ade'
classes = ('sky', 'grass', 'water', 'sand', 'circle', 'triangle', 'square', 'star')
palette = [(135, 206, 235), (34, 139, 34), (0, 70, 160), (222, 200, 140), (230, 40, 40),
           (240, 220, 40), (200, 40, 200), (40, 220, 220)]
max_iters = 400
norm_cfg = dict(type='BN', requires_grad=True)

model = dict(
    # Images are used at their generated size (tools/make_demo_data.py --seg-size).
    data_preprocessor=dict(size=None, size_divisor=32),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='convnext_backbone.ConvNeXt',
        arch=arch,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.0,
        layer_scale_init_value=1.0,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=list(arch['dims']), channels=64, num_classes=len(classes),
                     norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=arch['dims'][2], channels=32, num_classes=len(classes),
                        norm_cfg=norm_cfg),
    test_cfg=dict(mode='whole'))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale_factor=1.0, keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset_cfg = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=dict(classes=classes, palette=palette),
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(**dataset_cfg, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    persistent_workers=False,
    dataset=dict(**dataset_cfg, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# No evaluation during training: tools/test.py evaluates the final checkpoint (tools/demo.sh).
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters,
                 val_begin=max_iters + 1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=50, end=max_iters, eta_min_ratio=0.01),
]
# AdamW with stage-wise lr decay, as the official ADE20K recipe, at a demo-sized lr.
optim_wrapper = dict(
    type='OptimWrapper',
    constructor='convnext_backbone.LayerDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_rate=0.9, decay_type='stage_wise', num_layers=6),
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05))

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters, max_keep_ckpts=1),
    # `tools/test.py ... --show-dir DIR` writes every test image with its coloured prediction.
    visualization=dict(type='SegVisualizationHook', interval=1))
visualizer = dict(alpha=0.6)
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
randomness = dict(seed=0)
auto_scale_lr = dict(enable=False, base_batch_size=4)
