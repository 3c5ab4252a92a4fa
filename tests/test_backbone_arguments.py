"""Every bad backbone argument gets a clear one-line answer (issue 6), mmpretrain's keywords that
describe this backbone are accepted (mmdet's and mmseg's ConvNeXt configs), and images of another
channel count or too small a size are named; grayscale input works with in_channels=1."""
import re

import pytest
import torch
from helpers import SMALL, one_line
from torch import nn

from convnext_backbone import ConvNeXt

pytestmark = pytest.mark.core


# -- backbone arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize('kwargs, message', [
    (dict(arch='tinyy'), "unknown ConvNeXt arch 'tinyy'; choose one of tiny, small, base"),
    (dict(arch=dict(depths=(1, 1, 1), dims=(8, 16, 32, 64))),
     'arch depths=(1, 1, 1) must be 4 positive ints'),
    (dict(arch=dict(depth=(1, 1, 1, 1), dims=(8, 16, 32, 64))),
     "arch dict needs keys depths and dims (optional use_grn), got ['depth', 'dims']"),
    (dict(out_indices=4), 'out_indices=4 must be stage numbers in 0..3'),
    (dict(out_indices=(0, 5)), 'out_indices=(0, 5) must be stage numbers in 0..3'),
    (dict(out_indices=()), 'out_indices=() must be stage numbers in 0..3'),
    (dict(out_indices=(3, -1)), 'out_indices=(3, -1) names the same stage twice'),
    (dict(frozen_stages=5), 'frozen_stages=5 is out of range: use -1 or 0'),
    (dict(frozen_stages=-2), 'frozen_stages=-2 is out of range: use -1 or 0'),
    (dict(in_channels=0), 'in_channels=0 must be a positive int'),
])
def test_bad_backbone_argument_is_named_with_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        ConvNeXt(**{'arch': SMALL, **kwargs})
    one_line(str(err.value))


# -- keywords of mmpretrain's ConvNeXt (mmdet's and mmseg's ConvNeXt configs) -------------------
@pytest.mark.parametrize('kwargs, check', [
    (dict(gap_before_final_norm=False), lambda m: m.out_indices == (0, 1, 2, 3)),
    (dict(norm_cfg=dict(type='LN2d', eps=1e-5)),
     lambda m: {mod.eps for mod in m.modules() if isinstance(mod, nn.LayerNorm)} == {1e-5}),
    (dict(norm_cfg=dict(type='LN')),
     lambda m: {mod.eps for mod in m.modules() if isinstance(mod, nn.LayerNorm)} == {1e-6}),
    (dict(use_grn=True, layer_scale_init_value=0.),
     lambda m: m.use_grn and m.stages[0][0].grn is not None and m.stages[0][0].gamma is None),
    (dict(use_grn=False), lambda m: not m.use_grn),
    (dict(linear_pw_conv=True), lambda m: isinstance(m.stages[0][0].pwconv1, nn.Linear)),
    (dict(linear_pw_conv=False), lambda m: isinstance(m.stages[0][0].pwconv1, nn.Linear)),
    (dict(stem_patch_size=4), lambda m: m.downsample_layers[0][0].stride == (4, 4)),
    (dict(act_cfg=dict(type='GELU')), lambda m: isinstance(m.stages[0][0].act, nn.GELU)),
    (dict(pretrained=None), lambda m: m.init_cfg is None),  # dropped: no weights to load
    (dict(arch=dict(depths=[1, 1, 1, 1], channels=[8, 16, 32, 64])),
     lambda m: m.dims == (8, 16, 32, 64)),
    (dict(arch='atto', use_grn=True), lambda m: m.dims == (40, 80, 160, 320) and m.use_grn),
    (dict(arch='tiny', use_grn=True), lambda m: m.depths == (3, 3, 9, 3) and m.use_grn),
])
def test_mmpretrain_keywords_that_describe_this_backbone_are_accepted(kwargs, check):
    with torch.device('meta'):
        model = ConvNeXt(**{'arch': SMALL, **kwargs})
    assert check(model)


