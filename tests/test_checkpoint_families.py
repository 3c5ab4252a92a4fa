"""DINOv3 ConvNeXt (raw and HF transformers) and ConvNeXt-V2 FCMAE pre-training checkpoints: each
is detected, loads strictly into every size its family released, gives the independent reference's
features, and is refused in one line when it does not fit."""
import functools
import logging

import layouts
import pytest
import torch
from helpers import load_tool
from reference import RefConvNeXt, dinov3_patch_tokens, randomise_

from convnext_backbone import ARCH_SETTINGS, CheckpointError, ConvNeXt, convert_state_dict
from convnext_backbone.checkpoint import (
    OFFICIAL_DENSE,
    check_fit,
    load_pretrained,
    read_checkpoint,
)
from convnext_backbone.checkpoint.layouts import DINOV3, DINOV3_HF, FCMAE, OUTPUT_NORM

pytestmark = [pytest.mark.core, pytest.mark.onedl_core]

V1 = dict(depths=(2, 1, 4, 1), dims=(16, 24, 32, 48))
V2 = dict(V1, use_grn=True)

# name -> (writer, arch of the family, layout, stage norms the file holds)
FAMILIES = {
    'dinov3': (layouts.dinov3, V1, DINOV3, {3}),
    'dinov3_hf': (layouts.dinov3_hf, V1, DINOV3_HF, {3}),
    'dinov3_hf_model_prefix': (functools.partial(layouts.dinov3_hf, prefix='model.'), V1,
                               DINOV3_HF, {3}),
    'fcmae': (layouts.fcmae, V2, FCMAE, set()),
}
# The sizes each family released: dinov3/models/convnext.py `convnext_sizes`; ConvNeXt-V2's
# README, "ImageNet-1K FCMAE pre-trained weights" (pt_only/convnextv2_{size}_1k_224_fcmae.pt).
RELEASED = {'dinov3': ('tiny', 'small', 'base', 'large'),
            'fcmae': ('v2-atto', 'v2-femto', 'v2-pico', 'v2-nano', 'v2-tiny', 'v2-base',
                      'v2-large', 'v2-huge')}


def _reference(arch, norms, seed=0):
    """The reference with random weights; stage norms the file lacks stay at 1 / 0, as ours."""
    ref = randomise_(RefConvNeXt(arch['depths'], arch['dims'], v2=arch.get('use_grn', False)),
                     seed).eval()
    for i in set(range(4)) - set(norms):
        torch.nn.init.ones_(getattr(ref, f'norm{i}').weight)
        torch.nn.init.zeros_(getattr(ref, f'norm{i}').bias)
    return ref


def _save(ckpt, path):
    if str(path).endswith('.safetensors'):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in ckpt.items()}, str(path))
    else:
        torch.save(ckpt, path)
    return str(path)


def _loaded(arch, path, **kwargs):
    model = ConvNeXt(arch, init_cfg=dict(type='Pretrained', checkpoint=path), **kwargs)
    model.init_weights()
    return model.eval()


def _assert_close(ours, theirs):
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    assert rel < 1e-4, rel


def _tokens(feature_map):
    return feature_map.flatten(2).transpose(1, 2)


@pytest.mark.parametrize('name, suffix', [
    ('dinov3', '.pth'), ('dinov3_hf', '.safetensors'), ('dinov3_hf', '.bin'),
    ('dinov3_hf_model_prefix', '.safetensors'), ('fcmae', '.pt')])
def test_each_family_loads_through_init_cfg_and_matches_the_reference(name, suffix, tmp_path):
    writer, arch, layout, norms = FAMILIES[name]
    ref = _reference(arch, norms)
    path = _save(writer(ref.state_dict(), arch['dims']), tmp_path / f'{name}{suffix}')
    model = _loaded(arch, path)
    x = torch.randn(2, 3, 80, 96)
    with torch.no_grad():
        for ours, theirs in zip(model(x), ref(x)):
            _assert_close(ours, theirs)
    assert convert_state_dict(read_checkpoint(path)).layout == layout


@pytest.mark.parametrize('name', ['dinov3', 'dinov3_hf'])
def test_dinov3_stage3_output_is_dinov3s_normalised_patch_tokens(name, tmp_path):
    writer, arch, _, norms = FAMILIES[name]
    ref = _reference(arch, norms, seed=1)
    state = ref.state_dict()
    path = _save(writer(state, arch['dims']), tmp_path / f'{name}.pth')
    model = _loaded(arch, path, out_indices=(3,))
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        expected = dinov3_patch_tokens(ref, (state['norm3.weight'], state['norm3.bias']), x)
        _assert_close(_tokens(model(x)[0]), expected)


