"""The ConvNeXt-V2 (FCMAE) and DINOv3 dense-prediction configs: each follows its recipe, fits the
checkpoint file it names, builds and trains one step.

The recipes below are written from their sources, independently of the config files:
mmdetection's projects/ConvNeXt-V2/configs/mask-rcnn_convnext-v2-b_fpn_lsj-3x-fcmae_coco.py for
the V2 Mask R-CNN; for the others, the Table 3 / Table 4 config of the same size that each one
declares as its recipe (convnext-recipes.md), with the backbone and weights swapped.
"""
import ast
import copy
import functools
import math
import os
import re

import layouts
import pytest
import torch
from helpers import ROOT
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from reference import RefConvNeXt
from test_det_configs import _build as _build_detector
from test_det_configs import _one_image_batch
from test_seg_configs import _build_for_tiny_input, _cpu_optim_wrapper_cfg, _random_batch

from convnext_backbone import ARCH_SETTINGS, ConvNeXt, convert_state_dict
from convnext_backbone.checkpoint import check_fit
from convnext_backbone.checkpoint.layouts import DINOV3, FCMAE, OUTPUT_NORM

CONFIGS = os.path.join(ROOT, 'configs')
PT_ONLY = 'https://dl.fbaipublicfiles.com/convnext/convnextv2/pt_only/convnextv2_{}_1k_224_fcmae.pt'
# File names of transformers' convert_dinov3_convnext_to_hf.py (HUB_CHECKPOINTS).
DINOV3_FILE = 'checkpoints/dinov3_convnext_{}_pretrain_lvd1689m-{}.pth'
DINOV3_HASH = {'tiny': '21b726bb', 'small': '296db49d', 'base': '801f2ba9', 'large': '61fa432d'}

V2_MASK_RCNN = 'convnext-v2/mask-rcnn_convnext-v2-b_fpn_lsj-3x-fcmae_coco.py'
# config -> (arch, checkpoint, crop, drop path, lr, num_layers, AMP, the V1 config of its recipe)
SEG = {
    'convnext-v2/upernet_convnext-v2-t-fcmae_8xb2-amp-160k_ade20k-512x512.py': (
        'v2-tiny', PT_ONLY.format('tiny'), 512, 0.4, 1e-4, 6, True,
        'upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'),
    'convnext-v2/upernet_convnext-v2-b-fcmae_8xb2-amp-160k_ade20k-512x512.py': (
        'v2-base', PT_ONLY.format('base'), 512, 0.4, 1e-4, 12, True,
        'upernet_convnext-b_8xb2-amp-160k_ade20k-512x512.py'),
    'convnext-v2/upernet_convnext-v2-l-fcmae_8xb2-160k_ade20k-640x640.py': (
        'v2-large', PT_ONLY.format('large'), 640, 0.4, 1e-4, 12, False,
        'upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py'),
    'convnext-v2/upernet_convnext-v2-h-fcmae_8xb2-160k_ade20k-640x640.py': (
        'v2-huge', PT_ONLY.format('huge'), 640, 0.4, 8e-5, 12, False,
        'upernet_convnext-xl-in22k_8xb2-160k_ade20k-640x640.py'),
    'dinov3/upernet_convnext-t-dinov3_8xb2-amp-160k_ade20k-512x512.py': (
        'tiny', DINOV3_FILE.format('tiny', DINOV3_HASH['tiny']), 512, 0.4, 1e-4, 6, True,
        'upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'),
    'dinov3/upernet_convnext-s-dinov3_8xb2-amp-160k_ade20k-512x512.py': (
        'small', DINOV3_FILE.format('small', DINOV3_HASH['small']), 512, 0.3, 1e-4, 12, True,
        'upernet_convnext-s_8xb2-amp-160k_ade20k-512x512.py'),
    'dinov3/upernet_convnext-b-dinov3_8xb2-amp-160k_ade20k-640x640.py': (
        'base', DINOV3_FILE.format('base', DINOV3_HASH['base']), 640, 0.4, 1e-4, 12, True,
        'upernet_convnext-b-in22k_8xb2-amp-160k_ade20k-640x640.py'),
    'dinov3/upernet_convnext-l-dinov3_8xb2-160k_ade20k-640x640.py': (
        'large', DINOV3_FILE.format('large', DINOV3_HASH['large']), 640, 0.4, 1e-4, 12, False,
        'upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py'),
}
# config -> (arch, checkpoint, drop path, num_layers, AMP): Table 3's Mask R-CNN T recipe
# (lr 1e-4, layer-wise 0.95, 3x, multi-scale + crop), drop path per size from our Mask R-CNN S
# and Table 3's Cascade B / L (22K) rows.
DET = {
    'dinov3/mask-rcnn_convnext-t-dinov3_fpn_amp-ms-crop-3x_coco.py': (
        'tiny', DINOV3_FILE.format('tiny', DINOV3_HASH['tiny']), 0.4, 6, True),
    'dinov3/mask-rcnn_convnext-s-dinov3_fpn_amp-ms-crop-3x_coco.py': (
        'small', DINOV3_FILE.format('small', DINOV3_HASH['small']), 0.6, 12, True),
    'dinov3/mask-rcnn_convnext-b-dinov3_fpn_amp-ms-crop-3x_coco.py': (
        'base', DINOV3_FILE.format('base', DINOV3_HASH['base']), 0.6, 12, True),
    'dinov3/mask-rcnn_convnext-l-dinov3_fpn_ms-crop-3x_coco.py': (
        'large', DINOV3_FILE.format('large', DINOV3_HASH['large']), 0.7, 12, False),
}
V1_MASK_RCNN_T = 'mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'
ALL = sorted([V2_MASK_RCNN, *SEG, *DET])


