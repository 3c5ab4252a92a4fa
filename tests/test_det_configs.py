"""The COCO detection configs against the official recipes (Table 3 of the ConvNeXt paper).

The table below is written from docs of record (shared/reference/convnext-recipes.md and the
official ConvNeXt object_detection configs), independently of the config files.
"""
import ast
import copy
import functools
import glob
import os
from typing import NamedTuple, Optional, Tuple

import pytest
import torch
from helpers import ROOT
from mmengine.config import Config

CONFIGS = os.path.join(ROOT, 'configs')
URL = 'https://dl.fbaipublicfiles.com/convnext/'


class Recipe(NamedTuple):
    detector: str          # 'MaskRCNN' or 'CascadeRCNN'
    arch: str
    dims: Tuple[int, int, int, int]
    checkpoint: str        # file name under URL
    drop_path: float
    lr: float
    decay_rate: float
    num_layers: int
    amp: bool
    epochs: int
    steps: Tuple[int, int]
    params_m: Optional[float]  # Table 3 (None: not a row of the table)


T_DIMS, B_DIMS = (96, 192, 384, 768), (128, 256, 512, 1024)
L_DIMS, XL_DIMS = (192, 384, 768, 1536), (256, 512, 1024, 2048)
CASCADE = 'cascade-mask-rcnn_convnext-{}_fpn_4conv1fc-giou_{}ms-crop-3x_coco'
RECIPES = {
    'mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco': Recipe(
        'MaskRCNN', 'tiny', T_DIMS, 'convnext_tiny_1k_224.pth', 0.4, 1e-4, 0.95, 6, True, 36,
        (27, 33), 48),
    # 1x: the 3x recipe with mmdet's 1x schedule.
    'mask-rcnn_convnext-t_fpn_amp-ms-crop-1x_coco': Recipe(
        'MaskRCNN', 'tiny', T_DIMS, 'convnext_tiny_1k_224.pth', 0.4, 1e-4, 0.95, 6, True, 12,
        (8, 11), 48),
    # Not in the paper: T's optimiser, Cascade S's drop path, 12 layers.
    'mask-rcnn_convnext-s_fpn_amp-ms-crop-3x_coco': Recipe(
        'MaskRCNN', 'small', T_DIMS, 'convnext_small_1k_224.pth', 0.6, 1e-4, 0.95, 12, True, 36,
        (27, 33), None),
    CASCADE.format('t', 'amp-'): Recipe(
        'CascadeRCNN', 'tiny', T_DIMS, 'convnext_tiny_1k_224.pth', 0.4, 2e-4, 0.7, 6, True, 36,
        (27, 33), 86),
    CASCADE.format('s', 'amp-'): Recipe(
        'CascadeRCNN', 'small', T_DIMS, 'convnext_small_1k_224.pth', 0.6, 2e-4, 0.7, 12, True,
        36, (27, 33), 108),
    CASCADE.format('b', 'amp-'): Recipe(
        'CascadeRCNN', 'base', B_DIMS, 'convnext_base_1k_224.pth', 0.7, 2e-4, 0.8, 12, True, 36,
        (27, 33), 146),
    CASCADE.format('b-in22k', 'amp-'): Recipe(
        'CascadeRCNN', 'base', B_DIMS, 'convnext_base_22k_224.pth', 0.6, 1e-4, 0.8, 12, True,
        36, (27, 33), 146),
    CASCADE.format('l-in22k', ''): Recipe(
        'CascadeRCNN', 'large', L_DIMS, 'convnext_large_22k_224.pth', 0.7, 1e-4, 0.7, 12, False,
        36, (27, 33), 255),
    CASCADE.format('xl-in22k', ''): Recipe(
        'CascadeRCNN', 'xlarge', XL_DIMS, 'convnext_xlarge_22k_224.pth', 0.8, 1e-4, 0.7, 12,
        False, 36, (27, 33), 407),
}
TINY = {'MaskRCNN': 'mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco',
        'CascadeRCNN': CASCADE.format('t', 'amp-')}
MULTI_SCALES = [(1333, s) for s in (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)]
CASCADE_STDS = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
NAMES = sorted(RECIPES)


@functools.lru_cache(maxsize=None)
def _parse(name: str) -> Config:
    return Config.fromfile(os.path.join(CONFIGS, name + '.py'))


def load(name: str) -> Config:
    return copy.deepcopy(_parse(name))


def test_every_detection_config_has_a_recipe_row():
    found = {os.path.basename(p)[:-3] for p in glob.glob(os.path.join(CONFIGS, '*mask-rcnn_*.py'))}
    assert found == set(RECIPES)


