"""LayerDecayOptimizerConstructor: official layer ids, lr and weight decay of every parameter of
real mmdet/mmseg models, errors, mmengine's paramwise options, and real Runner training steps."""
import copy
import functools
import importlib
import logging
import os
import re

import cv2
import numpy as np
import pytest
import torch
from helpers import SMALL, one_line
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from convnext_backbone import ARCH_SETTINGS, ConvNeXt
from convnext_backbone.convnext import GRN
from convnext_backbone.layer_decay import LayerDecayOptimizerConstructor

MINI = dict(depths=(1, 1, 3, 1), dims=(16, 32, 64, 128))
MINI_V2 = dict(MINI, use_grn=True)
LR, WD = 1e-3, 0.05


# -- building real models from configs ---------------------------------------------------------
def _dims(arch):
    return list((ARCH_SETTINGS[arch] if isinstance(arch, str) else arch)['dims'])


@functools.lru_cache(maxsize=None)
def _base(name):
    """A base config shipped inside mmdet/mmseg, e.g. 'mmdet::_base_/models/x.py'.

    Read by path: mmengine 0.10.7 resolves 'mmdet::' with pkg_resources, which recent setuptools
    (84 here) no longer ships.
    """
    package, path = name.split('::')
    root = os.path.dirname(importlib.import_module(package).__file__)
    return Config.fromfile(os.path.join(root, '.mim', 'configs', path))


def det_model_cfg(arch, **backbone):
    """Mask R-CNN FPN from mmdet's base config with our backbone (FPN widths from its dims)."""
    model = copy.deepcopy(_base('mmdet::_base_/models/mask-rcnn_r50_fpn.py').model)
    model.backbone = dict(type='convnext_backbone.ConvNeXt', arch=arch, **backbone)
    model.neck.in_channels = _dims(arch)
    # One class and few proposals: the tests are about the optimizer, not the heads.
    model.roi_head.bbox_head.num_classes = 1
    model.roi_head.mask_head.num_classes = 1
    model.train_cfg.rpn_proposal.update(nms_pre=200, max_per_img=50)
    model.train_cfg.rcnn.sampler.num = 32
    return model


def seg_model_cfg(arch, **backbone):
    """UperNet (EncoderDecoder + UPerHead + FCN auxiliary head) with our backbone, narrow heads."""
    model = copy.deepcopy(_base('mmseg::_base_/models/upernet_r50.py').model)
    dims = _dims(arch)
    model.pretrained = None
    model.backbone = dict(type='convnext_backbone.ConvNeXt', arch=arch, **backbone)
    model.data_preprocessor.size = (64, 64)
    model.decode_head.update(in_channels=dims, channels=32, num_classes=4,
                             norm_cfg=dict(type='BN', requires_grad=True))
    model.auxiliary_head.update(in_channels=dims[2], channels=16, num_classes=4,
                                norm_cfg=dict(type='BN', requires_grad=True))
    return model


def build(scope, model_cfg):
    with DefaultScope.overwrite_default_scope(scope):
        from mmengine.registry import MODELS
        return MODELS.build(model_cfg)


@functools.lru_cache(maxsize=None)
def detector(arch):
    """A real Mask R-CNN, built once per arch for this module."""
    return build('mmdet', det_model_cfg(arch))


@pytest.fixture(scope='module', autouse=True)
def _free_detectors():
    yield
    detector.cache_clear()


def optim_cfg(**paramwise):
    return dict(type='OptimWrapper', constructor='convnext_backbone.LayerDecayOptimizerConstructor',
                optimizer=dict(type='AdamW', lr=LR, betas=(0.9, 0.999), weight_decay=WD),
                paramwise_cfg=paramwise)


def build_groups(model, scope='mmdet', **paramwise):
    with DefaultScope.overwrite_default_scope(scope):
        return build_optim_wrapper(model, optim_cfg(**paramwise)).optimizer.param_groups


def group_of(groups):
    """id(param) -> its group; fails if a parameter is in two groups."""
    found = {}
    for group in groups:
        for param in group['params']:
            assert id(param) not in found, 'a parameter is in two param groups'
            found[id(param)] = group
    return found


