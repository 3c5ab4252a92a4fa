"""Every bad input gets a clear one-line answer (issue 6): backbone arguments, checkpoints,
layer decay, config paths, datasets, non-finite losses; grayscale and RGBA images just work."""
import copy
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch
from mmengine.model import BaseModel
from torch import nn
from torch.utils.data import Dataset

from convnext_backbone import CheckpointError, ConvNeXt, load_pretrained
from convnext_backbone.engine import (
    DatasetError,
    FiniteLossHook,
    NonFiniteLossError,
    ResumableRunner,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
SMALL = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))


def _one_line(message, limit=600):
    """What users see is one line, short enough to read: never a key dump."""
    assert '\n' not in message and len(message) < limit, message
    return message


def _tool(name):
    spec = importlib.util.spec_from_file_location(f'tool_{name}',
                                                  os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
    _one_line(str(err.value))


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
    (dict(pretrained=None), lambda m: True),
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
    _one_line(str(err.value))


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
    _one_line(str(err.value))
    cfg.model.pretrained = None
    cli.check_backbone(cfg)


def test_bad_arch_in_a_config_keeps_its_message_through_the_registry():
    from mmengine.registry import MODELS
    with pytest.raises(ValueError, match="unknown ConvNeXt arch 'tinyy'") as err:
        MODELS.build(dict(type='convnext_backbone.ConvNeXt', arch='tinyy'))
    _one_line(str(err.value))


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


# -- checkpoints -----------------------------------------------------------------------------------
@pytest.fixture
def small_checkpoint(tmp_path):
    path = tmp_path / 'small.pth'
    torch.save({'state_dict': ConvNeXt(arch=SMALL).state_dict()}, path)
    return path


def _truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


@pytest.mark.parametrize('make, message', [
    (lambda p: p.parent / 'nowhere.pth', 'checkpoint not found: {path}$'),
    (lambda p: _truncate(p), r'cannot read checkpoint {path} \(\d+ bytes\): the file is '
                             'truncated, corrupt or not a PyTorch checkpoint'),
    (lambda p: _truncate(p, keep=0), r'cannot read checkpoint {path} \(0 bytes\): the file is '
                                     'truncated'),
    (lambda p: (p.write_text('<html>404 Not Found</html>'), p)[1],
     r'cannot read checkpoint {path} \(26 bytes\): the file is truncated, corrupt or not a '
     'PyTorch checkpoint'),
])
def test_unreadable_checkpoint_names_the_file_and_cause(small_checkpoint, make, message):
    path = make(small_checkpoint)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(ConvNeXt(arch=SMALL), str(path))
    assert re.match(message.format(path=re.escape(str(path))), str(err.value)), str(err.value)
    _one_line(str(err.value))


def test_checkpoint_of_another_network_says_no_convnext_layout(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7),
                               'bn1.weight': torch.zeros(64),
                               'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}}, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(ConvNeXt(arch=SMALL), str(path))
    assert str(err.value).startswith(f'{path}: no ConvNeXt layout matches')
    assert "first keys are ['conv1.weight', 'bn1.weight', 'layer1.0.conv1.weight']" in str(
        err.value)
    _one_line(str(err.value))


def test_checkpoint_without_tensors_says_so(tmp_path):
    path = tmp_path / 'meta_only.pth'
    torch.save({'epoch': 3, 'meta': {'note': 'no weights'}}, path)
    with pytest.raises(CheckpointError, match='the checkpoint holds no tensors'):
        load_pretrained(ConvNeXt(arch=SMALL), str(path))


@pytest.mark.parametrize('arch, expected', [
    (dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)), '60 shape mismatches, first '
     'downsample_layers.0.0.weight: checkpoint (8, 3, 4, 4) vs model (16, 3, 4, 4)'),
    (dict(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64)), '9 model weights missing from the '
     "checkpoint, first ['stages.2.1.gamma', 'stages.2.1.dwconv.weight'"),
    (dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), use_grn=True), 'missing from the checkpoint, '
     "first ['stages.0.0.grn.gamma'"),
])
def test_checkpoint_of_another_size_names_layout_and_mismatch(small_checkpoint, arch, expected):
    model = ConvNeXt(arch=arch)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(model, str(small_checkpoint))
    message = _one_line(str(err.value))
    assert message.startswith(f'checkpoint {small_checkpoint} (layout: official detection/'
                              'segmentation (or convnext_backbone)) does not fit this ConvNeXt')
    assert expected in message