@functools.lru_cache(maxsize=None)
def _parse(name: str) -> Config:
    return Config.fromfile(os.path.join(CONFIGS, name))


def _load(name: str) -> Config:
    return copy.deepcopy(_parse(name))


def _scope(cfg: Config) -> str:
    init_default_scope(cfg.default_scope)
    return cfg.default_scope


def test_every_config_in_the_two_folders_has_a_recipe_row():
    found = {f'{folder}/{n}' for folder in ('convnext-v2', 'dinov3')
             for n in os.listdir(os.path.join(CONFIGS, folder)) if n.endswith('.py')}
    assert found == set(ALL)


# -- the V2 Mask R-CNN: mmdet's ConvNeXt-V2 project ------------------------------------------------
def test_v2_mask_rcnn_follows_mmdets_convnext_v2_project():
    cfg = _load(V2_MASK_RCNN)
    assert cfg.default_scope == 'mmdet' and cfg.model.type == 'MaskRCNN'
    assert cfg.model.backbone == dict(type='convnext_backbone.ConvNeXt', arch='v2-base',
                                      out_indices=(0, 1, 2, 3), drop_path_rate=0.4,
                                      init_cfg=dict(type='Pretrained',
                                                    checkpoint=PT_ONLY.format('base')))
    assert cfg.model.neck.in_channels == [128, 256, 512, 1024]
    assert cfg.model.test_cfg.rcnn.nms.type == 'soft_nms'
    assert cfg.model.test_cfg.rpn.nms.type == 'nms'
    assert [t.type for t in cfg.train_dataloader.dataset.pipeline] == [
        'LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
        'FilterAnnotations', 'RandomFlip', 'PackDetInputs']
    resize, crop, filt, flip = cfg.train_dataloader.dataset.pipeline[2:6]
    assert (resize.scale, resize.ratio_range, resize.keep_ratio) == ((1024, 1024), (0.1, 2.0), True)
    assert (crop.crop_type, crop.crop_size, crop.recompute_bbox, crop.allow_negative_crop) == (
        'absolute_range', (1024, 1024), True, True)
    assert filt.min_gt_bbox_wh == (1e-2, 1e-2) and flip.prob == 0.5
    assert cfg.train_dataloader.batch_size == 4 and cfg.auto_scale_lr.base_batch_size == 32
    assert cfg.train_cfg.max_epochs == 36
    warmup, steps = cfg.param_scheduler
    assert (warmup.type, warmup.start_factor, warmup.end, warmup.by_epoch) == (
        'LinearLR', 0.001, 1000, False)
    assert (steps.type, steps.milestones, steps.gamma, steps.end) == (
        'MultiStepLR', [27, 33], 0.1, 36)
    wrapper = cfg.optim_wrapper
    assert wrapper.type == 'AmpOptimWrapper'
    assert wrapper.constructor == 'convnext_backbone.LayerDecayOptimizerConstructor'
    assert wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                     weight_decay=0.05)
    assert wrapper.paramwise_cfg == dict(decay_rate=0.95, decay_type='layer_wise', num_layers=12)


