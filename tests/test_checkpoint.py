"""Checkpoint layouts: every layout users hold loads into the backbone, strictly and exactly."""
import argparse
import logging
import pickle

import layouts
import numpy as np
import pytest
import torch
from reference import RefConvNeXt, randomise_

from convnext_backbone import CheckpointError, ConvNeXt, convert_state_dict
from convnext_backbone.checkpoint import (
    HF,
    MMPRETRAIN,
    OFFICIAL_CLS,
    OFFICIAL_DENSE,
    TIMM,
    load_pretrained,
)

pytestmark = [pytest.mark.core, pytest.mark.onedl_core]

V1 = dict(depths=(2, 1, 4, 1), dims=(16, 24, 32, 48))
V2 = dict(V1, use_grn=True)

# (writer, keeps the per-stage norms, layout name)
LAYOUTS = {
    'official_classification': (layouts.official_classification, False, OFFICIAL_CLS),
    'official_dense': (layouts.official_dense, True, OFFICIAL_DENSE),
    'mmpretrain_dense': (layouts.mmpretrain, True, MMPRETRAIN),
    'mmpretrain_classification': (
        lambda sd, dims: layouts.mmpretrain(sd, dims, classification=True), False, MMPRETRAIN),
    'timm': (layouts.timm, False, TIMM),
    'timm_conv_mlp': (lambda sd, dims: layouts.timm(sd, dims, conv_mlp=True), False, TIMM),
    'huggingface': (layouts.huggingface, False, HF),
    'huggingface_v2_prefix': (lambda sd, dims: layouts.huggingface(sd, dims, v2=True), False, HF),
}


def _reference(arch, keep_norms, seed=0):
    ref = randomise_(RefConvNeXt(arch['depths'], arch['dims'], v2=arch.get('use_grn', False)),
                     seed).eval()
    if not keep_norms:  # a classification checkpoint has no stage norms: ours start at 1 / 0
        for i in range(4):
            norm = getattr(ref, f'norm{i}')
            torch.nn.init.ones_(norm.weight)
            torch.nn.init.zeros_(norm.bias)
    return ref


def _assert_same_features(model, ref, size=(80, 96)):
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        for ours, theirs in zip(model.eval()(x), ref(x)):
            rel = ((ours - theirs).norm() / theirs.norm()).item()
            assert rel < 1e-4, rel