def test_checkpoint_error_reaches_users_of_init_cfg(small_checkpoint):
    model = ConvNeXt(arch=dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                     init_cfg=dict(type='Pretrained', checkpoint=str(small_checkpoint)))
    with pytest.raises(CheckpointError, match='does not fit this ConvNeXt'):
        model.init_weights()


# -- resume from a bad checkpoint ------------------------------------------------------------------
class ToyData(Dataset):
    metainfo = dict(classes=('a',))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(4, generator=g), target=torch.randn(1, generator=g))


class ToyModel(BaseModel):
    """Regression toy; ``loss_b`` is NaN/inf on the calls listed in ``bad`` (1-based), a term
    that does not depend on the weights, so their gradients stay finite."""

    def __init__(self, bad=(), value=math.nan):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.bad, self.value, self.calls = set(bad), value, 0

    def forward(self, inputs, target=None, mode='tensor'):
        out = self.net(inputs)
        if mode != 'loss':
            return out
        self.calls += 1
        extra = self.value if self.calls in self.bad else 0.
        return dict(loss_a=((out - target) ** 2).mean(), loss_b=torch.tensor(extra))


def toy_runner(work_dir, model=None, **kwargs):
    cfg = dict(
        model=model or ToyModel(), work_dir=str(work_dir),
        experiment_name=f'toy-{os.path.basename(work_dir)}-{id(kwargs)}',
        train_dataloader=dict(dataset=ToyData(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        train_cfg=dict(by_epoch=False, max_iters=6),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)))
    cfg.update(kwargs)
    return ResumableRunner(**cfg)


def test_resume_from_truncated_checkpoint_names_the_file(tmp_path):
    toy_runner(tmp_path / 'a', train_cfg=dict(by_epoch=False, max_iters=2)).train()
    path = _truncate(tmp_path / 'a' / 'iter_2.pth')
    runner = toy_runner(tmp_path / 'b', load_from=str(path), resume=True)
    with pytest.raises(CheckpointError) as err:
        runner.train()
    assert str(err.value).startswith(f'cannot read checkpoint {path} (')
    assert 'the file is truncated, corrupt or not a PyTorch checkpoint' in str(err.value)
    _one_line(str(err.value))


def test_resume_from_missing_checkpoint_names_the_file(tmp_path):
    path = tmp_path / 'gone.pth'
    runner = toy_runner(tmp_path / 'b', load_from=str(path), resume=True)
    with pytest.raises(CheckpointError, match=f'^checkpoint not found: {re.escape(str(path))}$'):
        runner.train()


# -- non-finite losses -----------------------------------------------------------------------------
@pytest.mark.parametrize('value, shown', [(math.nan, 'nan'), (math.inf, 'inf')])
@pytest.mark.parametrize('loop, where', [
    (dict(by_epoch=False, max_iters=6), 'iteration 6'),
    (dict(by_epoch=True, max_epochs=2), 'iteration 6 (epoch 2, batch 2)')])  # 4 batches an epoch
def test_non_finite_loss_stops_training_naming_iteration_and_terms(tmp_path, value, shown, loop,
                                                                   where):
    runner = toy_runner(tmp_path, model=ToyModel(bad={6}, value=value), train_cfg=loop)
    with pytest.raises(NonFiniteLossError) as err:
        runner.train()
    message = _one_line(str(err.value))
    assert message.startswith(f'Non-finite loss at {where}: loss={shown}, loss_a=')
    assert f'loss_b={shown}. Training stopped before saving this model.' in message
    assert re.search(r'loss_a=\d', message)
    assert message.endswith(f'Last checkpoint: {tmp_path / "iter_5.pth"}')
    # stopped before the checkpoint hook: no checkpoint of the broken model
    assert (tmp_path / 'iter_5.pth').exists() and not (tmp_path / 'iter_6.pth').exists()


@pytest.mark.parametrize('bad, stops_at', [({3}, None), ({3, 5}, None), ({3, 4}, 4)])
def test_patience_tolerates_isolated_non_finite_losses(tmp_path, bad, stops_at):
    runner = toy_runner(tmp_path, model=ToyModel(bad=bad),
                        custom_hooks=[dict(type='convnext_backbone.FiniteLossHook', patience=1)])
    hooks = [h for h in runner.hooks if isinstance(h, FiniteLossHook)]
    assert len(hooks) == 1 and hooks[0].patience == 1  # the config's hook, not a second one
    if stops_at is None:
        runner.train()
        assert runner.iter == 6
    else:
        with pytest.raises(NonFiniteLossError, match=f'at iteration {stops_at}: .*'
                                                     r'\(2 iterations in a row\)'):
            runner.train()