# -- the expectation, from the recipe's rules (independent of get_layer_id) ---------------------
def expected_layer_ids(backbone, num_layers, decay_type):
    """id(param) -> layer id, walking the backbone's modules stage by stage."""
    ids = {}

    def put(module, layer_id):
        ids.update({id(p): layer_id for p in module.parameters()})

    for stage in range(4):
        downsample, blocks = backbone.downsample_layers[stage], backbone.stages[stage]
        if decay_type == 'stage_wise':
            put(downsample, 0)
            put(blocks, stage + 1)
        elif stage == 2:
            put(downsample, 3)
            for b, block in enumerate(blocks):
                put(block, 3 + b // 3)
        else:
            put(downsample, (0, 2, None, num_layers)[stage])
            put(blocks, (1, 2, None, num_layers)[stage])
    return ids  # anything absent (output norms, neck, heads) is num_layers + 1


def expected_lr_wd(model, num_layers, decay_rate, decay_type):
    ids = expected_layer_ids(model.backbone, num_layers, decay_type)
    no_decay = {id(p) for m in model.modules() if isinstance(m, GRN) for p in m.parameters()}
    out = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer_id = ids.get(id(param), num_layers + 1)
        lr = LR * decay_rate ** (num_layers + 1 - layer_id)
        flat = param.ndim == 1 or name.endswith('.bias') or id(param) in no_decay
        out[name] = (lr, 0. if flat else WD)
    return out


def assert_groups_match(model, groups, expected):
    where = group_of(groups)
    params = dict(model.named_parameters())
    got = {name: (where[id(params[name])]['lr'], where[id(params[name])]['weight_decay'])
           if id(params[name]) in where else None for name in expected}
    wrong = [(name, got[name], want) for name, want in expected.items()
             if got[name] is None or got[name][0] != pytest.approx(want[0], rel=1e-9)
             or got[name][1] != want[1]]
    assert not wrong, f'{len(wrong)} parameters misplaced, first (name, got, want): {wrong[:3]}'
    assert len(where) == len(expected), 'frozen or foreign parameters in the optimizer'
    # Merged: exactly one group per distinct (lr, weight decay).
    assert len(groups) == len(set(expected.values()))


# -- every parameter of a real detector --------------------------------------------------------
@pytest.mark.parametrize('arch,decay_type,num_layers,decay_rate', [
    ('tiny', 'layer_wise', 6, 0.95),
    ('tiny', 'layer_wise', 6, 0.7),
    ('tiny', 'stage_wise', 6, 0.9),
    (MINI_V2, 'layer_wise', 6, 0.8),
    ('small', 'layer_wise', 12, 0.7),
    ('small', 'layer_wise', 12, 0.8),
    ('small', 'stage_wise', 12, 0.9),
    ('base', 'layer_wise', 12, 0.7),
    ('base', 'layer_wise', 12, 0.8),
    ('base', 'stage_wise', 12, 0.9),
], ids=['T-lw6-0.95', 'T-lw6-0.7', 'T-sw6-0.9', 'V2mini-lw6-0.8', 'S-lw12-0.7', 'S-lw12-0.8',
        'S-sw12-0.9', 'B-lw12-0.7', 'B-lw12-0.8', 'B-sw12-0.9'])
def test_every_detector_parameter_gets_the_official_lr_and_weight_decay(arch, decay_type,
                                                                        num_layers, decay_rate):
    model = detector(arch) if isinstance(arch, str) else build('mmdet', det_model_cfg(arch))
    groups = build_groups(model, num_layers=num_layers, decay_rate=decay_rate,
                          decay_type=decay_type)
    assert_groups_match(model, groups,
                        expected_lr_wd(model, num_layers, decay_rate, decay_type))


@pytest.mark.parametrize('scope,arch,decay_type,num_layers,decay_rate', [
    ('mmdet', 'tiny', 'layer_wise', 6, 0.95),
    ('mmdet', 'small', 'layer_wise', 12, 0.7),
    ('mmdet', 'tiny', 'stage_wise', 6, 0.9),
    ('mmseg', 'tiny', 'stage_wise', 6, 0.9),
])
def test_agrees_with_the_mmdet_and_mmseg_convnext_constructors(scope, arch, decay_type,
                                                               num_layers, decay_rate):
    # mmdet's and mmseg's own (name-matching, one group per parameter) ports of the official
    # constructor, run on the same model: every parameter must get the same lr and weight decay.
    model = detector(arch) if scope == 'mmdet' else build('mmseg', seg_model_cfg(arch))
    paramwise = dict(num_layers=num_layers, decay_rate=decay_rate, decay_type=decay_type)
    ours = group_of(build_groups(model, scope, **paramwise))
    with DefaultScope.overwrite_default_scope(scope):
        cfg = dict(optim_cfg(**paramwise), constructor='LearningRateDecayOptimizerConstructor')
        theirs = group_of(build_optim_wrapper(model, cfg).optimizer.param_groups)
    assert ours.keys() == theirs.keys()
    wrong = [name for name, p in model.named_parameters()
             if ours[id(p)]['lr'] != pytest.approx(theirs[id(p)]['lr'], rel=1e-12)
             or ours[id(p)]['weight_decay'] != theirs[id(p)]['weight_decay']]
    assert not wrong


LAYER_WISE_EXAMPLES = {  # recipes file: layer_wise n=6 r=0.95
    'backbone.downsample_layers.0.0.weight': 0.698,
    'backbone.stages.0.2.pwconv1.weight': 0.735,
    'backbone.downsample_layers.1.1.weight': 0.774,
    'backbone.stages.1.0.dwconv.weight': 0.774,
    'backbone.stages.2.0.pwconv2.weight': 0.815,
    'backbone.stages.3.2.pwconv1.weight': 0.95,
    'backbone.downsample_layers.3.1.weight': 0.95,
    'backbone.norm3.weight': 1.0,
    'neck.lateral_convs.0.conv.weight': 1.0,
    'roi_head.bbox_head.fc_cls.weight': 1.0,
}
STAGE_WISE_EXAMPLES = {  # recipes file: stage_wise n=6 r=0.9
    'backbone.downsample_layers.0.0.weight': 0.478,
    'backbone.downsample_layers.2.1.weight': 0.478,
    'backbone.downsample_layers.3.0.weight': 0.478,
    'backbone.stages.0.0.pwconv1.weight': 0.531,
    'backbone.stages.1.2.dwconv.weight': 0.590,
    'backbone.stages.2.8.pwconv2.weight': 0.656,
    'backbone.stages.3.0.gamma': 0.729,
    'backbone.norm0.weight': 1.0,
    'rpn_head.rpn_conv.weight': 1.0,
}


@pytest.mark.parametrize('decay_type,decay_rate,examples', [
    ('layer_wise', 0.95, LAYER_WISE_EXAMPLES), ('stage_wise', 0.9, STAGE_WISE_EXAMPLES)])
def test_recipe_worked_examples(decay_type, decay_rate, examples):
    model = detector('tiny')
    where = group_of(build_groups(model, num_layers=6, decay_rate=decay_rate,
                                  decay_type=decay_type))
    params = dict(model.named_parameters())
    got = {name: round(where[id(params[name])]['lr'] / LR, 3) for name in examples}
    assert got == examples


@pytest.mark.parametrize('arch,decay_rate,num_layers', [('tiny', 0.95, 6), ('small', 0.7, 12)])
def test_omitted_num_layers_uses_the_backbone_default(arch, decay_rate, num_layers):
    model = detector(arch)
    where = group_of(build_groups(model, decay_rate=decay_rate))
    stem = model.backbone.downsample_layers[0][0].weight
    assert where[id(stem)]['lr'] == pytest.approx(LR * decay_rate ** (num_layers + 1))


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize('decay_type,num_layers,fits', [
    ('layer_wise', 6, 'num_layers >= 12'), ('layer_wise', 11, 'num_layers >= 12'),
    ('stage_wise', 2, 'num_layers >= 3')])
def test_num_layers_too_small_for_the_backbone_says_what_fits(decay_type, num_layers, fits):
    with pytest.raises(ValueError, match=fits) as err:
        build_groups(detector('small'), num_layers=num_layers, decay_rate=0.9,
                     decay_type=decay_type)
    assert f'num_layers={num_layers}' in str(err.value)
    assert '(3, 3, 27, 3)' in str(err.value)


@pytest.mark.parametrize('paramwise,message', [
    (dict(decay_rate=0.9, decay_type='block_wise'), "'layer_wise', 'stage_wise'"),
    (dict(num_layers=6), 'needs decay_rate'),
    (dict(decay_rate=1.5), r'decay_rate=1.5 must be a number in \(0, 1\]'),
    (dict(decay_rate=0.9, num_layers=6.0), 'num_layers=6.0 must be a positive int'),
    (dict(decay_rate=0.9, dcn_offset_lr_mult=0.1), "'dcn_offset_lr_mult'"),
    (dict(decay_rate=0.9, custom_keys={'neck': dict(momentum=0.5)}), "'momentum'"),
    ({}, 'needs paramwise_cfg'),
])
@pytest.mark.core
@pytest.mark.onedl_core
def test_bad_paramwise_cfg_is_refused_with_what_is_allowed(paramwise, message):
    cfg = optim_cfg()
    with pytest.raises(ValueError, match=message):
        LayerDecayOptimizerConstructor(cfg, paramwise)


def test_backbone_without_get_layer_id_is_refused_by_class_name():
    cfg = det_model_cfg('tiny')
    cfg.backbone = dict(type='ResNet', depth=18)
    cfg.neck.in_channels = [64, 128, 256, 512]
    with pytest.raises(TypeError, match='backbone ResNet has no get_layer_id'):
        build_groups(build('mmdet', cfg), decay_rate=0.9, num_layers=6)


@pytest.mark.core
def test_model_without_backbone_is_refused():
    with pytest.raises(ValueError, match='Linear has none'):
        build_groups(torch.nn.Linear(2, 2), decay_rate=0.9, num_layers=6)


class Detector(torch.nn.Module):
    """A ConvNeXt backbone and a head: what the constructor reads, without mmdet."""

    def __init__(self, arch):
        super().__init__()
        self.backbone = ConvNeXt(arch=arch)
        self.head = torch.nn.Linear(4, 2)


def _build_optimizer(paramwise_cfg, arch=None):
    arch = arch or dict(depths=(1, 1, 9, 1), dims=(8, 16, 32, 64))
    constructor = LayerDecayOptimizerConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
        paramwise_cfg)
    return constructor(Detector(arch))


