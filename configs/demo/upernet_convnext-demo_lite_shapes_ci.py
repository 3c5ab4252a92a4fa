# CI variant of the segmentation demo: a few iterations on tiny data (`QUICK=1 bash tools/demo.sh`,
# tests/test_demo.py), then the real evaluation, so the demo path stays green.
_base_ = './upernet_convnext-demo_lite_shapes.py'

max_iters = 3
train_cfg = dict(max_iters=max_iters, val_interval=max_iters, val_begin=max_iters + 1)
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end=max_iters)]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False)
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval=max_iters))