@pytest.mark.parametrize('kwargs', [dict(patience=-1), dict(amp_patience=1.5)])
def test_finite_loss_hook_rejects_bad_patience(kwargs):
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=re.escape(f'{name}={value!r} must be an int >= 0')):
        FiniteLossHook(**kwargs)


# -- layer decay -----------------------------------------------------------------------------------
class Detector(nn.Module):
    def __init__(self, arch):
        super().__init__()
        self.backbone = ConvNeXt(arch=arch)
        self.head = nn.Linear(4, 2)


def _build_optimizer(paramwise_cfg, arch=None):
    arch = arch or dict(depths=(1, 1, 9, 1), dims=(8, 16, 32, 64))
    from convnext_backbone.layer_decay import LayerDecayOptimizerConstructor
    constructor = LayerDecayOptimizerConstructor(
        dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05)),
        paramwise_cfg)
    return constructor(Detector(arch))


@pytest.mark.parametrize('num_layers, decay_type, least', [
    (4, 'layer_wise', 6),   # 9 blocks in stage 2 need 4 + (9 - 1) // 3 = 6
    (2, 'stage_wise', 3),
])
def test_num_layers_that_does_not_fit_the_backbone_is_named(num_layers, decay_type, least):
    with pytest.raises(ValueError) as err:
        _build_optimizer(dict(num_layers=num_layers, decay_rate=0.9, decay_type=decay_type))
    message = _one_line(str(err.value))
    assert message.startswith(f'num_layers={num_layers} does not fit backbone ConvNeXt with '
                              'depths (1, 1, 9, 1)')
    assert f'need num_layers >= {least}' in message


def test_unknown_decay_type_lists_the_known_ones():
    with pytest.raises(ValueError, match=re.escape(
            "unknown decay_type 'block_wise'; use one of 'layer_wise', 'stage_wise'")):
        _build_optimizer(dict(num_layers=6, decay_rate=0.9, decay_type='block_wise'))
    with pytest.raises(ValueError, match="unknown decay_type 'block_wise'"):
        ConvNeXt(arch=SMALL).get_layer_id('stages.0.0.dwconv.weight', 6, 'block_wise')


# -- config paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize('tool, extra', [('train', []), ('test', ['ckpt.pth']),
                                         ('infer', ['ckpt.pth', 'img.jpg', '--out', 'o'])])
def test_missing_config_path_is_one_line_without_traceback(tmp_path, tool, extra):
    if not os.path.isfile(os.path.join(ROOT, 'tools', f'{tool}.py')):
        pytest.skip(f'tools/{tool}.py is not there')
    missing = str(tmp_path / 'no_such_config.py')
    proc = subprocess.run([PY, os.path.join(ROOT, 'tools', f'{tool}.py'), missing] + extra,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert f'config file not found: {missing}' in proc.stderr


# -- model configs and work dirs through the tools ------------------------------------------------
def _run_tool(tool, args, cwd, prefix=(), **env):
    return subprocess.run(list(prefix) + [PY, os.path.join(ROOT, 'tools', f'{tool}.py')]
                          + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS='1', **env))


def _tiny_seg_config(tmp_path, arch="dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))",
                     head='FCNHead'):
    config = tmp_path / 'tiny.py'
    config.write_text(f'DATA_ROOT = {str(tmp_path / "no_data")!r}\n'
                      + MISSING_DATA_CONFIG.replace("arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, "
                                                    "32, 64))", f'arch={arch}')
                      .replace("type='FCNHead'", f'type={head!r}'))
    return config