@pytest.mark.parametrize('name', NAMES)
def test_config_follows_the_recipe(name):
    r, cfg = RECIPES[name], load(name)
    assert cfg.default_scope == 'mmdet'
    assert cfg.model.type == r.detector
    backbone = cfg.model.backbone
    assert backbone.type == 'convnext_backbone.ConvNeXt'
    assert backbone.arch == r.arch
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.drop_path_rate == r.drop_path
    assert backbone.layer_scale_init_value == 1.0
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=URL + r.checkpoint)
    assert set(backbone) == {'type', 'arch', 'out_indices', 'drop_path_rate',
                             'layer_scale_init_value', 'init_cfg'}  # no ResNet leftovers
    assert tuple(cfg.model.neck.in_channels) == r.dims
    assert cfg.model.neck.out_channels == 256 and cfg.model.neck.num_outs == 5

    wrapper = cfg.optim_wrapper
    assert wrapper.type == ('AmpOptimWrapper' if r.amp else 'OptimWrapper')
    assert wrapper.constructor == 'convnext_backbone.LayerDecayOptimizerConstructor'
    assert wrapper.optimizer == dict(type='AdamW', lr=r.lr, betas=(0.9, 0.999),
                                     weight_decay=0.05)
    assert wrapper.paramwise_cfg == dict(decay_rate=r.decay_rate, decay_type='layer_wise',
                                         num_layers=r.num_layers)
    assert 'clip_grad' not in wrapper and 'loss_scale' not in wrapper

    # mmdet's epoch loop, resumable inside an epoch
    assert cfg.train_cfg.type == 'convnext_backbone.ResumableEpochBasedTrainLoop'
    assert cfg.train_cfg.max_epochs == r.epochs
    warmup, steps = cfg.param_scheduler
    assert warmup == dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500)
    assert steps == dict(type='MultiStepLR', begin=0, end=r.epochs, by_epoch=True,
                         milestones=list(r.steps), gamma=0.1)
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=16)


@pytest.mark.parametrize('name', NAMES)
def test_num_layers_fits_the_backbone_depth(name):
    from convnext_backbone import ARCH_SETTINGS
    r = RECIPES[name]
    stage2_blocks = ARCH_SETTINGS[r.arch]['depths'][2]
    # Official rule: T (9 blocks) 6 layer ids, 27-block models 12 (3 + 27 // 3 = 12).
    assert r.num_layers == (6 if stage2_blocks == 9 else 12)


@pytest.mark.parametrize('name', NAMES)
def test_train_pipeline_is_flip_then_one_of_two_multiscale_crop_policies(name):
    cfg = load(name)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == ['LoadImageFromFile', 'LoadAnnotations', 'RandomFlip',
                                          'RandomChoice', 'PackDetInputs']
    assert pipeline[1].with_bbox and pipeline[1].with_mask
    assert pipeline[2].prob == 0.5
    resize_only, resize_crop_resize = pipeline[3].transforms
    assert len(resize_only) == 1
    assert resize_only[0] == dict(type='RandomChoiceResize', scales=MULTI_SCALES,
                                  keep_ratio=True)
    assert [t.type for t in resize_crop_resize] == ['RandomChoiceResize', 'RandomCrop',
                                                    'RandomChoiceResize']
    first, crop, last = resize_crop_resize
    assert sorted(min(s) for s in first.scales) == [400, 500, 600]
    assert all(max(s) == 1333 for s in first.scales) and first.keep_ratio
    assert crop == dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                        allow_negative_crop=True)
    assert last == resize_only[0]
    # Single-scale test at 1333x800.
    test_resize = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize']
    assert len(test_resize) == 1 and test_resize[0].scale == (1333, 800)


@pytest.mark.parametrize('name', [n for n in NAMES if RECIPES[n].detector == 'CascadeRCNN'])
def test_cascade_heads_are_4conv1fc_syncbn_with_giou_on_decoded_boxes(name):
    heads = load(name).model.roi_head.bbox_head
    assert len(heads) == 3
    for head, stds in zip(heads, CASCADE_STDS):
        assert head.type == 'ConvFCBBoxHead'
        assert (head.num_shared_convs, head.num_shared_fcs) == (4, 1)
        assert head.conv_out_channels == 256 and head.fc_out_channels == 1024
        assert head.norm_cfg == dict(type='SyncBN', requires_grad=True)
        assert head.reg_decoded_bbox is True and head.reg_class_agnostic is False
        assert head.loss_bbox == dict(type='GIoULoss', loss_weight=10.0)
        assert head.bbox_coder.target_stds == stds
        assert head.num_classes == 80


