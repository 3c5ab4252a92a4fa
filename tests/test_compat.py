"""convnext_backbone.compat and the checkpoint unpickler on the running torch (CI runs this file on
torch 2.1 and the newest).

The restricted unpickler that reads checkpoints below torch 2.6
(``convnext_backbone.checkpoint.unpickler``) runs on every torch, so on a new torch it is checked
against torch's own ``weights_only`` loader.
"""
import argparse
import collections
import io
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

from convnext_backbone import compat
from convnext_backbone.checkpoint import CheckpointError, read_checkpoint, unpickler

pytestmark = [pytest.mark.core, pytest.mark.onedl_core]

LOADERS = {'restricted_load': unpickler.restricted_load,
           'load_allowlisted': unpickler.load_allowlisted}


def _checkpoint():
    buffer = HistoryBuffer()
    for value in (3.0, 1.0, 2.0):
        buffer.update(value)
    return {
        'state_dict': collections.OrderedDict(w=torch.arange(6.).reshape(2, 3),
                                              h=torch.ones(2, dtype=torch.bfloat16)),
        'param': torch.nn.Parameter(torch.zeros(2)),
        'meta': {'args': argparse.Namespace(lr=0.1), 'counts': collections.Counter(a=2),
                 'milestones': {8, 11}, 'array': np.arange(4, dtype=np.int64),
                 'scalar': np.float64(2.5), 'dtype': torch.float16, 'blob': b'\x00\xff'},
        'message_hub': {'loss': buffer},
    }


def _assert_same(got, want):
    assert torch.equal(got['state_dict']['w'], want['state_dict']['w'])
    assert got['state_dict']['h'].dtype == torch.bfloat16
    assert isinstance(got['param'], torch.nn.Parameter)
    meta = got['meta']
    assert meta['args'].lr == 0.1 and meta['counts'] == collections.Counter(a=2)
    assert meta['milestones'] == {8, 11} and meta['dtype'] is torch.float16
    np.testing.assert_array_equal(meta['array'], np.arange(4))
    assert meta['scalar'] == 2.5 and meta['blob'] == b'\x00\xff'
    assert got['message_hub']['loss'].mean() == pytest.approx(2.0)
    assert got['message_hub']['loss'].current() == 2.0


@pytest.mark.parametrize('loader', list(LOADERS))
@pytest.mark.parametrize('zipped', [True, False], ids=['zip', 'legacy'])
def test_an_allowlisted_checkpoint_reads_back_whole(loader, zipped, tmp_path):
    path = tmp_path / 'ckpt.pth'
    torch.save(_checkpoint(), path, _use_new_zipfile_serialization=zipped)
    _assert_same(LOADERS[loader](path), _checkpoint())
    with open(path, 'rb') as f:  # a file object too (read_checkpoint passes BytesIO for s3://)
        _assert_same(LOADERS[loader](io.BytesIO(f.read())), _checkpoint())


def test_restricted_load_reads_what_torchs_weights_only_loader_reads(tmp_path):
    """torch >= 2.6 reads through its own loader; the restricted one must agree with it."""
    if not compat.TORCH_ALLOWLISTS:
        pytest.skip(f'torch {torch.__version__} has no allowlist to compare with (< 2.6)')
    path = tmp_path / 'ckpt.pth'
    torch.save(_checkpoint(), path)
    _assert_same(unpickler.restricted_load(path), unpickler.load_allowlisted(path))