@pytest.mark.parametrize('tool', ['train', 'test', 'infer'])
def test_bad_backbone_argument_stops_each_tool_in_one_line_before_any_log(tmp_path, tool):
    config = _tiny_seg_config(tmp_path, arch="'tinyy'")
    (tmp_path / 'ckpt.pth').write_bytes(b'')
    cv2.imwrite(str(tmp_path / 'img.jpg'), np.zeros((40, 40, 3), np.uint8))
    extra = {'train': ['--work-dir', tmp_path / 'w'], 'test': [tmp_path / 'ckpt.pth'],
             'infer': [tmp_path / 'ckpt.pth', tmp_path / 'img.jpg', '--out', tmp_path / 'o']}
    proc = _run_tool(tool, [config] + extra[tool], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert 'Traceback' not in output and 'System environment' not in output, output[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"{tool}.py: error: model.backbone: unknown ConvNeXt arch 'tinyy'; choose one of tiny, "
        'small, base, large, xlarge, v2-atto, v2-femto, v2-pico, v2-nano, v2-tiny, v2-base, '
        'v2-large, v2-huge or dict(depths=..., dims=...)'], proc.stderr


@pytest.mark.parametrize('switch', [['--debug'], 'CONVNEXT_DEBUG'])
def test_debug_shows_the_full_traceback(tmp_path, switch):
    config = _tiny_seg_config(tmp_path, arch="'tinyy'")
    args, env = ([config] + switch, {}) if isinstance(switch, list) else ([config], {switch: '1'})
    proc = _run_tool('train', args + ['--work-dir', tmp_path / 'w'], tmp_path, **env)
    assert proc.returncode != 0
    assert 'Traceback (most recent call last)' in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "ValueError: unknown ConvNeXt arch 'tinyy'"), proc.stderr[-2000:]


def test_model_error_outside_the_backbone_is_the_last_line(tmp_path):
    pytest.importorskip('mmseg')
    config = _tiny_seg_config(tmp_path, head='FCNHeadd')
    proc = _run_tool('train', [config, '--work-dir', tmp_path / 'w'], tmp_path)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('train.py: error: cannot build the model: FCNHeadd is not in the '
                           'mmseg::model registry'), last


def test_read_only_work_dir_is_one_line(tmp_path):
    """As root, the tool runs without the capabilities that let root write anywhere."""
    import shutil
    prefix = ()
    if os.geteuid() == 0:
        if not shutil.which('setpriv'):
            pytest.skip('root without setpriv: a read-only folder cannot be made')
        prefix = ('setpriv', '--bounding-set=-dac_override,-dac_read_search,-fowner', '--')
    config = _tiny_seg_config(tmp_path)
    work = tmp_path / 'read_only'
    work.mkdir()
    work.chmod(0o555)
    try:
        proc = _run_tool('train', [config, '--work-dir', work], tmp_path, prefix=prefix)
    finally:
        work.chmod(0o755)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f'train.py: error: cannot write to {work} (Permission denied): choose a writable folder '
        'with --work-dir'], proc.stderr


# -- datasets --------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    sys.path.insert(0, os.path.join(ROOT, 'tools'))
    from make_demo_data import make_ade, make_coco
    root = tmp_path_factory.mktemp('data')
    make_coco(str(root / 'coco'), {'train': 3}, size=64)
    make_ade(str(root / 'ade'), {'training': 3}, size=64)
    return root


SHAPES = ('circle', 'triangle', 'square', 'star')


class Heads(nn.Module):
    """Stands in for a detector or segmentor: only its heads' ``num_classes`` are read."""

    def __init__(self, roi_classes=4, seg_classes=8):
        super().__init__()
        self.net = nn.Linear(4, 1)
        self.roi_head = nn.Module()
        self.roi_head.bbox_head = nn.Module()
        self.roi_head.bbox_head.num_classes = roi_classes
        self.decode_head = nn.Module()
        self.decode_head.num_classes = seg_classes


def _det_dataset(root, **dataset):
    ds = dict(type='CocoDataset', data_root=str(root / 'coco'),
              ann_file='annotations/instances_train.json', data_prefix=dict(img='train/'),
              metainfo=dict(classes=SHAPES), pipeline=[])
    ds.update(dataset)
    return ds