@pytest.mark.parametrize('num_layers, decay_type, least', [
    (4, 'layer_wise', 6),   # 9 blocks in stage 2 need 4 + (9 - 1) // 3 = 6
    (2, 'stage_wise', 3),
])
@pytest.mark.core
def test_num_layers_that_does_not_fit_the_backbone_is_named(num_layers, decay_type, least):
    with pytest.raises(ValueError) as err:
        _build_optimizer(dict(num_layers=num_layers, decay_rate=0.9, decay_type=decay_type))
    message = one_line(str(err.value))
    assert message.startswith(f'num_layers={num_layers} does not fit backbone ConvNeXt with '
                              'depths (1, 1, 9, 1)')
    assert f'need num_layers >= {least}' in message


@pytest.mark.core
def test_unknown_decay_type_lists_the_known_ones():
    with pytest.raises(ValueError, match=re.escape(
            "unknown decay_type 'block_wise'; use one of 'layer_wise', 'stage_wise'")):
        _build_optimizer(dict(num_layers=6, decay_rate=0.9, decay_type='block_wise'))
    with pytest.raises(ValueError, match="unknown decay_type 'block_wise'"):
        ConvNeXt(arch=SMALL).get_layer_id('stages.0.0.dwconv.weight', 6, 'block_wise')


