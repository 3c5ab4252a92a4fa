"""Every checkpoint that cannot be loaded gets a clear one-line answer naming the file and why
(issue 6): missing, truncated, not a checkpoint, another network, another size."""
import re

import pytest
import torch
from helpers import SMALL, one_line, truncate

from convnext_backbone import CheckpointError, ConvNeXt, load_pretrained

pytestmark = pytest.mark.core


@pytest.fixture
def small_checkpoint(tmp_path):
    path = tmp_path / 'small.pth'
    torch.save({'state_dict': ConvNeXt(arch=SMALL).state_dict()}, path)
    return path


@pytest.mark.parametrize('make, message', [
    (lambda p: p.parent / 'nowhere.pth', 'checkpoint not found: {path}$'),
    (lambda p: truncate(p), r'cannot read checkpoint {path} \(\d+ bytes\): the file is '
                             'truncated, corrupt or not a PyTorch checkpoint'),
    (lambda p: truncate(p, keep=0), r'cannot read checkpoint {path} \(0 bytes\): the file is '
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
    one_line(str(err.value))


@pytest.mark.parametrize('keep', [0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_a_checkpoint_cut_anywhere_is_called_truncated(small_checkpoint, keep):
    # where the cut falls decides what torch's reader raises (an unpickling error, a zip error,
    # or an OSError from a seek past the end): the user's answer must not depend on it
    path = truncate(small_checkpoint, keep=keep)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(ConvNeXt(arch=SMALL), str(path))
    assert re.match(rf'cannot read checkpoint {re.escape(str(path))} \(\d+ bytes\): the file '
                    'is truncated, corrupt or not a PyTorch checkpoint', str(err.value)), \
        str(err.value)


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
    one_line(str(err.value))


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
    message = one_line(str(err.value))
    assert message.startswith(f'checkpoint {small_checkpoint} (layout: official detection/'
                              'segmentation (or convnext_backbone)) does not fit this ConvNeXt')
    assert expected in message


def test_checkpoint_error_reaches_users_of_init_cfg(small_checkpoint):
    model = ConvNeXt(arch=dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128)),
                     init_cfg=dict(type='Pretrained', checkpoint=str(small_checkpoint)))
    with pytest.raises(CheckpointError, match='does not fit this ConvNeXt'):
        model.init_weights()

