"""Behaviour of the ConvNeXt backbone: shapes, options, freezing, checkpointing, drop path."""
import pytest
import torch
from helpers import needs_ops
from reference import RefConvNeXt, randomise_

from convnext_backbone import ARCH_SETTINGS, ConvNeXt

pytestmark = [pytest.mark.core, pytest.mark.onedl_core]

SMALL = dict(depths=(1, 1, 2, 1), dims=(8, 16, 32, 64))


@pytest.mark.parametrize('arch', sorted(ARCH_SETTINGS))
def test_every_arch_emits_four_maps_with_declared_channels_and_strides(arch):
    # Built on the meta device: shapes of the largest archs without allocating their weights.
    with torch.device('meta'):
        model = ConvNeXt(arch)
        outs = model(torch.empty(2, 3, 224, 160))
    dims = ARCH_SETTINGS[arch]['dims']
    assert model.out_channels == tuple(dims)
    assert model.out_strides == (4, 8, 16, 32)
    assert [tuple(o.shape) for o in outs] == [
        (2, dims[i], 224 // s, 160 // s) for i, s in enumerate((4, 8, 16, 32))]
    assert len(model.stages[2]) == ARCH_SETTINGS[arch]['depths'][2]
    assert (model.stages[0][0].grn is not None) == arch.startswith('v2')
    assert (model.stages[0][0].gamma is None) == arch.startswith('v2')


@pytest.mark.parametrize('arch', ['tiny', 'v2-atto'])
@pytest.mark.parametrize('size', [(64, 64), (100, 70), (33, 65)])
def test_real_forward_accepts_sizes_not_divisible_by_32(arch, size):
    model = ConvNeXt(arch).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *size))
    h, w = size
    for out, stride in zip(outs, (4, 8, 16, 32)):
        # conv 4x4/4 then three conv 2x2/2: floor at every step.
        h, w = (h // 4, w // 4) if stride == 4 else (h // 2, w // 2)
        assert out.shape[-2:] == (h, w)
        assert torch.isfinite(out).all()


def test_input_smaller_than_32_pixels_is_a_clear_error():
    with pytest.raises(ValueError, match='too small.*at least 32'):
        ConvNeXt(SMALL)(torch.randn(1, 3, 31, 64))


def test_wrong_number_of_input_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r'\(N, 3, H, W\), got \(1, 4, 64, 64\)'):
        ConvNeXt(SMALL)(torch.randn(1, 4, 64, 64))


@pytest.mark.parametrize('out_indices,expected', [
    ((0, 1, 2, 3), (0, 1, 2, 3)), ((3,), (3,)), (2, (2,)), ((-1,), (3,)),
    ([1, -1], (1, 3)), ((3, 0), (0, 3)),
])
def test_out_indices_select_stages_in_stage_order(out_indices, expected):
    given = list(out_indices) if isinstance(out_indices, list) else out_indices
    model = ConvNeXt(SMALL, out_indices=given)
    assert given == out_indices  # never mutated
    assert model.out_indices == expected
    assert model.out_channels == tuple(SMALL['dims'][i] for i in expected)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(model.out_channels)
    norms = {name for name, _ in model.named_children() if name.startswith('norm')}
    assert norms == {f'norm{i}' for i in expected}


@pytest.mark.parametrize('bad', [(4,), (-5,), (), (1, 1), (0, -4), ('1',), (1.0,)])
def test_invalid_out_indices_are_a_clear_error(bad):
    with pytest.raises(ValueError, match='out_indices'):
        ConvNeXt(SMALL, out_indices=bad)


@pytest.mark.parametrize('bad', ['tinyy', 'v1-tiny', 'Tiny', dict(depths=(1, 1, 1), dims=(8,) * 4),
                                 dict(depths=(1,) * 4), dict(depths=(1,) * 4, dims=(0, 1, 2, 3))])
def test_unknown_arch_is_a_clear_error(bad):
    with pytest.raises(ValueError, match='arch') as info:
        ConvNeXt(bad)
    if isinstance(bad, str):
        assert repr(bad) in str(info.value) and 'v2-atto' in str(info.value)


@pytest.mark.parametrize('frozen', [1, 2, 4])
def test_frozen_stages_have_no_grad_and_stay_in_eval_mode(frozen):
    model = ConvNeXt(SMALL, frozen_stages=frozen, drop_path_rate=0.5)
    assert model.train() is model
    for i in range(4):
        params = list(model.downsample_layers[i].parameters()) + list(model.stages[i].parameters())
        assert all(p.requires_grad == (i >= frozen) for p in params)
        assert all(m.training == (i >= frozen) for m in model.stages[i].modules())
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith('norm'))
    model(torch.randn(1, 3, 64, 64))[-1].sum().backward()
    assert model.stages[frozen - 1][0].pwconv1.weight.grad is None


