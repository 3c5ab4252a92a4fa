"""mmengine's model-zoo names are resolved by us and read by our allowlisting reader, on every
torch and either stack; mmengine's ``CheckpointLoader`` (which falls back to full unpickling on
the OneDL fork) is never asked."""
import os

import pytest
import torch
from helpers import RunsCode

from convnext_backbone.checkpoint import CheckpointError, read_checkpoint, zoo

pytestmark = pytest.mark.onedl_core


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch hub's checkpoint folder under a temporary TORCH_HOME."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch'))
    folder = tmp_path / 'torch' / 'hub' / 'checkpoints'
    folder.mkdir(parents=True)
    return folder


def _never_asked(*args, **kwargs):
    raise AssertionError("mmengine's CheckpointLoader was asked")


@pytest.mark.parametrize('name', ['torchvision://convnext_tiny', 'open-mmlab://resnet50_v1c',
                                  'mmcls://resnet50'])
def test_a_code_running_file_behind_a_zoo_name_is_refused_and_nothing_runs(
        hub, tmp_path, monkeypatch, name):
    from mmengine.runner.checkpoint import CheckpointLoader
    monkeypatch.setattr(CheckpointLoader, 'load_checkpoint', _never_asked)
    url = zoo.resolve(name)
    marker = tmp_path / 'code-ran'
    torch.save({'state_dict': {'backbone.x': torch.zeros(1)}, 'meta': RunsCode(marker)},
               hub / os.path.basename(url))
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(name)
    assert 'holds an object of type posix.system' in str(err.value)
    assert '\n' not in str(err.value)
    assert not marker.exists()


def test_open_mmlab_names_follow_mmengines_tables_and_deprecations():
    from mmengine.runner.checkpoint import get_deprecated_model_names, get_external_models
    deprecated, current = next(iter(get_deprecated_model_names().items()))
    assert zoo.resolve(f'open-mmlab://{deprecated}') == get_external_models()[current]
    assert zoo.resolve('openmmlab://resnet50_v1c') == get_external_models()['resnet50_v1c']


def test_mmcls_names_give_the_backbone_weights_as_mmengine_does(hub):
    url = zoo.resolve('mmcls://resnet50')
    torch.save({'state_dict': {'backbone.conv1.weight': torch.ones(2), 'head.fc.weight':
                               torch.zeros(2)}}, hub / os.path.basename(url))
    assert list(read_checkpoint('mmcls://resnet50')['state_dict']) == ['conv1.weight']


@pytest.mark.parametrize('name, message', [
    ('open-mmlab://no_such_model', "no such model in mmengine's table"),
    ('pavi://some/file.pth', 'pavi:// checkpoints are not read by convnext_backbone'),
])
def test_unknown_zoo_names_are_one_line(name, message):
    with pytest.raises(CheckpointError, match=message) as err:
        read_checkpoint(name)
    assert '\n' not in str(err.value)


@pytest.mark.parametrize('spelling', ['convnext_small', 'convnext_small.default',
                                      'convnext_small.imagenet1k_v1',
                                      'ConvNeXt_Small_Weights.IMAGENET1K_V1'])
def test_torchvision_convnext_names_resolve_without_torchvision(spelling):
    assert zoo.resolve(f'torchvision://{spelling}') == zoo.TORCHVISION_CONVNEXT['convnext_small']
    assert zoo.resolve(f'modelzoo://{spelling}') == zoo.TORCHVISION_CONVNEXT['convnext_small']