class _WritesAFile:
    """Unpickles as open(marker, 'w'): code that runs if the loader resolves the global."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, 'w')


@pytest.mark.parametrize('loader', list(LOADERS))
def test_a_global_outside_the_allowlist_is_refused_and_never_runs(loader, tmp_path):
    marker, path = tmp_path / 'ran', tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _WritesAFile(marker)}, path)
    # open is io.open; torch >= 2.6 names it by the module it came from, as we do
    with pytest.raises(pickle.UnpicklingError, match=r'GLOBAL (io|builtins)\.open'):
        LOADERS[loader](path)
    assert not marker.exists()


def test_read_checkpoint_refuses_code_in_one_line_naming_the_type(tmp_path):
    marker, path = tmp_path / 'ran', tmp_path / 'evil.pth'
    torch.save({'state_dict': {}, 'x': _WritesAFile(marker)}, path)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(str(path))
    message = str(err.value)
    assert '\n' not in message and str(path) in message
    assert 'holds an object of type io.open' in message
    assert ('add_safe_globals' in message) == compat.TORCH_ALLOWLISTS  # advice that works here
    assert not marker.exists()


def test_getattr_is_allowed_only_for_history_buffer_statistics(tmp_path):
    class Reaches:
        def __reduce__(self):
            return getattr, (HistoryBuffer, '__init__')

    path = tmp_path / 'evil.pth'
    torch.save({'x': Reaches()}, path)
    with pytest.raises(pickle.UnpicklingError, match='refusing getattr'):
        unpickler.restricted_load(path)


def test_numpy_arrays_read_under_the_names_of_numpy_1_and_2():
    """numpy 2 pickles arrays as numpy._core.multiarray._reconstruct, numpy 1 as numpy.core...;
    a checkpoint written under either reads under both."""
    buf = io.BytesIO()
    torch.save({'a': np.arange(3.0)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    names = [b'numpy.core.multiarray\n', b'numpy._core.multiarray\n']
    if int(np.__version__.split('.')[0]) >= 2:
        names.reverse()
    ours, other = names
    assert ours in data  # the legacy format keeps the names as text (pickle protocol 2 GLOBAL)
    for written in (data, data.replace(ours, other)):
        for loader in LOADERS.values():
            got = loader(io.BytesIO(written))
            np.testing.assert_array_equal(got['a'], np.arange(3.0))


def test_a_torchscript_archive_is_refused(tmp_path):
    path = tmp_path / 'scripted.pt'
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(path))
    with pytest.raises(pickle.UnpicklingError, match='TorchScript'):
        unpickler.restricted_load(path)


def test_require_torch_refuses_in_one_line_naming_both_versions():
    compat.require_torch('2.1', 'anything')  # the oldest supported torch passes
    with pytest.raises(RuntimeError) as err:
        compat.require_torch('99.0', 'time travel')
    message = str(err.value)
    assert '\n' not in message
    assert message.startswith('time travel needs torch >= 99.0; this is torch ' + torch.__version__)


def test_torch_at_least_compares_versions_as_numbers():
    assert compat.torch_at_least('2.1') and compat.torch_at_least('2.1.0')
    assert not compat.torch_at_least('2.100')
    assert compat.TORCH_VERSION >= compat.MIN_TORCH


def test_autocast_state_is_read_on_every_torch():
    assert not compat.autocast_enabled('cpu')
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert compat.autocast_enabled('cpu')
        assert compat.autocast_dtype('cpu') == torch.bfloat16
        assert not compat.autocast_enabled('cuda')
    assert not compat.autocast_enabled('cpu')


def test_is_compiling_is_true_only_under_torch_compile():
    def step(x):
        return x + (1 if compat.is_compiling() else 0)

    x = torch.zeros(2)
    assert torch.equal(step(x), x)
    assert torch.equal(torch.compile(step, backend='eager')(x), x + 1)
    assert not compat.is_exporting()


def test_onnx_export_refuses_an_older_torch_in_one_line():
    from convnext_backbone.deploy import onnx_ops
    if compat.torch_at_least(onnx_ops.EXPORT_TORCH):
        onnx_ops.require_export_torch()  # nothing to refuse
        assert onnx_ops.TRANSLATIONS
        return
    from convnext_backbone.deploy import build_graph
    with pytest.raises(ValueError) as err:
        build_graph(torch.nn.Linear(2, 2))
    assert '\n' not in str(err.value)
    assert f'ONNX export needs torch >= {onnx_ops.EXPORT_TORCH}' in str(err.value)
    assert not onnx_ops.TRANSLATIONS