def _seg_dataset(root, **dataset):
    """The demo's ADE20K-layout set: label 0 is "other" (ignored), 1..8 its 8 classes."""
    from make_demo_data import SEG_CLASSES
    ds = dict(type='BaseSegDataset', data_root=str(root / 'ade'), pipeline=[],
              img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
              metainfo=dict(classes=SEG_CLASSES),
              data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'))
    ds.update(dataset)
    return ds


def _build_loader(tmp_path, scope, dataset, model=None):
    """What ResumableRunner does for every dataloader: check, build, check what was built."""
    wrapped = dict(type='RepeatDataset', times=2, dataset=dataset) if scope == 'mmdet' else dataset
    loader = dict(dataset=wrapped, batch_size=1, num_workers=0,
                  sampler=dict(type='DefaultSampler', shuffle=False))
    runner = ResumableRunner(model=model or Heads(), work_dir=str(tmp_path / 'work'),
                             default_scope=scope, train_dataloader=loader,
                             train_cfg=dict(by_epoch=False, max_iters=1),
                             optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                             experiment_name=f'data-{time.time_ns()}')
    return runner.build_dataloader(runner._train_dataloader)


def _edit_coco(root, name, edit):
    with open(root / 'coco' / 'annotations' / 'instances_train.json') as f:
        data = json.load(f)
    edit(data)
    path = root / 'coco' / 'annotations' / name
    path.write_text(json.dumps(data))
    return f'annotations/{name}'


def test_good_demo_datasets_pass_the_check(demo_data, tmp_path):
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    assert len(_build_loader(tmp_path, 'mmdet', _det_dataset(demo_data)).dataset) == 6
    assert len(_build_loader(tmp_path, 'mmseg', _seg_dataset(demo_data)).dataset) == 3


def _unknown_category(data):
    data['annotations'][1]['category_id'] = 99


def _no_images(data):
    data['images'], data['annotations'] = [], []


def _no_bbox(data):
    del data['annotations'][0]['bbox']


@pytest.mark.parametrize('case, message', [
    ('missing root', 'dataset folder not found: {root}/nowhere '
                     '(train_dataloader.dataset.dataset.data_root)'),
    ('missing ann', 'annotation file not found: {root}/coco/annotations/nope.json '
                    '(train_dataloader.dataset.dataset.ann_file)'),
    ('bad json', 'annotation file {root}/coco/annotations/bad.json is not valid JSON: '
                 'Expecting value at line 1 column 13'),
    ('not coco', 'annotation file {root}/coco/annotations/nobbox.json could not be parsed '
                 "(KeyError: 'bbox')"),
    ('unknown category', 'annotations in {root}/coco/annotations/unknown.json use category ids '
                         '[99] that its "categories" do not define (defined: [1, 2, 3, 4]): 1 '
                         'such annotation(s), the first on image id 1'),
    ('no images', 'annotation file {root}/coco/annotations/empty.json lists no images: the '
                  'dataset is empty'),
    ('wrong classes', "the classes of train_dataloader.dataset.dataset ('cat', 'dog') are not all "
                      "category names of {root}/coco/annotations/instances_train.json (it has "
                      "'circle', 'triangle', 'square', 'star'; missing 'cat', 'dog')"),
    ('coco classes', "the classes of train_dataloader.dataset.dataset ('person', 'bicycle'"),
    ('too few num_classes', 'train_dataloader.dataset.dataset has 4 classes but '
                            'model.roi_head.bbox_head.num_classes is 3: set num_classes=4'),
    ('empty image folder', 'image folder {root}/empty is empty'),
    ('missing images', '3 of the 3 images listed in '
                       '{root}/coco/annotations/instances_train.json are not in {root}/ade'),
])
def test_bad_coco_dataset_is_named_before_training(demo_data, tmp_path, case, message):
    pytest.importorskip('mmdet')
    root = demo_data
    (root / 'empty').mkdir(exist_ok=True)
    (root / 'coco' / 'annotations' / 'bad.json').write_text('{"images": [')
    dataset = {
        'missing root': lambda: _det_dataset(root, data_root=str(root / 'nowhere')),
        'missing ann': lambda: _det_dataset(root, ann_file='annotations/nope.json'),
        'bad json': lambda: _det_dataset(root, ann_file='annotations/bad.json'),
        'not coco': lambda: _det_dataset(root, ann_file=_edit_coco(root, 'nobbox.json',
                                                                   _no_bbox)),
        'unknown category': lambda: _det_dataset(
            root, ann_file=_edit_coco(root, 'unknown.json', _unknown_category)),
        'no images': lambda: _det_dataset(
            root, ann_file=_edit_coco(root, 'empty.json', _no_images)),
        'wrong classes': lambda: _det_dataset(root, metainfo=dict(classes=('cat', 'dog'))),
        'coco classes': lambda: _det_dataset(root, metainfo=None),
        'too few num_classes': lambda: _det_dataset(root),
        'empty image folder': lambda: _det_dataset(root, data_prefix=dict(img=str(root / 'empty'))),
        'missing images': lambda: _det_dataset(root, data_prefix=dict(img=str(root / 'ade'))),
    }[case]()
    model = Heads(roi_classes=3) if case == 'too few num_classes' else None
    with pytest.raises(DatasetError) as err:
        _build_loader(tmp_path, 'mmdet', dataset, model)
    assert str(err.value).startswith(message.format(root=root)), str(err.value)
    _one_line(str(err.value))


@pytest.mark.parametrize('case, message', [
    ('missing root', 'dataset folder not found: {root}/nowhere (train_dataloader.dataset.'
                     'data_root)'),
    ('empty folder', 'image folder {root}/empty is empty'),
    ('no images of the suffix', 'image folder {root}/ade/images/training holds no .png images: '
                                'the dataset is empty'),
    ('missing labels', 'label folder not found: {root}/ade/annotations/nope'),
    ('label beyond num_classes', 'label map {root}/ade/annotations/training/000000.png holds '
                                 'class value 8, beyond decode_head.num_classes=3'),
    ('num_classes not the classes', "train_dataloader.dataset has 8 classes ('sky', 'grass', "
                                    "'water', 'sand', 'circle', 'triangle', ... (8 in all)) but "
                                    'model.decode_head.num_classes is 3: set num_classes=8'),
    ('background dropped', "the first class of train_dataloader.dataset is 'background', but "
                           'reduce_zero_label=True ignores label 0'),
])
def test_bad_segmentation_dataset_is_named_before_training(demo_data, tmp_path, case, message):
    pytest.importorskip('mmseg')
    root = demo_data
    (root / 'empty').mkdir(exist_ok=True)
    dataset = {
        'missing root': lambda: _seg_dataset(root, data_root=str(root / 'nowhere')),
        'empty folder': lambda: _seg_dataset(root, data_prefix=dict(
            img_path=str(root / 'empty'), seg_map_path='annotations/training')),
        'no images of the suffix': lambda: _seg_dataset(root, img_suffix='.png'),
        'missing labels': lambda: _seg_dataset(root, data_prefix=dict(
            img_path='images/training', seg_map_path='annotations/nope')),
        'label beyond num_classes': lambda: _seg_dataset(
            root, metainfo=dict(classes=('a', 'b', 'c'))),
        'num_classes not the classes': lambda: _seg_dataset(root),
        'background dropped': lambda: _seg_dataset(
            root, metainfo=dict(classes=('background', 'sky', 'grass'))),
    }[case]()
    model = Heads(seg_classes=3) if case in ('label beyond num_classes',
                                             'num_classes not the classes') else None
    with pytest.raises(DatasetError) as err:
        _build_loader(tmp_path, 'mmseg', dataset, model)
    assert str(err.value).startswith(message.format(root=root)), str(err.value)
    _one_line(str(err.value))


def test_mmdet_alone_drops_unknown_category_silently(demo_data):
    """Why the check exists: mmdet builds the dataset and skips the bad annotation quietly."""
    pytest.importorskip('mmdet')
    from mmdet.registry import DATASETS
    from mmengine.registry import init_default_scope
    init_default_scope('mmdet')
    dataset = DATASETS.build(_det_dataset(
        demo_data, ann_file=_edit_coco(demo_data, 'unknown2.json', _unknown_category)))
    kept = sum(len(dataset.get_data_info(i)['instances']) for i in range(len(dataset)))
    with open(demo_data / 'coco' / 'annotations' / 'instances_train.json') as f:
        assert kept == len(json.load(f)['annotations']) - 1


# -- grayscale and RGBA images through tools/infer.py ----------------------------------------------
SEG_INFER_CONFIG = '''
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), out_indices=(3,)),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     concat_input=False, num_classes=8, norm_cfg=dict(type='SyncBN'),
                     loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(96, 64), keep_ratio=True),
                 dict(type='LoadAnnotations', reduce_zero_label=True), dict(type='PackSegInputs')]
test_dataloader = dict(batch_size=1, dataset=dict(
    type='ADE20KDataset', data_root='nowhere', pipeline=test_pipeline,
    data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation')))
'''

DET_INFER_CONFIG = '''
default_scope = 'mmdet'
model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_mask=True,
                           pad_size_divisor=32),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))),
    neck=dict(type='FPN', in_channels=[8, 16, 32, 64], out_channels=16, num_outs=5),
    rpn_head=dict(
        type='RPNHead', in_channels=16, feat_channels=16,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0],
                              strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4, target_stds=[1.] * 4)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(type='SingleRoIExtractor', out_channels=16,
                                roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
                                featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(type='Shared2FCBBoxHead', in_channels=16, fc_out_channels=32,
                       roi_feat_size=7, num_classes=4, reg_class_agnostic=False,
                       bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.] * 4,
                                       target_stds=[0.1, 0.1, 0.2, 0.2])),
        mask_roi_extractor=dict(type='SingleRoIExtractor', out_channels=16,
                                roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
                                featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(type='FCNMaskHead', num_convs=1, in_channels=16, conv_out_channels=16,
                       num_classes=4)),
    train_cfg=None,
    test_cfg=dict(
        rpn=dict(nms_pre=100, max_per_img=50, nms=dict(type='nms', iou_threshold=0.7),
                 min_bbox_size=0),
        rcnn=dict(score_thr=0.0, nms=dict(type='nms', iou_threshold=0.5), max_per_img=10,
                  mask_thr_binary=0.5)))
test_pipeline = [dict(type='LoadImageFromFile'),
                 dict(type='Resize', scale=(96, 64), keep_ratio=True),
                 dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape',
                                                       'img_shape', 'scale_factor'))]
test_dataloader = dict(batch_size=1, dataset=dict(type='CocoDataset', data_root='nowhere',
                                                  pipeline=test_pipeline))
'''


def _images(folder):
    """A colour JPEG, a grayscale PNG, an RGBA PNG (transparent corner), a 16-bit grayscale PNG
    and a file that is not an image."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    color = rng.integers(0, 255, (48, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / 'color.jpg'), color)
    cv2.imwrite(str(folder / 'gray.png'), color[..., 0])
    rgba = np.dstack([color, np.full((48, 80), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    cv2.imwrite(str(folder / 'rgba.png'), rgba)
    cv2.imwrite(str(folder / 'gray16.png'), color[..., 1].astype(np.uint16) * 257)
    (folder / 'broken.png').write_bytes(b'not a png')
    return folder


@pytest.fixture(scope='module')
def infer_models(tmp_path_factory):
    pytest.importorskip('mmdet')
    pytest.importorskip('mmseg')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    root = tmp_path_factory.mktemp('infer')
    out = {}
    for scope, text, meta in (
            ('mmseg', SEG_INFER_CONFIG, None),
            ('mmdet', DET_INFER_CONFIG, dict(classes=SHAPES, palette=[(255, 0, 0)] * 4))):
        config = root / f'tiny_{scope}.py'
        config.write_text(text)
        init_default_scope(scope)
        registry = importlib.import_module(f'{scope}.registry')
        torch.manual_seed(0)
        model = registry.MODELS.build(Config.fromfile(str(config)).model)
        ckpt = {'state_dict': model.state_dict()}
        if meta:
            ckpt['meta'] = dict(dataset_meta=meta)
        torch.save(ckpt, root / f'tiny_{scope}.pth')
        out[scope] = (str(config), str(root / f'tiny_{scope}.pth'))
    return out


@pytest.mark.parametrize('scope', ['mmseg', 'mmdet'])
def test_infer_handles_grayscale_rgba_and_16_bit_images(tmp_path, infer_models, scope, capsys):
    config, ckpt = infer_models[scope]
    images = _images(tmp_path / 'images')
    out = tmp_path / 'out'
    _tool('infer').main([config, ckpt, str(images), '--out', str(out), '--score-thr', '0'])
    err = capsys.readouterr().err
    assert f'skipped: cannot read image {images / "broken.png"}' in err
    entries = json.loads((out / 'predictions.json').read_text())
    assert [os.path.basename(e['image']) for e in entries] == ['color.jpg', 'gray.png',
                                                               'gray16.png', 'rgba.png']
    for entry in entries:
        assert (entry['width'], entry['height']) == (80, 48)
        vis = cv2.imread(entry['visualization'], cv2.IMREAD_UNCHANGED)
        assert vis.shape == (48, 80, 3)
        if scope == 'mmseg':
            label = cv2.imread(entry['label_map'], cv2.IMREAD_UNCHANGED)
            assert label.shape == (48, 80) and label.max() < 8
            assert sum(c['pixels'] for c in entry['classes']) == 48 * 80
        else:
            for inst in entry['instances']:
                assert inst['class'] in SHAPES and 0 <= inst['score'] <= 1
                x1, y1, x2, y2 = inst['bbox']
                assert 0 <= x1 <= x2 <= 80 and 0 <= y1 <= y2 <= 48
                assert inst['mask']['size'] == [48, 80]


def test_infer_refuses_a_checkpoint_of_another_model(tmp_path, infer_models, capsys):
    config, _ = infer_models['mmseg']
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': ConvNeXt(arch=SMALL).state_dict()}, other)
    images = _images(tmp_path / 'images')
    with pytest.raises(SystemExit) as err:
        _tool('infer').main([config, str(other), str(images / 'color.jpg'), '--out',
                             str(tmp_path / 'out')])
    assert err.value.code == 1
    message = _one_line(capsys.readouterr().err.strip())
    assert f'error: checkpoint {other} does not fit the model of {config}: ' in message
    assert 'model weights missing from the checkpoint, first' in message


def test_infer_names_a_missing_image(tmp_path, infer_models, capsys):
    config, ckpt = infer_models['mmseg']
    with pytest.raises(SystemExit):
        _tool('infer').main([config, ckpt, str(tmp_path / 'nope.jpg'), '--out', str(tmp_path)])
    assert re.search('error: image or folder not found: .*nope.jpg', capsys.readouterr().err)


def test_plot_logs_names_a_work_dir_without_logs(tmp_path):
    with pytest.raises(SystemExit, match=f'error: no \\*/vis_data/scalars.json in {tmp_path}'):
        _tool('plot_logs').main([str(tmp_path)])
    with pytest.raises(SystemExit, match='error: work dir not found'):
        _tool('plot_logs').main([str(tmp_path / 'nope')])


def test_the_check_leaves_the_config_as_it_was(demo_data, tmp_path):
    pytest.importorskip('mmdet')
    dataset = _det_dataset(demo_data)
    before = copy.deepcopy(dataset)
    _build_loader(tmp_path, 'mmdet', dataset)
    assert dataset == before


MISSING_DATA_CONFIG = '''
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), out_indices=(3,)),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     num_classes=8, loss_decode=dict(type='CrossEntropyLoss')))
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ADE20KDataset', data_root=DATA_ROOT,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=[dict(type='LoadImageFromFile')]))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
'''


def test_train_py_names_a_missing_dataset_folder_before_training(tmp_path):
    config = tmp_path / 'no_data.py'
    missing = tmp_path / 'no_such_data'
    config.write_text(f'DATA_ROOT = {str(missing)!r}\n' + MISSING_DATA_CONFIG)
    proc = subprocess.run([PY, os.path.join(ROOT, 'tools', 'train.py'), str(config),
                           '--work-dir', str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith(f'dataset folder not found: {missing} (train_dataloader.dataset.'
                         'data_root); download the data there or point data_root at it, e.g. '
                         '--cfg-options train_dataloader.dataset.data_root=/path/to/data'), last


@pytest.mark.parametrize('where', ['last', 'first', 'pretty'])
def test_coco_categories_are_read_without_parsing_the_annotations(tmp_path, where):
    """The dataset check reads the small "categories" list of a large file on its own: its
    memory must not grow with the file (mmdet parses the file once; we must not again)."""
    import tracemalloc

    from convnext_backbone.engine.preflight import read_coco_categories
    categories = [dict(id=i, name=f'c{i}', supercategory='x') for i in (1, 2, 7)]
    annotations = [dict(id=i, image_id=i, category_id=1, bbox=[0, 0, 1, 1],
                        segmentation=[[0.5] * 40], note='"categories": [1]') for i in range(40000)]
    data = dict(info=dict(description='has a key "categories" inside'), images=[],
                annotations=annotations, categories=categories)
    if where == 'first':
        data = dict(categories=categories, **{k: v for k, v in data.items() if k != 'categories'})
    path = tmp_path / 'big.json'
    path.write_text(json.dumps(data, indent=1 if where == 'pretty' else None))
    assert path.stat().st_size > 10_000_000
    tracemalloc.start()
    try:
        found = read_coco_categories(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == categories
    assert peak < 2_000_000, peak


def test_coco_categories_of_a_file_without_them_are_none(tmp_path):
    from convnext_backbone.engine.preflight import read_coco_categories
    path = tmp_path / 'x.json'
    path.write_text('{"images": [], "annotations": []}')
    assert read_coco_categories(str(path)) is None
    path.write_text('')
    assert read_coco_categories(str(path)) is None
