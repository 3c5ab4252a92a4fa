"""torchvision's ConvNeXt checkpoints, checked against torchvision's own model code.

torchvision installs beside the OneDL venv's torch (``make install-onedl``: torch 2.14.1 and
torchvision 0.29.1); where it does not import (the CPU torch of ``.venv``), these tests skip.
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from helpers import ROOT

from convnext_backbone import ConvNeXt
from convnext_backbone.checkpoint import TORCHVISION, convert_state_dict, read_checkpoint
from convnext_backbone.checkpoint.zoo import TORCHVISION_CONVNEXT

pytestmark = pytest.mark.onedl_core

torchvision = pytest.importorskip('torchvision', reason='torchvision is not installed here')
models = torchvision.models

ARCHS = {'convnext_tiny': 'tiny', 'convnext_small': 'small', 'convnext_base': 'base',
         'convnext_large': 'large'}


def _torchvision_model(name, seed=0):
    """torchvision's model with every weight random, layer scales and norms included (its own
    init leaves layer scale at 1e-6, which would hide a wrongly mapped block)."""
    torch.manual_seed(seed)
    model = getattr(models, name)(weights=None).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * (0.5 if param.dim() < 2 else 0.05))
    return model


def _stage_features(model, x):
    """torchvision's own stage outputs: features[1], [3], [5], [7]."""
    outs = []
    for i, layer in enumerate(model.features):
        x = layer(x)
        if i % 2 == 1:
            outs.append(x)
    return outs


@pytest.mark.parametrize('name', list(ARCHS))
def test_torchvision_state_dict_loads_strictly_and_gives_torchvisions_stage_features(
        tmp_path, name):
    tv = _torchvision_model(name)
    path = tmp_path / f'{name}.pth'
    torch.save(tv.state_dict(), path)   # what torchvision's download holds: a plain state dict
    ours = ConvNeXt(ARCHS[name], init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    ours.eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        got = ours(x)
        want = _stage_features(tv, x)
    for i, (g, w) in enumerate(zip(got, want)):
        # norm{i}: the output norms torchvision has none of, starting at weight 1, bias 0
        assert torch.equal(getattr(ours, f'norm{i}').weight, torch.ones(w.shape[1]))
        normed = F.layer_norm(w.permute(0, 2, 3, 1), (w.shape[1],), eps=1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(g, normed, rtol=1e-4, atol=1e-4)


def test_torchvision_layout_is_detected_and_its_classifier_left_out():
    converted = convert_state_dict(_torchvision_model('convnext_tiny').state_dict())
    assert converted.layout == TORCHVISION
    assert sorted(converted.unused) == ['classifier.0.bias', 'classifier.0.weight',
                                        'classifier.2.bias', 'classifier.2.weight']
    assert converted.state_dict['stages.3.2.gamma'].shape == (768,)


def test_convert_tool_writes_our_layout_from_a_torchvision_file(tmp_path):
    tv = _torchvision_model('convnext_tiny')
    torch.save(tv.state_dict(), tmp_path / 'tv.pth')
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'convert_checkpoint.py'),
                           str(tmp_path / 'tv.pth'), str(tmp_path / 'out.pth')],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '(layout: torchvision)' in proc.stdout
    state = torch.load(tmp_path / 'out.pth', weights_only=True)['state_dict']
    ours = ConvNeXt('tiny')
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert sorted(missing) == [f'norm{i}.{p}' for i in range(4) for p in ('bias', 'weight')]
    assert not unexpected
    assert torch.equal(state['stages.1.2.pwconv2.weight'], tv.features[3][2].block[5].weight)


@pytest.mark.parametrize('name', list(ARCHS))
def test_torchvision_names_resolve_to_the_file_torchvision_downloads(name):
    from mmengine.runner.checkpoint import get_torchvision_models
    weights = models.get_model_weights(name).IMAGENET1K_V1
    assert TORCHVISION_CONVNEXT[name] == weights.url
    assert get_torchvision_models()[f'{name}.imagenet1k_v1'] == weights.url


def test_torchvision_scheme_reads_torch_hubs_cached_file_through_our_reader(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))
    tv = _torchvision_model('convnext_tiny')
    cached = tmp_path / 'hub' / 'checkpoints' / os.path.basename(
        models.ConvNeXt_Tiny_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), cached)
    for spelling in ('torchvision://convnext_tiny', 'torchvision://convnext_tiny.imagenet1k_v1',
                     'torchvision://ConvNeXt_Tiny_Weights.IMAGENET1K_V1'):
        state = read_checkpoint(spelling)
        assert torch.equal(state['features.1.0.layer_scale'], tv.features[1][0].layer_scale)
    ours = ConvNeXt('tiny', init_cfg=dict(type='Pretrained',
                                          checkpoint='torchvision://convnext_tiny'))
    ours.init_weights()
    assert torch.equal(ours.stages[0][0].gamma.detach(), tv.features[1][0].layer_scale.flatten())