@pytest.mark.parametrize('kwargs, message', [
    (dict(gap_before_final_norm=True), 'gap_before_final_norm=True is not supported by '
     'convnext_backbone.ConvNeXt: mmpretrain pools each output to a vector'),
    (dict(norm_cfg=dict(type='BN')), "norm_cfg={'type': 'BN'} is not supported: ConvNeXt's norms "
     "are LayerNorms over channels, write norm_cfg=dict(type='LN2d', eps=1e-6) or leave it out"),
    (dict(norm_cfg=dict(type='LN2d', requires_grad=False)), "norm_cfg={'type': 'LN2d', "
     "'requires_grad': False} is not supported"),
    (dict(norm_cfg=dict(type='LN2d', eps=0)), 'norm_cfg eps=0 must be a positive number'),
    (dict(stem_patch_size=2), 'stem_patch_size=2 is not supported by convnext_backbone.ConvNeXt: '
     'the stem is the official 4x4 conv of stride 4'),
    (dict(act_cfg=dict(type='ReLU')), "act_cfg={'type': 'ReLU'} is not supported by "
     'convnext_backbone.ConvNeXt: the blocks use GELU'),
    (dict(pretrained='open-mmlab://resnet50_v1c'), "pretrained='open-mmlab://resnet50_v1c' is not "
     "an argument of convnext_backbone.ConvNeXt: load weights with init_cfg=dict(type="
     "'Pretrained', checkpoint=...), and set model.pretrained=None where a base config sets it"),
    (dict(arch='v2-tiny', use_grn=False), "use_grn=False contradicts arch='v2-tiny': it has GRN"),
    (dict(in_chans=3), 'unknown argument in_chans=3 of convnext_backbone.ConvNeXt: write '
     'in_channels=... instead'),
    (dict(depths=[3, 3, 9, 3]), 'unknown argument depths=[3, 3, 9, 3] of convnext_backbone.'
     'ConvNeXt: write arch=dict(depths=..., dims=...) instead'),
    (dict(drop_path=0.1), 'write drop_path_rate=... instead'),
    (dict(widen=2), 'unknown argument widen=2 of convnext_backbone.ConvNeXt: its arguments are '
     'arch, in_channels'),
])
def test_keywords_without_a_meaning_here_are_refused_in_one_line(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        ConvNeXt(**{'arch': SMALL, **kwargs})
    one_line(str(err.value))


@pytest.mark.parametrize('config', [
    'mmdet::convnext/mask-rcnn_convnext-t-p4-w7_fpn_amp-ms-crop-3x_coco.py',
    'mmseg::convnext/convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py'])
def test_mmdet_and_mmseg_convnext_configs_take_our_backbone_by_its_type_alone(config, tmp_path):
    """Their backbone (type='mmpretrain.ConvNeXt' with gap_before_final_norm=False and
    init_cfg prefix='backbone.') with only the type changed."""
    pytest.importorskip(config.split('::')[0])
    from mmengine.config import Config
    from mmengine.registry import MODELS

    from convnext_backbone import cli
    (tmp_path / 'theirs.py').write_text(
        f"_base_ = [{config!r}]\nmodel = dict(backbone=dict(type='convnext_backbone.ConvNeXt'))\n")
    cfg = Config.fromfile(str(tmp_path / 'theirs.py'), import_custom_modules=False)
    cli.check_backbone(cfg)
    with torch.device('meta'):
        model = MODELS.build(cfg.model.backbone)
    assert model.dims == (96, 192, 384, 768) and model.out_indices == (0, 1, 2, 3)
    assert model.init_cfg['prefix'] == 'backbone.'


def test_model_pretrained_of_mmseg_upernet_r50_base_is_named_with_what_to_write(tmp_path):
    """mmseg's upernet_r50.py sets model.pretrained, which EncoderDecoder passes on."""
    pytest.importorskip('mmseg')
    from mmengine.config import Config

    from convnext_backbone import cli
    from convnext_backbone.engine.runner import ModelBuildError
    config = tmp_path / 'upernet.py'
    config.write_text("_base_ = ['mmseg::_base_/models/upernet_r50.py']\ndefault_scope = 'mmseg'\n"
                      "model = dict(backbone=dict(_delete_=True, type='convnext_backbone.ConvNeXt'"
                      ", arch='tiny'))\n")
    cfg = Config.fromfile(str(config))
    with pytest.raises(ModelBuildError) as err:
        cli.check_backbone(cfg)
    assert str(err.value).startswith("model.backbone: pretrained='open-mmlab://resnet50_v1c' is "
                                     'not an argument of convnext_backbone.ConvNeXt')
    one_line(str(err.value))
    cfg.model.pretrained = None
    cli.check_backbone(cfg)


def test_bad_arch_in_a_config_keeps_its_message_through_the_registry():
    from mmengine.registry import MODELS
    with pytest.raises(ValueError, match="unknown ConvNeXt arch 'tinyy'") as err:
        MODELS.build(dict(type='convnext_backbone.ConvNeXt', arch='tinyy'))
    one_line(str(err.value))


@pytest.mark.parametrize('shape, message', [
    ((1, 1, 64, 64), 'ConvNeXt expects input of shape (N, 3, H, W), got (1, 1, 64, 64)'),
    ((1, 4, 64, 64), 'ConvNeXt expects input of shape (N, 3, H, W), got (1, 4, 64, 64)'),
    ((3, 64, 64), 'ConvNeXt expects input of shape (N, 3, H, W), got (3, 64, 64)'),
    ((1, 3, 16, 64), 'input 16x64 is too small: ConvNeXt downsamples by 32'),
])
def test_image_that_does_not_fit_in_channels_or_size_is_named(shape, message):
    model = ConvNeXt(arch=SMALL)
    with pytest.raises(ValueError, match=re.escape(message)):
        model(torch.zeros(shape))


def test_in_channels_one_takes_grayscale_input():
    out = ConvNeXt(arch=SMALL, in_channels=1)(torch.zeros(1, 1, 64, 64))
    assert [tuple(o.shape) for o in out] == [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4),
                                             (1, 64, 2, 2)]