# -- DINOv3 and V2 UperNet, DINOv3 Mask R-CNN: a V1 recipe with other weights ----------------------
@pytest.mark.parametrize('name', sorted(SEG))
def test_upernet_config_is_its_table_4_recipe_with_the_new_backbone(name):
    arch, checkpoint, crop, drop_path, lr, num_layers, amp, v1 = SEG[name]
    cfg, recipe = _load(name), _load(v1)
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch, backbone.drop_path_rate) == (
        'convnext_backbone.ConvNeXt', arch, drop_path)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=checkpoint)
    dims = list(ARCH_SETTINGS[arch]['dims'])
    assert cfg.model.decode_head.in_channels == dims
    assert cfg.model.auxiliary_head.in_channels == dims[2]
    assert cfg.model.data_preprocessor.size == (crop, crop)
    assert cfg.model.test_cfg.crop_size == (crop, crop)
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if amp else 'OptimWrapper')
    assert cfg.optim_wrapper.optimizer.lr == lr
    assert cfg.optim_wrapper.paramwise_cfg == dict(decay_rate=0.9, decay_type='stage_wise',
                                                   num_layers=num_layers)
    # everything else is the V1 row's: data, schedule, heads, TTA
    for key in ('train_dataloader', 'test_dataloader', 'param_scheduler', 'train_cfg',
                'tta_pipeline', 'auto_scale_lr'):
        assert cfg[key] == recipe[key], key
    for key in ('decode_head', 'auxiliary_head'):
        ours, theirs = cfg.model[key], recipe.model[key]
        assert {k: v for k, v in ours.items() if k != 'in_channels'} == {
            k: v for k, v in theirs.items() if k != 'in_channels'}


@pytest.mark.parametrize('name', sorted(DET))
def test_dinov3_mask_rcnn_config_is_table_3s_recipe_with_dinov3_weights(name):
    arch, checkpoint, drop_path, num_layers, amp = DET[name]
    cfg, recipe = _load(name), _load(V1_MASK_RCNN_T)
    backbone = cfg.model.backbone
    assert (backbone.arch, backbone.drop_path_rate, backbone.layer_scale_init_value) == (
        arch, drop_path, 1.0)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=checkpoint)
    assert cfg.model.neck.in_channels == list(ARCH_SETTINGS[arch]['dims'])
    assert cfg.optim_wrapper.type == ('AmpOptimWrapper' if amp else 'OptimWrapper')
    assert cfg.optim_wrapper.paramwise_cfg == dict(decay_rate=0.95, decay_type='layer_wise',
                                                   num_layers=num_layers)
    for key in ('train_dataloader', 'test_dataloader', 'param_scheduler', 'train_cfg',
                'auto_scale_lr'):
        assert cfg[key] == recipe[key], key
    assert cfg.optim_wrapper.optimizer == recipe.optim_wrapper.optimizer
    assert cfg.model.roi_head == recipe.model.roi_head
    assert cfg.model.rpn_head == recipe.model.rpn_head


