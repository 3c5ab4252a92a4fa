"""CompileForTestHook (engine/compiled_eval.py) compiles for val/test only, for a bounded
number of shapes."""
from types import SimpleNamespace

import pytest
import torch
from mmengine.registry import HOOKS
from torch import nn

from convnext_backbone import ConvNeXt
from convnext_backbone.engine import CompileForTestHook

pytestmark = pytest.mark.core


class Detector(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = ConvNeXt(dict(depths=(1, 1, 1, 1), dims=(8, 8, 8, 8))).eval()


def _runner():
    return SimpleNamespace(model=Detector())


def _is_compiled(module):
    return 'forward' in module.__dict__


def test_hook_is_registered_and_compiles_for_test_only_then_restores():
    hook = HOOKS.build(dict(type='convnext_backbone.CompileForTestHook', backend='eager',
                            max_shapes=1))
    runner = _runner()
    backbone = runner.model.backbone
    keys = list(runner.model.state_dict())
    x, other = torch.randn(1, 3, 64, 64), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        expected = backbone(x), backbone(other)
        hook.before_test(runner)
        assert _is_compiled(backbone) and list(runner.model.state_dict()) == keys
        got = backbone(x), backbone(other)   # the second shape is beyond max_shapes: eager
        assert backbone.forward.shapes == {(1, 3, 64, 64)}
        hook.after_test(runner)
    assert not _is_compiled(backbone)
    for outs, refs in zip(got, expected):
        for a, b in zip(outs, refs):
            assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
    hook.before_val(runner)
    assert _is_compiled(backbone)
    hook.after_val(runner)
    assert not _is_compiled(backbone)


def test_fixed_size_padding_compiles_one_shape_and_crops_the_outputs():
    hook = CompileForTestHook(backend='eager', max_shapes=1, pad_to=(96, 128))
    runner = _runner()
    hook.before_test(runner)
    backbone = runner.model.backbone
    with torch.no_grad():
        for h, w in ((64, 64), (96, 96), (64, 128)):
            outs = backbone(torch.randn(1, 3, h, w))
            assert [o.shape[-2:] for o in outs] == [
                (h // s, w // s) for s in (4, 8, 16, 32)]
    assert backbone.forward.shapes == {(1, 3, 96, 128)}
    hook.after_test(runner)


@pytest.mark.parametrize('kwargs,match', [
    (dict(modules=('backbone', 'neck')), "no submodule 'neck'"),
    (dict(max_shapes=0), 'max_shapes=0'),
    (dict(pad_to=(512,)), r'pad_to=\(512,\)'),
    (dict(modules='backbone'), "modules='backbone'"),
])
def test_bad_settings_are_refused_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CompileForTestHook(backend='eager', **kwargs).before_test(_runner())