@pytest.mark.parametrize('arch', [V1, V2], ids=['v1', 'v2'])
@pytest.mark.parametrize('name', sorted(LAYOUTS))
def test_every_layout_loads_through_init_cfg_and_matches_the_reference(name, arch, tmp_path):
    writer, keep_norms, layout = LAYOUTS[name]
    ref = _reference(arch, keep_norms)
    path = tmp_path / f'{name}.pth'
    torch.save(writer(ref.state_dict(), arch['dims']), path)
    model = ConvNeXt(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_same_features(model, ref)
    assert convert_state_dict(torch.load(path, weights_only=True)).layout == layout


@pytest.mark.parametrize('arch', ['tiny', 'v2-atto'])
@pytest.mark.parametrize('name', ['official_classification', 'timm', 'huggingface'])
def test_released_arch_loads_each_layout(arch, name, tmp_path):
    from convnext_backbone import ARCH_SETTINGS
    setting = ARCH_SETTINGS[arch]
    writer, keep_norms, _ = LAYOUTS[name]
    if name == 'timm' and arch == 'v2-atto':  # timm's atto..nano keep the MLP as 1x1 convs
        writer = LAYOUTS['timm_conv_mlp'][0]
    ref = _reference(setting, keep_norms, seed=1)
    path = tmp_path / 'ckpt.pth'
    torch.save(writer(ref.state_dict(), setting['dims']), path)
    model = ConvNeXt(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_same_features(model, ref, size=(64, 64))


def test_safetensors_files_load(tmp_path):
    from safetensors.torch import save_file
    ref = _reference(V2, keep_norms=False)
    path = tmp_path / 'model.safetensors'
    save_file({k: v.contiguous() for k, v in layouts.timm(ref.state_dict(), V2['dims']).items()},
              str(path))
    model = ConvNeXt(V2, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    _assert_same_features(model, ref)


def test_classifier_norm_is_not_loaded_into_norm3_and_absent_norms_are_logged(tmp_path, caplog):
    ref = _reference(V1, keep_norms=True)
    path = tmp_path / 'cls.pth'
    ckpt = layouts.official_classification(ref.state_dict(), V1['dims'])
    torch.save(ckpt, path)
    model = ConvNeXt(V1)
    with caplog.at_level(logging.INFO):
        converted = load_pretrained(model, str(path), logger=logging.getLogger('t'))
    assert torch.equal(model.norm3.weight, torch.ones(48))
    assert not torch.equal(model.norm3.weight, ckpt['model']['norm.weight'])
    assert sorted(converted.unused) == ['head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    logged = caplog.text
    assert 'norm0, norm1, norm2, norm3' in logged and 'weight 1, bias 0' in logged
    assert 'Ignored 4 checkpoint keys' in logged


def test_official_dense_checkpoint_with_mmdet2_meta_loads_with_weights_only(tmp_path):
    ref = _reference(V1, keep_norms=True)
    ckpt = layouts.official_dense(ref.state_dict(), V1['dims'])
    ckpt['meta'].update(mmcv_version='1.4.0', iter=np.int64(3), lr=np.float64(1e-4),
                        arr=np.arange(3), args=argparse.Namespace(lr=1e-4))
    path = tmp_path / 'det.pth'
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only loading refuses these types...
        torch.load(path, weights_only=True)
    model = ConvNeXt(V1, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()  # ...ours admits them and still never unpickles code
    _assert_same_features(model, ref)


def test_prefix_in_init_cfg_selects_a_submodule(tmp_path):
    ref = _reference(V1, keep_norms=True)
    path = tmp_path / 'wrapped.pth'
    torch.save({'state_dict': {'teacher.' + k: v for k, v in ref.state_dict().items()}}, path)
    model = ConvNeXt(V1, init_cfg=dict(type='Pretrained', checkpoint=str(path), prefix='teacher.'))
    model.init_weights()
    _assert_same_features(model, ref)


def test_other_size_checkpoint_names_layout_keys_and_both_shapes(tmp_path):
    ref = _reference(dict(V1, dims=(32, 48, 64, 96)), keep_norms=False)
    path = tmp_path / 'base.pth'
    torch.save(layouts.official_classification(ref.state_dict(), (32, 48, 64, 96)), path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(ConvNeXt(V1), str(path))
    msg = str(info.value)
    assert str(path) in msg and OFFICIAL_CLS in msg
    assert 'downsample_layers.0.0.weight: checkpoint (32, 3, 4, 4) vs model (16, 3, 4, 4)' in msg
    assert 'the checkpoint holds depths (2, 1, 4, 1), dims (32, 48, 64, 96)' in msg
    assert len(msg) < 800 and '\n' not in msg


def test_other_depth_checkpoint_is_refused_with_the_surplus_keys(tmp_path):
    ref = _reference(dict(V1, depths=(2, 1, 6, 1)), keep_norms=True)
    path = tmp_path / 'deeper.pth'
    torch.save(layouts.timm(ref.state_dict(), V1['dims']), path)
    with pytest.raises(CheckpointError, match=r"18 checkpoint weights the model does not have, "
                                              r"first \['stages.2.4.gamma'"):
        load_pretrained(ConvNeXt(V1), str(path))


def test_v1_checkpoint_into_v2_model_reports_missing_grn(tmp_path):
    ref = _reference(V1, keep_norms=True)
    path = tmp_path / 'v1.pth'
    torch.save(layouts.official_dense(ref.state_dict(), V1['dims']), path)
    with pytest.raises(CheckpointError, match=r'model weights missing from the checkpoint, first '
                                              r"\['stages.0.0.grn.gamma'"):
        load_pretrained(ConvNeXt(V2), str(path))


def test_released_size_mismatch_names_both_archs(tmp_path):
    from convnext_backbone import ARCH_SETTINGS
    base = ARCH_SETTINGS['base']
    with torch.device('meta'):
        ref = RefConvNeXt(base['depths'], base['dims'])
    state = {k: torch.zeros(v.shape) for k, v in ref.state_dict().items()}
    path = tmp_path / 'convnext_base_1k_224.pth'
    torch.save(layouts.official_classification(state, base['dims']), path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(ConvNeXt('tiny'), str(path))
    msg = str(info.value)
    assert "does not fit this ConvNeXt (depths (3, 3, 9, 3), dims (96, 192, 384, 768) ('tiny'))" \
        in msg
    assert "the checkpoint holds depths (3, 3, 27, 3), dims (128, 256, 512, 1024) ('base')" in msg


def test_unreachable_url_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    # Port 9 on the loopback: nothing listens there, the connection is refused at once.
    with pytest.raises(CheckpointError, match=r'cannot download checkpoint '
                                              r'http://127.0.0.1:9/convnext_tiny_1k_224.pth: .*'
                                              r'give the local file instead'):
        load_pretrained(ConvNeXt(V1), 'http://127.0.0.1:9/convnext_tiny_1k_224.pth')


def test_missing_truncated_and_foreign_files_are_one_line_errors(tmp_path):
    with pytest.raises(CheckpointError, match='checkpoint not found: .*nope.pth'):
        load_pretrained(ConvNeXt(V1), str(tmp_path / 'nope.pth'))
    good = tmp_path / 'good.pth'
    torch.save(layouts.official_dense(_reference(V1, True).state_dict(), V1['dims']), good)
    truncated = tmp_path / 'truncated.pth'
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError,
                       match=r'truncated.pth \(2000 bytes\): the file is truncated, corrupt'):
        load_pretrained(ConvNeXt(V1), str(truncated))
    foreign = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7)}}, foreign)
    with pytest.raises(CheckpointError, match="resnet.pth: no ConvNeXt layout matches.*'conv1"):
        load_pretrained(ConvNeXt(V1), str(foreign))


def test_conversion_is_pure_and_native_layout_round_trips():
    ref = _reference(V2, keep_norms=True)
    ckpt = layouts.mmpretrain(ref.state_dict(), V2['dims'])
    before = {k: v.clone() for k, v in ckpt['state_dict'].items()}
    converted = convert_state_dict(ckpt)
    assert all(torch.equal(before[k], ckpt['state_dict'][k]) for k in before)
    assert set(converted.state_dict) == set(ref.state_dict())
    again = convert_state_dict(dict(converted.state_dict))
    assert again.layout == OFFICIAL_DENSE and again.unused == []
    assert all(torch.equal(again.state_dict[k], v) for k, v in converted.state_dict.items())


def test_convert_checkpoint_cli_writes_a_native_file(tmp_path):
    import subprocess
    import sys
    ref = _reference(V1, keep_norms=False)
    src, dst = tmp_path / 'timm.pth', tmp_path / 'native.pth'
    torch.save(layouts.timm(ref.state_dict(), V1['dims']), src)
    out = subprocess.run([sys.executable, 'tools/convert_checkpoint.py', str(src), str(dst)],
                         capture_output=True, text=True, check=True).stdout
    assert 'layout: timm' in out
    saved = torch.load(dst, weights_only=True)
    assert set(saved['state_dict']) == {k for k in ref.state_dict() if not k.startswith('norm')}
    model = ConvNeXt(V1, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    _assert_same_features(model, ref)


# -- init_cfg prefix: mmengine's meaning on every layout -----------------------------------------
# name -> (writer, arch, the prefix the layout's own keys carry, or None)
PREFIXED = {
    'official_classification': (layouts.official_classification, V1, None),
    'official_dense': (layouts.official_dense, V1, 'backbone.'),
    'mmpretrain_dense': (layouts.mmpretrain, V1, 'backbone.'),
    'mmpretrain_classification': (
        lambda sd, dims: layouts.mmpretrain(sd, dims, classification=True), V1, 'backbone.'),
    'timm': (layouts.timm, V1, None),
    'huggingface': (layouts.huggingface, V1, 'convnext.'),
    'huggingface_v2': (lambda sd, dims: layouts.huggingface(sd, dims, v2=True), V2,
                       'convnextv2.'),
    'dinov3': (layouts.dinov3, V1, None),
    # its final 'layer_norm' is not under 'model.', so prefix='model.' would (rightly) drop it
    'dinov3_hf_model_prefix': (lambda sd, dims: layouts.dinov3_hf(sd, dims, prefix='model.'), V1,
                               None),
    'fcmae': (layouts.fcmae, V2, 'encoder.'),
}


def _tensors(ckpt):
    for key in ('model', 'state_dict'):
        if isinstance(ckpt.get(key), dict):
            return ckpt[key]
    return ckpt


def _load(arch, path, caplog, prefix=None):
    model = ConvNeXt(arch)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        load_pretrained(model, str(path), prefix=prefix, logger=logging.getLogger('t'))
    return model.state_dict(), caplog.text


@pytest.mark.parametrize('name', sorted(PREFIXED))
def test_prefix_loads_the_same_weights_on_every_layout(name, tmp_path, caplog):
    """prefix='backbone.' (what every mmdet/mmseg ConvNeXt config writes), the layout's own
    prefix, and the file nested under 'teacher.' with prefix='teacher' all load exactly what the
    file loads without a prefix."""
    writer, arch, own_prefix = PREFIXED[name]
    ref = _reference(arch, keep_norms=True)
    ckpt = writer(ref.state_dict(), arch['dims'])
    plain = tmp_path / 'plain.pth'
    torch.save(ckpt, plain)
    nested = tmp_path / 'nested.pth'
    torch.save({'state_dict': {'teacher.' + k: v for k, v in _tensors(ckpt).items()}}, nested)
    expected, _ = _load(arch, plain, caplog)
    variants = [(plain, 'backbone.'), (nested, 'teacher'), (nested, 'teacher.')]
    if own_prefix:
        variants.append((plain, own_prefix))
    for path, prefix in variants:
        state, log = _load(arch, path, caplog, prefix=prefix)
        assert state.keys() == expected.keys()
        assert all(torch.equal(state[k], v) for k, v in expected.items()), (path, prefix)
        note = ("init_cfg prefix: no key of the file starts with the prefix 'backbone.', so the "
                'whole file is read in its own layout')
        fell_back = prefix == 'backbone.' and own_prefix != 'backbone.'
        assert (note in log) == fell_back and log.count('init_cfg prefix') == fell_back, log


@pytest.mark.parametrize('name', ['official_classification', 'mmpretrain_classification'])
@pytest.mark.parametrize('prefix', [None, 'backbone.'])
def test_the_classifiers_final_norm_is_never_loaded_with_or_without_prefix(name, prefix, tmp_path,
                                                                          caplog):
    writer, arch, _ = PREFIXED[name]
    ref = _reference(arch, keep_norms=True)
    path = tmp_path / 'cls.pth'
    torch.save(writer(ref.state_dict(), arch['dims']), path)
    state, log = _load(arch, path, caplog, prefix=prefix)
    assert torch.equal(state['norm3.weight'], torch.ones(arch['dims'][-1]))
    assert torch.equal(state['norm3.bias'], torch.zeros(arch['dims'][-1]))
    assert 'norm0, norm1, norm2, norm3' in log  # all four kept at their initial values


def test_prefix_takes_only_the_keys_under_it(tmp_path):
    teacher = _reference(V1, keep_norms=True, seed=1).state_dict()
    student = _reference(V1, keep_norms=True, seed=2).state_dict()
    path = tmp_path / 'distill.pth'
    torch.save({'state_dict': {**{'teacher.' + k: v for k, v in teacher.items()},
                               **{'student.' + k: v for k, v in student.items()}}}, path)
    model = ConvNeXt(V1)
    load_pretrained(model, str(path), prefix='student.')
    assert all(torch.equal(v, student[k]) for k, v in model.state_dict().items())