@pytest.mark.parametrize('name', ALL)
def test_config_inherits_one_base_and_states_only_what_changes(name):
    with open(os.path.join(CONFIGS, name), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    bases = [node.value for node in tree.body if isinstance(node, ast.Assign)
             and getattr(node.targets[0], 'id', None) == '_base_']
    assert len(bases) == 1
    if name == V2_MASK_RCNN:  # mmdet's Mask R-CNN and our COCO 3x base (mmdet's bases inside)
        assert [b.value for b in bases[0].elts] == [
            'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
            '../_base_/coco-instance_ms-crop-3x_adamw-layer-decay.py']
    else:
        base = bases[0].value
        assert base.startswith(('../', './')) and os.path.isfile(
            os.path.normpath(os.path.join(CONFIGS, os.path.dirname(name), base)))


# -- the checkpoint each config names fits its backbone -------------------------------------------
def _released_arch(checkpoint: str) -> str:
    dinov3 = re.search(r'dinov3_convnext_(\w+?)_pretrain', checkpoint)
    return dinov3.group(1) if dinov3 else 'v2-' + re.search(r'convnextv2_(\w+?)_1k', checkpoint)[1]


@pytest.mark.parametrize('name', ALL)
def test_the_checkpoint_the_config_names_fits_its_backbone(name):
    """A file of the family and size the config names (shapes only) fits the config's backbone
    exactly, and num_layers is the backbone's official one."""
    cfg = _load(name)
    backbone_cfg = cfg.model.backbone
    arch = _released_arch(backbone_cfg.init_cfg.checkpoint)
    setting = ARCH_SETTINGS[arch]
    writer = layouts.fcmae if arch.startswith('v2') else layouts.dinov3
    with torch.device('meta'):
        ref = RefConvNeXt(setting['depths'], setting['dims'], v2=setting.get('use_grn', False))
        backbone = ConvNeXt(**{k: v for k, v in backbone_cfg.items()
                               if k not in ('type', 'init_cfg')})
    converted = convert_state_dict(writer(ref.state_dict(), setting['dims']))
    assert converted.layout == (FCMAE if arch.startswith('v2') else DINOV3)
    fit, _, _ = check_fit(backbone.state_dict(), converted.state_dict, optional=OUTPUT_NORM.match)
    assert fit, fit.describe()
    # the official num_layers, stage-wise too: 6 for a 9-block stage 2, 12 for 27 blocks
    assert cfg.optim_wrapper.paramwise_cfg.num_layers == backbone.default_num_layers('layer_wise')


# -- building the real models ----------------------------------------------------------------------
# Above this many parameters the optimizer step is left out: AdamW's state would add 5.6 GB to
# the 5.6 GB of V2-H's weights and gradients (700M parameters) on a shared 24 GB machine.
STEP_MAX_PARAMS = 300e6


@pytest.mark.parametrize('name', ALL)
def test_config_builds_and_trains_one_step(name):
    """Loss, gradients in the backbone, and one step of the config's own optimiser (the plain
    OptimWrapper: AMP needs a GPU) with its layer-wise or stage-wise decay."""
    pytest.importorskip('mmcv.ops')
    cfg = _load(name)
    if _scope(cfg) == 'mmdet':
        model = _build_detector(cfg, num_rois=32).train()
        data = model.data_preprocessor(_one_image_batch(), training=True)
        losses = model(**data, mode='loss')
        assert {'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    else:
        model = _build_for_tiny_input(cfg)
        data = model.data_preprocessor(_random_batch(), training=True)
        losses = model(**data, mode='loss')
        assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    assert model.backbone.dims == ARCH_SETTINGS[cfg.model.backbone.arch]['dims']
    optim_wrapper = build_optim_wrapper(model, _cpu_optim_wrapper_cfg(cfg))
    total, _ = model.parse_losses(losses)
    assert math.isfinite(total.item())
    optim_wrapper.backward(total)
    stem = model.backbone.downsample_layers[0][0].weight
    assert stem.grad is not None and torch.isfinite(stem.grad).all() and stem.grad.abs().sum() > 0
    if sum(p.numel() for p in model.parameters()) < STEP_MAX_PARAMS:
        before = stem.detach().clone()
        optim_wrapper.step()
        assert torch.isfinite(stem).all() and not torch.equal(stem.detach(), before)