def test_dinov3_written_by_transformers_gives_its_patch_tokens_and_the_reference(tmp_path):
    transformers = pytest.importorskip('transformers')
    if not hasattr(transformers, 'DINOv3ConvNextModel'):
        pytest.skip('transformers without DINOv3ConvNextModel (added in 4.56)')
    ref = _reference(V1, {3}, seed=2)
    config = transformers.DINOv3ConvNextConfig(depths=list(V1['depths']),
                                               hidden_sizes=list(V1['dims']))
    hf = transformers.DINOv3ConvNextModel(config).eval()
    # transformers >= 5 keeps the stages under 'model.' in memory; save_pretrained writes the
    # hub names, which it also reads
    prefix = 'model.' if any(k.startswith('model.') for k in hf.state_dict()) else ''
    hf.load_state_dict(layouts.dinov3_hf(ref.state_dict(), V1['dims'], prefix), strict=True)
    hf.save_pretrained(str(tmp_path / 'hf'))
    raw = _save(layouts.dinov3(ref.state_dict(), V1['dims']), tmp_path / 'dinov3.pth')
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        patch_tokens = hf(pixel_values=x).last_hidden_state[:, 1:]
        for path in (str(tmp_path / 'hf' / 'model.safetensors'), raw):
            outs = _loaded(V1, path)(x)
            _assert_close(_tokens(outs[3]), patch_tokens)
            for ours, theirs in zip(outs, ref(x)):
                _assert_close(ours, theirs)


def _meta_state(family, arch):
    """The file of a released size, shapes only: what the writer makes of the reference."""
    setting = ARCH_SETTINGS[arch]
    with torch.device('meta'):
        ref = RefConvNeXt(setting['depths'], setting['dims'], v2=setting.get('use_grn', False))
    return FAMILIES[family][0](ref.state_dict(), setting['dims'])


def _hf_meta_state(arch):
    """transformers' own DINOv3ConvNextModel of a released size, shapes only."""
    transformers = pytest.importorskip('transformers')
    if not hasattr(transformers, 'DINOv3ConvNextModel'):
        pytest.skip('transformers without DINOv3ConvNextModel (added in 4.56)')
    setting = ARCH_SETTINGS[arch]
    config = transformers.DINOv3ConvNextConfig(depths=list(setting['depths']),
                                               hidden_sizes=list(setting['dims']))
    with torch.device('meta'):
        return transformers.DINOv3ConvNextModel(config).state_dict()


@pytest.mark.parametrize('family, arch', [('dinov3', a) for a in RELEASED['dinov3']]
                         + [('dinov3_hf', a) for a in RELEASED['dinov3']]
                         + [('fcmae', a) for a in RELEASED['fcmae']])
def test_every_released_size_fits_its_arch_exactly(family, arch):
    state = _hf_meta_state(arch) if family == 'dinov3_hf' else _meta_state(family, arch)
    converted = convert_state_dict(state)
    assert converted.layout == FAMILIES[family][2]
    with torch.device('meta'):
        own = ConvNeXt(arch).state_dict()
    fit, absent_norms, unused_norms = check_fit(own, converted.state_dict,
                                                optional=OUTPUT_NORM.match)
    assert fit, fit.describe()
    held = {int(k[4]) for k in converted.state_dict if OUTPUT_NORM.match(k)}
    assert held == FAMILIES[family][3] and not unused_norms
    assert {k.split('.')[0] for k in absent_norms} == {f'norm{i}' for i in range(4)} - {
        f'norm{i}' for i in held}