# -- frozen parameters and mmengine's options on top --------------------------------------------
def test_frozen_stages_are_left_out_and_the_rest_keeps_its_lr():
    model = build('mmdet', det_model_cfg(MINI, frozen_stages=2))
    groups = build_groups(model, num_layers=6, decay_rate=0.9)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(('backbone.downsample_layers.0', 'backbone.stages.0',
                                        'backbone.downsample_layers.1', 'backbone.stages.1'))
                          for n in frozen)
    assert_groups_match(model, groups, expected_lr_wd(model, 6, 0.9, 'layer_wise'))


@pytest.mark.parametrize('paramwise,changes', [
    # custom_keys: lr_mult multiplies the layer scale, decay_mult the weight decay (0 stays 0).
    (dict(custom_keys={'backbone.stages.3': dict(lr_mult=0.1), 'neck': dict(decay_mult=0.5)}),
     {'backbone.stages.3.0.pwconv1.weight': (0.1, 1.), 'backbone.stages.3.0.pwconv1.bias':
      (0.1, 1.), 'neck.fpn_convs.1.conv.weight': (1., 0.5), 'neck.fpn_convs.1.conv.bias': (1., 1.),
      'backbone.downsample_layers.3.1.weight': (1., 1.)}),
    # The longest matching key wins, as in mmengine.
    (dict(custom_keys={'backbone': dict(lr_mult=0.5), 'backbone.stages.2.1': dict(lr_mult=2.)}),
     {'backbone.stages.2.1.pwconv2.weight': (2., 1.), 'backbone.stages.2.0.pwconv2.weight':
      (0.5, 1.), 'backbone.norm1.weight': (0.5, 1.), 'rpn_head.rpn_cls.weight': (1., 1.)}),
    (dict(bias_lr_mult=2., dwconv_decay_mult=0.), {
        'backbone.stages.1.0.pwconv1.bias': (2., 1.), 'backbone.stages.1.0.norm.bias': (1., 1.),
        'backbone.stages.1.0.dwconv.weight': (1., 0.), 'neck.lateral_convs.2.conv.bias':
        (2., 1.), 'backbone.stages.1.0.pwconv1.weight': (1., 1.)}),
    # The rule already gives norms and biases no decay: these options change nothing here.
    (dict(norm_decay_mult=0., bias_decay_mult=0., flat_decay_mult=0.), {}),
], ids=['custom_keys', 'longest_key', 'bias_lr_dwconv_decay', 'norm_bias_flat_decay'])
def test_mmengine_paramwise_options_multiply_on_top(paramwise, changes):
    model = detector('tiny')
    groups = build_groups(model, num_layers=6, decay_rate=0.95, **paramwise)
    expected = expected_lr_wd(model, 6, 0.95, 'layer_wise')
    for name, (lr_mult, decay_mult) in changes.items():
        lr, wd = expected[name]
        expected[name] = (lr * lr_mult, wd * decay_mult)
    where = group_of(groups)
    params = dict(model.named_parameters())
    names = changes or expected  # the listed parameters, or all when nothing should change
    got = {n: (where[id(params[n])]['lr'], where[id(params[n])]['weight_decay']) for n in names}
    wrong = {n: (got[n], expected[n]) for n in names
             if got[n][0] != pytest.approx(expected[n][0]) or got[n][1] != expected[n][1]}
    assert not wrong