@pytest.mark.parametrize('bad', [-2, 5, 1.5])
def test_frozen_stages_out_of_range_is_a_clear_error(bad):
    with pytest.raises(ValueError, match=f'frozen_stages={bad!r}'):
        ConvNeXt(SMALL, frozen_stages=bad)


@pytest.mark.parametrize('arch', [SMALL, dict(SMALL, use_grn=True)])
def test_with_cp_gives_identical_outputs_and_gradients(arch):
    torch.manual_seed(1)
    plain = ConvNeXt(arch, drop_path_rate=0.3, layer_scale_init_value=1.0)
    cp = ConvNeXt(arch, drop_path_rate=0.3, layer_scale_init_value=1.0, with_cp=True)
    cp.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (plain, cp):
        torch.manual_seed(7)  # same drop-path draws
        inp = x.clone().requires_grad_()
        outs = model.train()(inp)
        sum((o * torch.linspace(0, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
        results.append(([o.detach() for o in outs], inp.grad,
                        {n: p.grad.clone() for n, p in model.named_parameters()}))
    (o1, g1, p1), (o2, g2, p2) = results
    assert all(torch.equal(a, b) for a, b in zip(o1, o2))
    assert torch.allclose(g1, g2, rtol=1e-5, atol=1e-7)
    for name in p1:
        assert torch.allclose(p1[name], p2[name], rtol=1e-5, atol=1e-7), name


def test_drop_path_is_identity_in_eval_and_random_in_train():
    a = ConvNeXt(SMALL, drop_path_rate=0.5, layer_scale_init_value=1.0)
    b = ConvNeXt(SMALL, drop_path_rate=0.0, layer_scale_init_value=1.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(p, q) for p, q in zip(a.eval()(x), b.eval()(x)))
        torch.manual_seed(3)
        first = a.train()(x)[-1]
        torch.manual_seed(4)
        second = a(x)[-1]
    assert not torch.allclose(first, second)


def test_drop_path_rates_grow_linearly_over_all_blocks():
    model = ConvNeXt('tiny', drop_path_rate=0.4)
    rates = [blk.drop_path for stage in model.stages for blk in stage]
    assert len(rates) == 18
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.4)
    assert rates == pytest.approx([0.4 * i / 17 for i in range(18)])


def test_layer_scale_init_value_sets_gamma_and_zero_disables_it():
    assert torch.all(ConvNeXt(SMALL, layer_scale_init_value=1.0).stages[1][0].gamma == 1.0)
    assert ConvNeXt(SMALL, layer_scale_init_value=0).stages[1][0].gamma is None


@pytest.mark.parametrize('v2', [False, True])
def test_outputs_equal_the_plain_reference_implementation(v2):
    arch = dict(depths=(2, 1, 3, 1), dims=(16, 24, 32, 48), use_grn=v2)
    ref = randomise_(RefConvNeXt(arch['depths'], arch['dims'], v2=v2)).eval()
    model = ConvNeXt(arch).eval()
    model.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        for ours, theirs in zip(model(x), ref(x)):
            assert (ours - theirs).norm() / theirs.norm() < 1e-5


@pytest.mark.needs_full_stack  # not in make test-oldest
@needs_ops
def test_outputs_are_contiguous_nchw_as_mmcv_ops_expect():
    # mmcv's RoIAlign reads its input as contiguous NCHW regardless of strides.
    from mmcv.ops import roi_align
    outs = ConvNeXt(SMALL)(torch.randn(1, 3, 64, 64))
    assert all(o.is_contiguous() for o in outs)
    rois = torch.tensor([[0., 4., 4., 40., 48.]])
    pooled = roi_align(outs[0], rois, (7, 7), 0.25, 2, 'avg', True)
    reference = roi_align(outs[0].clone(memory_format=torch.contiguous_format), rois, (7, 7),
                          0.25, 2, 'avg', True)
    assert torch.equal(pooled, reference)


def test_in_channels_other_than_three():
    outs = ConvNeXt(SMALL, in_channels=1)(torch.randn(1, 1, 64, 64))
    assert outs[0].shape == (1, 8, 16, 16)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_grn_stays_finite_on_large_low_precision_activations(dtype):
    """ConvNeXt-V2#64: the squared sum of large fp16 activations overflows."""
    from convnext_backbone.convnext import GRN
    grn = GRN(8)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    # fp16 holds these values, but not their spatial norm (2000 * 64 > 65504)
    x = torch.full((2, 64, 64, 8), 2000.) * torch.linspace(0.5, 1.5, 8)
    if dtype == torch.float16:  # the bug: the norm of the official GRN overflows
        assert not torch.isfinite(torch.linalg.vector_norm(x.half(), dim=(1, 2))).all()
    out = grn(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), grn(x), rtol=2e-2, atol=1.)


def test_v2_backbone_under_autocast_keeps_large_inputs_finite():
    model = ConvNeXt(dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64), use_grn=True)).eval()
    x = torch.randn(1, 3, 64, 64) * 1000
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    assert all(torch.isfinite(o).all() for o in outs)