@pytest.mark.parametrize('name', [n for n in NAMES if n not in TINY.values()])
def test_larger_configs_inherit_the_tiny_config(name):
    with open(os.path.join(CONFIGS, name + '.py'), encoding='utf-8') as f:
        tree = ast.parse(f.read())
    bases = [node.value.value for node in tree.body if isinstance(node, ast.Assign)
             and getattr(node.targets[0], 'id', None) == '_base_']
    assert bases == [f'./{TINY[RECIPES[name].detector]}.py']


# -- building the real models --------------------------------------------------------------------
def _one_image_batch(size: int = 64) -> dict:
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData
    gen = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=gen)
    sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                         scale_factor=(1., 1.)))
    mask = torch.zeros(1, size, size, dtype=torch.uint8)
    mask[0, 12:44, 16:52] = 1
    sample.gt_instances = InstanceData(
        bboxes=torch.tensor([[16., 12., 52., 44.]]), labels=torch.tensor([3]),
        masks=BitmapMasks(mask.numpy(), size, size))
    return dict(inputs=[image], data_samples=[sample])


def _build(cfg: Config, num_rois: int = 0):
    """Build the config's model (real architecture, random weights). ``num_rois`` > 0 keeps
    that many proposals per image and samples that many RoIs per cascade stage in training:
    the heads' input size, which otherwise costs ~30 s per step on one CPU thread."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmdet')
    model_cfg = cfg.model
    if num_rois:
        model_cfg.train_cfg.rpn_proposal.max_per_img = num_rois
        rcnn = model_cfg.train_cfg.rcnn
        for stage in (rcnn if isinstance(rcnn, list) else [rcnn]):
            stage.sampler.num = num_rois
    return revert_sync_batchnorm(MODELS.build(model_cfg))  # SyncBN needs CUDA + a process group


@pytest.mark.parametrize('name', NAMES)
def test_model_builds_and_computes_finite_losses_with_gradients(name):
    pytest.importorskip('mmcv.ops')
    r, cfg = RECIPES[name], load(name)
    model = _build(cfg, num_rois=32).train()
    num_params = sum(p.numel() for p in model.parameters())
    if r.params_m is not None:  # Table 3's params column, within 3 %
        assert abs(num_params / 1e6 - r.params_m) / r.params_m < 0.03, num_params
    assert model.backbone.depths == {'tiny': (3, 3, 9, 3)}.get(r.arch, (3, 3, 27, 3))
    assert model.backbone.dims == r.dims
    data = model.data_preprocessor(_one_image_batch(), training=True)
    losses = model(**data, mode='loss')
    stages = ('s0.', 's1.', 's2.') if r.detector == 'CascadeRCNN' else ('',)
    for prefix in stages:
        for key in ('loss_cls', 'loss_bbox', 'loss_mask'):
            assert prefix + key in losses
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()
    stem = model.backbone.downsample_layers[0][0].weight
    assert stem.grad is not None and torch.isfinite(stem.grad).all() and stem.grad.abs().sum() > 0


@pytest.mark.parametrize('name', sorted(set(TINY.values())))
def test_layer_decay_gives_the_official_lr_scales(name):
    pytest.importorskip('mmcv.ops')
    from mmengine.optim import build_optim_wrapper
    r, cfg = RECIPES[name], load(name)
    model = _build(cfg)
    wrapper_cfg = cfg.optim_wrapper.copy()
    wrapper_cfg.type = 'OptimWrapper'  # AMP needs CUDA; the param groups are the same
    optimizer = build_optim_wrapper(model, wrapper_cfg).optimizer

    def group_of(param):
        return next(g for g in optimizer.param_groups if any(p is param for p in g['params']))

    n, rate = r.num_layers, r.decay_rate
    expected = [
        (model.backbone.downsample_layers[0][0].weight, rate ** (n + 1), 0.05),  # stem, id 0
        (model.backbone.stages[0][0].pwconv1.weight, rate ** n, 0.05),          # id 1
        (model.backbone.stages[2][0].dwconv.weight, rate ** (n - 2), 0.05),     # id 3
        (model.backbone.stages[3][0].gamma, rate, 0.),                          # id n, 1-D
        (model.backbone.norm3.weight, 1., 0.),                                  # id n + 1
        (model.neck.lateral_convs[0].conv.weight, 1., 0.05),
        (model.rpn_head.rpn_conv.bias, 1., 0.),
    ]
    for param, scale, weight_decay in expected:
        group = group_of(param)
        assert group['lr'] == pytest.approx(r.lr * scale)
        assert group['weight_decay'] == pytest.approx(weight_decay)