def test_logs_one_table_row_per_group(tmp_path):
    # A fresh logger is mmengine's 'current' one, where the constructor logs.
    logger = MMLogger.get_instance(f'layer_decay_{tmp_path.name}', log_level='INFO')
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        groups = build_groups(detector('tiny'), num_layers=6, decay_rate=0.95)
    finally:
        logger.removeHandler(handler)
    (text,) = [r.getMessage() for r in records if 'Layer-wise lr decay' in r.getMessage()]
    rows = text.splitlines()[2:]
    assert len(rows) == len(groups)
    stem_row = rows[0].split()
    assert stem_row[:3] == ['0', '0.6983', '0.05']
    assert sum(int(r.split()[3]) for r in rows) == sum(len(g['params']) for g in groups)


# -- real training steps through mmengine's Runner -----------------------------------------------
class StepProbe(Hook):
    """Measures one training iteration's AdamW step on named parameters.

    AdamW's first step is ``w <- w * (1 - lr * wd) - lr * g / (|g| + eps)``: after taking the
    decay out with the expected (lr, wd), the largest move is lr for the weight with the largest
    gradient. So ``ratios`` is 1 when the parameter trained with the expected lr and weight decay.
    """

    def __init__(self, expected):
        self.expected = expected  # name -> (lr, weight decay)
        self.before = {}
        self.ratios = {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        params = dict(runner.model.named_parameters())
        self.before = {n: params[n].detach().clone() for n in self.expected}

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        params = dict(runner.model.named_parameters())
        for name, (lr, wd) in self.expected.items():
            adam = params[name].detach() - self.before[name] * (1 - lr * wd)
            self.ratios[name] = adam.abs().max().item() / lr


def _write_images(folder, count):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        cv2.imwrite(os.path.join(folder, f'{i}.png'),
                    rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))