@pytest.mark.parametrize('name, file_arch, model_arch, expected', [
    # another size of the same family: both archs and the first mismatching shapes
    ('dinov3', dict(V1, dims=(32, 48, 64, 96)), V1,
     ['downsample_layers.0.0.weight: checkpoint (32, 3, 4, 4) vs model (16, 3, 4, 4)',
      'the checkpoint holds depths (2, 1, 4, 1), dims (32, 48, 64, 96)']),
    ('dinov3_hf', dict(V1, depths=(2, 1, 6, 1)), V1,
     ["checkpoint weights the model does not have, first ['stages.2.4.gamma'",
      'the checkpoint holds depths (2, 1, 6, 1), dims (16, 24, 32, 48)']),
    # the other family: V2 weights for a V1 model and back
    ('fcmae', V2, V1, ["model weights missing from the checkpoint, first ['stages.0.0.gamma'",
                       'dims (16, 24, 32, 48) with GRN (V2)']),
    ('dinov3', V1, V2, ["model weights missing from the checkpoint, first "
                        "['stages.0.0.grn.gamma'",
                        'holds depths (2, 1, 4, 1), dims (16, 24, 32, 48):']),
])
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_layout_archs_and_keys(
        name, file_arch, model_arch, expected, tmp_path):
    writer, _, layout, norms = FAMILIES[name]
    ref = _reference(file_arch, norms)
    path = _save(writer(ref.state_dict(), file_arch['dims']), tmp_path / f'{name}.pth')
    with pytest.raises(CheckpointError) as info:
        load_pretrained(ConvNeXt(model_arch), path)
    msg = str(info.value)
    assert f'checkpoint {path} (layout: {layout}) does not fit this ConvNeXt (depths' in msg
    for fragment in expected:
        assert fragment in msg
    assert '\n' not in msg and len(msg) < 800


@pytest.mark.parametrize('name, logged, not_logged', [
    ('dinov3', [f'(layout: {DINOV3})', "norm3 is DINOv3's final norm ('norm', stored again as "
                "'norms.3')", 'kept at their initial values (weight 1, bias 0): norm0, norm1, '
                'norm2.'], ['Ignored', 'classification']),
    ('fcmae', [f'(layout: {FCMAE})', 'the FCMAE encoder has no output norms', 'norm0, norm1, '
               'norm2, norm3.', 'Ignored 15 checkpoint keys outside this backbone: decoder.*, '
               'mask_token.*, pred.*, proj.*.'], ['classification']),
])
def test_the_log_names_the_layout_and_what_was_and_was_not_loaded(name, logged, not_logged,
                                                                  tmp_path, caplog):
    writer, arch, _, norms = FAMILIES[name]
    ref = _reference(arch, norms)
    path = _save(writer(ref.state_dict(), arch['dims']), tmp_path / f'{name}.pth')
    model = ConvNeXt(arch)
    with caplog.at_level(logging.INFO):
        load_pretrained(model, path, logger=logging.getLogger('t'))
    for text in logged:
        assert text in caplog.text
    for text in not_logged:
        assert text not in caplog.text
    if name == 'dinov3':  # the final norm is loaded, not reset as a classifier's would be
        assert torch.equal(model.norm3.weight, ref.norm3.weight)


def test_dinov3_final_norm_stored_twice_with_different_values_is_refused():
    ckpt = layouts.dinov3(_reference(V1, {3}).state_dict(), V1['dims'])
    ckpt['norms.3.weight'] = ckpt['norm.weight'] + 1
    with pytest.raises(CheckpointError, match=r"DINOv3 checkpoint: 'norm.weight' and "
                                              r"'norms.3.weight' both map to 'norm3.weight'"):
        convert_state_dict(ckpt)


def test_fcmae_conversion_is_pure_and_its_result_round_trips_as_our_layout():
    ckpt = layouts.fcmae(_reference(V2, ()).state_dict(), V2['dims'])
    before = {k: v.clone() for k, v in ckpt['model'].items()}
    converted = convert_state_dict(ckpt)
    assert all(torch.equal(before[k], v) for k, v in ckpt['model'].items())
    again = convert_state_dict(dict(converted.state_dict))
    assert again.layout == OFFICIAL_DENSE and again.unused == []
    assert all(torch.equal(again.state_dict[k], v) for k, v in converted.state_dict.items())


@pytest.mark.parametrize('name', ['dinov3', 'dinov3_hf', 'fcmae'])
def test_convert_checkpoint_tool_writes_our_layout(name, tmp_path, capsys):
    tool = load_tool('convert_checkpoint')
    writer, arch, layout, norms = FAMILIES[name]
    ref = _reference(arch, norms)
    src = _save(writer(ref.state_dict(), arch['dims']), tmp_path / f'{name}.pth')
    dst = str(tmp_path / 'ours.pth')
    assert tool.main([src, dst]) == 0
    assert f'(layout: {layout})' in capsys.readouterr().out
    saved = torch.load(dst, weights_only=True)['state_dict']
    assert {k for k in saved if OUTPUT_NORM.match(k)} == {f'norm{i}.{p}' for i in norms
                                                          for p in ('weight', 'bias')}
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(_loaded(arch, dst)(x), ref(x)):
            _assert_close(ours, theirs)