def _coco(tmp_path, count=2):
    import json
    _write_images(str(tmp_path / 'img'), count)
    images, annotations = [], []
    for i in range(count):
        x, y = 8 + 4 * i, 10
        images.append(dict(id=i, file_name=f'{i}.png', width=64, height=64))
        annotations.append(dict(id=i, image_id=i, category_id=1, iscrowd=0, area=32. * 28,
                                bbox=[x, y, 32, 28],
                                segmentation=[[x, y, x + 32, y, x + 32, y + 28, x, y + 28]]))
    (tmp_path / 'ann.json').write_text(json.dumps(dict(
        images=images, annotations=annotations, categories=[dict(id=1, name='thing')])))
    return dict(type='CocoDataset', data_root=str(tmp_path), ann_file='ann.json',
                data_prefix=dict(img='img/'), metainfo=dict(classes=('thing',)),
                pipeline=[dict(type='LoadImageFromFile'),
                          dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
                          dict(type='PackDetInputs')])


def _ade_like(tmp_path, count=2):
    _write_images(str(tmp_path / 'img'), count)
    os.makedirs(tmp_path / 'ann', exist_ok=True)
    for i in range(count):
        label = np.zeros((64, 64), np.uint8)
        label[:32] = 1
        label[:, 40:] = 2 + i
        cv2.imwrite(str(tmp_path / 'ann' / f'{i}.png'), label)
    return dict(type='BaseSegDataset', data_root=str(tmp_path),
                data_prefix=dict(img_path='img', seg_map_path='ann'),
                img_suffix='.png', seg_map_suffix='.png',
                metainfo=dict(classes=('a', 'b', 'c', 'd'),
                              palette=[[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3]]),
                pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                          dict(type='PackSegInputs')])


@pytest.mark.parametrize('scope,decay_type,decay_rate,probes', [
    ('mmdet', 'layer_wise', 0.95, {'backbone.downsample_layers.0.0.weight': (0.95 ** 7, WD),
                                   'backbone.downsample_layers.1.0.weight': (0.95 ** 5, 0.),
                                   'backbone.stages.2.0.pwconv1.weight': (0.95 ** 4, WD),
                                   'backbone.stages.3.0.pwconv2.weight': (0.95, WD),
                                   'backbone.norm3.weight': (1., 0.),
                                   'neck.lateral_convs.0.conv.weight': (1., WD)}),
    ('mmseg', 'stage_wise', 0.9, {'backbone.downsample_layers.0.0.weight': (0.9 ** 7, WD),
                                  'backbone.stages.1.0.pwconv1.weight': (0.9 ** 5, WD),
                                  'backbone.stages.2.1.gamma': (0.9 ** 4, 0.),
                                  'backbone.stages.3.0.pwconv2.weight': (0.9 ** 3, WD),
                                  'decode_head.fpn_bottleneck.conv.weight': (1., WD),
                                  'decode_head.fpn_bottleneck.bn.weight': (1., 0.)}),
], ids=['mask_rcnn', 'upernet'])
def test_runner_training_step_applies_the_decayed_lr_and_weight_decay(tmp_path, scope,
                                                                      decay_type, decay_rate,
                                                                      probes):
    # Layer scale 1 (as in the official det/seg configs): with 1e-6 the last layers' gradients
    # would be too small for AdamW's first step to reach lr.
    if scope == 'mmdet':
        model, dataset = det_model_cfg(MINI, layer_scale_init_value=1.), _coco(tmp_path)
    else:
        model, dataset = seg_model_cfg(MINI, layer_scale_init_value=1.), _ade_like(tmp_path)
    cfg = Config(dict(
        default_scope=scope, model=model, work_dir=str(tmp_path / 'work'),
        train_dataloader=dict(batch_size=2, num_workers=0, dataset=dataset,
                              sampler=dict(type='DefaultSampler', shuffle=False)),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=1),
        optim_wrapper=optim_cfg(num_layers=6, decay_rate=decay_rate, decay_type=decay_type),
        default_hooks=dict(checkpoint=None), log_level='WARNING',
        randomness=dict(seed=0)))
    runner = Runner.from_cfg(cfg)
    probe = StepProbe({n: (LR * scale, wd) for n, (scale, wd) in probes.items()})
    runner.register_hook(probe)
    runner.train()
    assert all(0.999 < r < 1.001 for r in probe.ratios.values()), probe.ratios
