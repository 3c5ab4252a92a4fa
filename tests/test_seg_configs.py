"""ADE20K UperNet configs: Table 4's recipe, a training step of every config, the ms+flip TTA path.

The expected values below are written from the paper's Table 4 and the official
semantic_segmentation configs (see ``convnext-recipes.md``), not read from our configs.
"""
import copy
import functools
import glob
import math
import os

import cv2
import numpy as np
import pytest
import torch
from helpers import ROOT
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData

pytest.importorskip('mmseg')
from mmseg.registry import DATASETS, MODELS, PARAM_SCHEDULERS
from mmseg.structures import SegDataSample

CONFIG_DIR = os.path.join(ROOT, 'configs')

IN1K = 'https://dl.fbaipublicfiles.com/convnext/convnext_{}_1k_224.pth'
IN22K = 'https://dl.fbaipublicfiles.com/convnext/convnext_{}_22k_224.pth'
DIMS = {
    'tiny': (96, 192, 384, 768),
    'small': (96, 192, 384, 768),
    'base': (128, 256, 512, 1024),
    'large': (192, 384, 768, 1536),
    'xlarge': (256, 512, 1024, 2048),
}
# Table 4: arch, pre-training, crop, drop path, lr, num_layers, mixed precision, params (M).
RECIPES = {
    'upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py': dict(
        arch='tiny', pretrained=IN1K.format('tiny'), crop=512, drop_path=0.4, lr=1e-4,
        num_layers=6, amp=True, params=60),
    'upernet_convnext-s_8xb2-amp-160k_ade20k-512x512.py': dict(
        arch='small', pretrained=IN1K.format('small'), crop=512, drop_path=0.3, lr=1e-4,
        num_layers=12, amp=True, params=82),
    'upernet_convnext-b_8xb2-amp-160k_ade20k-512x512.py': dict(
        arch='base', pretrained=IN1K.format('base'), crop=512, drop_path=0.4, lr=1e-4,
        num_layers=12, amp=True, params=122),
    'upernet_convnext-b-in22k_8xb2-amp-160k_ade20k-640x640.py': dict(
        arch='base', pretrained=IN22K.format('base'), crop=640, drop_path=0.4, lr=1e-4,
        num_layers=12, amp=True, params=122),
    'upernet_convnext-l-in22k_8xb2-160k_ade20k-640x640.py': dict(
        arch='large', pretrained=IN22K.format('large'), crop=640, drop_path=0.4, lr=1e-4,
        num_layers=12, amp=False, params=235),
    'upernet_convnext-xl-in22k_8xb2-160k_ade20k-640x640.py': dict(
        arch='xlarge', pretrained=IN22K.format('xlarge'), crop=640, drop_path=0.4, lr=8e-5,
        num_layers=12, amp=False, params=391),
}
# Data scale per crop size: training resize, single-scale test resize and the TTA base scale.
SCALE = {512: (2048, 512), 640: (2560, 640)}
STRIDE = {512: 341, 640: 426}
TTA_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)
DECAY_RATE = 0.9
WARMUP_ITERS, WARMUP_RATIO, MAX_ITERS = 1500, 1e-6, 160000
TINY = dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))
NAMES = sorted(RECIPES)
TINY_CFG = 'upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py'
SMALL_CFG = 'upernet_convnext-s_8xb2-amp-160k_ade20k-512x512.py'
B640_CFG = 'upernet_convnext-b-in22k_8xb2-amp-160k_ade20k-640x640.py'
XL_CFG = 'upernet_convnext-xl-in22k_8xb2-160k_ade20k-640x640.py'


@functools.lru_cache(maxsize=None)
def _parse(name: str) -> Config:
    # mmengine reads mmseg's model-index YAMLs for every `mmseg::` base: about 1 s per config.
    return Config.fromfile(os.path.join(CONFIG_DIR, name))


def _load(name: str) -> Config:
    init_default_scope('mmseg')
    return copy.deepcopy(_parse(name))


def _ade_root(tmp_path, size=(32, 48), num=1, seed=0) -> str:
    """A tiny ADE20K-layout dataset: JPEG images, label PNGs with 0 = "other" and classes 1..3."""
    rng = np.random.default_rng(seed)
    for split in ('training', 'validation'):
        os.makedirs(tmp_path / 'images' / split, exist_ok=True)
        os.makedirs(tmp_path / 'annotations' / split, exist_ok=True)
        for i in range(num):
            img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            label = np.zeros(size, np.uint8)
            label[:, : size[1] // 3] = 1
            label[: size[0] // 2, size[1] // 3:] = 2
            label[size[0] // 2:, 2 * size[1] // 3:] = 3  # the rest stays 0: ignored
            assert cv2.imwrite(str(tmp_path / 'images' / split / f'{i}.jpg'), img)
            assert cv2.imwrite(str(tmp_path / 'annotations' / split / f'{i}.png'), label)
    return str(tmp_path)


def _official_lr(base_lr: float, it: int) -> float:
    """mmcv 1.x `poly` (power 1, min 0) with linear warm-up, as in the official configs."""
    warmup = 1.0
    if it < WARMUP_ITERS:
        warmup = 1 - (1 - it / WARMUP_ITERS) * (1 - WARMUP_RATIO)
    return base_lr * (1 - it / MAX_ITERS) * warmup


def _rescaled(hw, scale):
    """mmcv's keep-ratio resize of an (h, w) image into a (long, short) scale."""
    h, w = hw
    factor = min(max(scale) / max(h, w), min(scale) / min(h, w))
    return int(h * factor + 0.5), int(w * factor + 0.5)


# -- the recipe ---------------------------------------------------------------------------------
def test_every_ade20k_160k_config_is_in_the_recipe_table():
    pattern = os.path.join(CONFIG_DIR, 'upernet_convnext-*160k_ade20k-*.py')
    assert {os.path.basename(p) for p in glob.glob(pattern)} == set(RECIPES)


@pytest.mark.parametrize('name', NAMES)
def test_model_follows_the_recipe(name):
    recipe, model = RECIPES[name], _load(name).model
    dims = DIMS[recipe['arch']]
    assert model.type == 'EncoderDecoder' and model.get('pretrained') is None
    backbone = model.backbone
    assert backbone.type == 'convnext_backbone.ConvNeXt'
    assert backbone.arch == recipe['arch']
    assert backbone.drop_path_rate == recipe['drop_path']
    assert backbone.layer_scale_init_value == 1.0
    assert tuple(backbone.out_indices) == (0, 1, 2, 3)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=recipe['pretrained'])
    assert set(backbone) <= {'type', 'arch', 'out_indices', 'drop_path_rate',
                             'layer_scale_init_value', 'init_cfg'}  # no ResNet leftovers

    head, aux = model.decode_head, model.auxiliary_head
    assert head.type == 'UPerHead' and tuple(head.in_channels) == dims
    assert tuple(head.in_index) == (0, 1, 2, 3) and tuple(head.pool_scales) == (1, 2, 3, 6)
    assert (head.channels, head.dropout_ratio, head.num_classes) == (512, 0.1, 150)
    assert head.loss_decode.type == 'CrossEntropyLoss' and head.loss_decode.loss_weight == 1.0
    assert aux.type == 'FCNHead' and aux.in_index == 2 and aux.in_channels == dims[2]
    assert (aux.channels, aux.num_convs, aux.dropout_ratio, aux.num_classes) == (256, 1, 0.1, 150)
    assert aux.concat_input is False
    assert aux.loss_decode.type == 'CrossEntropyLoss' and aux.loss_decode.loss_weight == 0.4
    assert head.norm_cfg.type == aux.norm_cfg.type == 'SyncBN'
    assert head.align_corners is aux.align_corners is False


@pytest.mark.parametrize('name', NAMES)
def test_optimiser_and_schedule_follow_the_recipe(name):
    recipe, cfg = RECIPES[name], _load(name)
    wrapper = cfg.optim_wrapper
    assert wrapper.type == ('AmpOptimWrapper' if recipe['amp'] else 'OptimWrapper')
    assert wrapper.get('loss_scale', 'dynamic') == 'dynamic'
    assert wrapper.get('clip_grad') is None
    assert wrapper.constructor == 'convnext_backbone.LayerDecayOptimizerConstructor'
    assert wrapper.optimizer == dict(type='AdamW', lr=recipe['lr'], betas=(0.9, 0.999),
                                     weight_decay=0.05)
    assert wrapper.paramwise_cfg == dict(decay_rate=DECAY_RATE, decay_type='stage_wise',
                                         num_layers=recipe['num_layers'])
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == MAX_ITERS
    assert cfg.train_dataloader.batch_size == 2  # x 8 GPUs
    assert cfg.auto_scale_lr.base_batch_size == 16


@pytest.mark.parametrize('name', [TINY_CFG, XL_CFG])
def test_lr_follows_the_official_warmup_and_poly_decay(name):
    cfg = _load(name)
    base_lr = cfg.optim_wrapper.optimizer.lr
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(s, optimizer=optimizer))
                  for s in copy.deepcopy(cfg.param_scheduler)]
    # Through the warm-up and past the point where mmseg's port would restart the poly decay.
    for it in range(2 * WARMUP_ITERS + 1):
        lr = optimizer.param_groups[0]['lr']
        # mmengine's LinearLR/PolyLR reach their end value one step early (1499, 159999):
        # 0.07% off mmcv 1.x; starting the poly decay at 1500 would be 0.9% off.
        assert math.isclose(lr, _official_lr(base_lr, it), rel_tol=1e-3), it
        for scheduler in schedulers:
            scheduler.step()
    for scheduler in cfg.param_scheduler:  # ... and it reaches 0 at 160k
        assert not scheduler.by_epoch and scheduler.begin == 0
    assert cfg.param_scheduler[1].end == MAX_ITERS and cfg.param_scheduler[1].eta_min == 0


@pytest.mark.parametrize('name', NAMES)
def test_data_pipelines_follow_the_recipe(name):
    recipe, cfg = RECIPES[name], _load(name)
    crop, scale = recipe['crop'], SCALE[recipe['crop']]
    dataset = cfg.train_dataloader.dataset
    assert dataset.type == 'ADE20KDataset' and dataset.get('reduce_zero_label', True)
    train = [t.type for t in dataset.pipeline]
    assert train == ['LoadImageFromFile', 'LoadAnnotations', 'RandomResize', 'RandomCrop',
                     'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs']
    resize, crop_t, flip = dataset.pipeline[2:5]
    assert (resize.scale, resize.ratio_range, resize.keep_ratio) == (scale, (0.5, 2.0), True)
    assert (crop_t.crop_size, crop_t.cat_max_ratio) == ((crop, crop), 0.75)
    assert flip.prob == 0.5
    preprocessor = cfg.model.data_preprocessor
    assert (preprocessor.size, preprocessor.pad_val, preprocessor.seg_pad_val) == (
        (crop, crop), 0, 255)

    # Single scale: resize to the test scale, then sliding windows.
    for loader in (cfg.val_dataloader, cfg.test_dataloader):
        assert loader.batch_size == 1
        resize = loader.dataset.pipeline[1]
        assert (resize.type, resize.scale, resize.keep_ratio) == ('Resize', scale, True)
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(crop, crop),
                                      stride=(STRIDE[crop],) * 2)

    # Multi-scale + flip: whole images at the ratios of the test scale, each also flipped.
    assert cfg.tta_model.type == 'SegTTAModel'
    assert cfg.tta_test_cfg == dict(mode='whole')
    load, tta = cfg.tta_pipeline
    assert load.type == 'LoadImageFromFile' and tta.type == 'TestTimeAug'
    resizes, flips, annotations, pack = tta.transforms
    assert [(t.type, tuple(t.scale), t.keep_ratio) for t in resizes] == [
        ('Resize', (int(scale[0] * r), int(scale[1] * r)), True) for r in TTA_RATIOS]
    assert [(t.type, t.prob, t.direction) for t in flips] == [
        ('RandomFlip', 0., 'horizontal'), ('RandomFlip', 1., 'horizontal')]
    assert [t.type for t in annotations + pack] == ['LoadAnnotations', 'PackSegInputs']


# -- the configs run ----------------------------------------------------------------------------
@pytest.mark.parametrize('name', [TINY_CFG, B640_CFG])
def test_training_pipeline_gives_crops_that_the_preprocessor_pads_to_crop_size(name, tmp_path):
    cfg = _load(name)
    crop = RECIPES[name]['crop']
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    dataset_cfg.data_root = _ade_root(tmp_path)
    dataset = DATASETS.build(dataset_cfg)
    preprocessor = MODELS.build(cfg.model.data_preprocessor)
    np.random.seed(0)
    for _ in range(3):  # random scale: some crops are smaller than crop size and get padded
        item = dataset[0]
        h, w = item['inputs'].shape[-2:]
        assert h <= crop and w <= crop
        batch = preprocessor(pseudo_collate([item]), training=True)
        assert batch['inputs'].shape == (1, 3, crop, crop)
        gt = batch['data_samples'][0].gt_sem_seg.data
        assert gt.shape == (1, crop, crop)
        # reduce_zero_label: "other" (0) and the padding are ignored (255), classes 1..3 -> 0..2.
        assert set(gt.unique().tolist()) <= {0, 1, 2, 255}
        assert (gt[:, h:, :] == 255).all() and (gt[:, :, w:] == 255).all()


def _cpu_optim_wrapper_cfg(cfg: Config) -> dict:
    # mmengine's AmpOptimWrapper needs a GPU; on this CPU the same constructor and optimizer
    # run under the plain OptimWrapper (its type is checked in the recipe test).
    wrapper = copy.deepcopy(cfg.optim_wrapper)
    wrapper.pop('loss_scale', None)
    wrapper.type = 'OptimWrapper'
    return wrapper


def _random_batch(num_classes: int = 150, size: int = 64) -> dict:
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):  # BatchNorm after the 1x1 pooling of the PPM needs more than one image
        inputs.append(torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g))
        label = torch.randint(0, num_classes, (1, size, size), generator=g)
        label[:, : size // 8] = 255  # ignored pixels, as ADE20K's "other" after reduce_zero_label
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(size, size), ori_shape=(size, size)))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def _build_for_tiny_input(cfg: Config) -> torch.nn.Module:
    # The real architecture on a tiny input: pad to 64 instead of the crop size.
    cfg.model.data_preprocessor.size = (64, 64)
    model = MODELS.build(cfg.model)  # no init_weights(): nothing is downloaded
    return revert_sync_batchnorm(model).train()  # as mmengine's Runner on one process


@pytest.mark.parametrize('name', NAMES)
def test_config_builds_and_runs_a_loss_step_on_a_tiny_input(name):
    model = _build_for_tiny_input(_load(name))
    data = model.data_preprocessor(_random_batch(), training=True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg', 'aux.loss_ce', 'aux.acc_seg'}
    loss, log_vars = model.parse_losses(losses)
    decode, aux = log_vars['decode.loss_ce'].item(), log_vars['aux.loss_ce'].item()
    assert math.isfinite(loss.item())
    # Near-uniform scores at initialisation: cross-entropy ~ ln(150) on the 7/8 of the pixels
    # that are not ignored, averaged over all pixels (mmseg's default, avg_non_ignore=False, as
    # the official code); the aux head weighs 0.4.
    assert decode == pytest.approx(math.log(150) * 7 / 8, rel=0.1)
    assert aux / decode == pytest.approx(0.4, rel=0.1)
    loss.backward()
    no_grad = [k for k, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not no_grad  # backbone (all four stages and norms), decode head and aux head train


@pytest.mark.parametrize('name', [TINY_CFG, SMALL_CFG])
def test_training_step_applies_the_stage_wise_decayed_learning_rates(name):
    recipe, cfg = RECIPES[name], _load(name)
    n, lr = recipe['num_layers'], recipe['lr']
    model = _build_for_tiny_input(cfg)
    optim_wrapper = build_optim_wrapper(model, _cpu_optim_wrapper_cfg(cfg))
    watched = {  # parameter -> expected lr: stage_wise ids, lr = base * 0.9 ** (n + 1 - id)
        'backbone.downsample_layers.0.0.weight': lr * DECAY_RATE ** (n + 1),
        'backbone.downsample_layers.3.1.weight': lr * DECAY_RATE ** (n + 1),
        'backbone.stages.0.0.pwconv1.weight': lr * DECAY_RATE ** n,
        'backbone.stages.2.8.dwconv.weight': lr * DECAY_RATE ** (n - 2),
        'backbone.stages.3.0.pwconv2.weight': lr * DECAY_RATE ** (n - 3),
        'decode_head.fpn_bottleneck.conv.weight': lr,
        'auxiliary_head.conv_seg.weight': lr,
    }
    params = dict(model.named_parameters())
    before = {k: params[k].detach().clone() for k in watched}

    log_vars = model.train_step(_random_batch(), optim_wrapper)

    assert math.isfinite(log_vars['loss'].item())
    for key, expected_lr in watched.items():
        # AdamW's first step moves every weight with a non-zero gradient by ~lr (plus lr * wd * w).
        step = (params[key].detach() - before[key]).abs().max().item()
        assert step == pytest.approx(expected_lr, rel=0.02), key


# -- multi-scale + flip test ----------------------------------------------------------------------
def _tiny_model_cfg(cfg: Config, num_classes: int = 4) -> dict:
    model = copy.deepcopy(cfg.model)
    model.backbone.arch = TINY
    model.backbone.init_cfg = None
    model.decode_head.update(in_channels=list(TINY['dims']), channels=8, num_classes=num_classes)
    model.auxiliary_head.update(in_channels=TINY['dims'][2], channels=8, num_classes=num_classes)
    return model


def test_tta_averages_twelve_whole_image_views_at_the_official_scales(tmp_path):
    cfg = _load(TINY_CFG)
    hw = (32, 48)
    dataset_cfg = dict(type=cfg.test_dataloader.dataset.type, data_root=_ade_root(tmp_path, hw),
                       data_prefix=cfg.test_dataloader.dataset.data_prefix,
                       pipeline=cfg.tta_pipeline)
    dataset = DATASETS.build(dataset_cfg)
    # What `tools/test.py --tta` builds: SegTTAModel around the model with the TTA test_cfg.
    module = _tiny_model_cfg(cfg)
    module.test_cfg = cfg.tta_test_cfg
    tta = MODELS.build(dict(cfg.tta_model, module=module))
    tta.module = revert_sync_batchnorm(tta.module)
    tta.eval()
    assert tta.module.test_cfg.mode == 'whole'

    label = cv2.imread(os.path.join(dataset_cfg['data_root'], 'annotations', 'validation',
                                    '0.png'), cv2.IMREAD_UNCHANGED)
    expected_gt = np.where(label == 0, 255, label.astype(np.int64) - 1)  # reduce_zero_label
    item = dataset[0]
    views = item['data_samples']
    assert len(views) == len(item['inputs']) == 2 * len(TTA_RATIOS)
    for i, (img, view) in enumerate(zip(item['inputs'], views)):
        ratio = TTA_RATIOS[i // 2]
        # Each ratio scales the test scale (2048, 512), not the raw image.
        expected = _rescaled(hw, (int(2048 * ratio), int(512 * ratio)))
        assert view.img_shape == expected == tuple(img.shape[-2:])
        assert view.ori_shape == hw
        assert view.flip == (i % 2 == 1)
        if view.flip:
            assert torch.equal(img, item['inputs'][i - 1].flip(-1))
        # Ground truth at the original size.
        assert np.array_equal(view.gt_sem_seg.data[0].numpy(), expected_gt)

    with torch.no_grad():
        merged = tta.test_step(pseudo_collate([item]))
        # Independently: each view alone, scores back at the original size, softmax averaged.
        probs = []
        for img, view in zip(*(dataset[0][k] for k in ('inputs', 'data_samples'))):
            out = tta.module.test_step(dict(inputs=[img], data_samples=[view]))[0]
            assert out.seg_logits.data.shape == (4, *hw)
            probs.append(out.seg_logits.data.softmax(dim=0))
    assert len(merged) == 1
    prediction = merged[0].pred_sem_seg.data
    assert prediction.shape[-2:] == hw
    assert torch.equal(prediction.reshape(hw), torch.stack(probs).mean(0).argmax(0))

    evaluator = Evaluator(cfg.test_evaluator)  # IoUMetric, as the Runner's test loop
    evaluator.dataset_meta = dataset.metainfo
    evaluator.process(merged, pseudo_collate([item]))
    assert 0 <= evaluator.evaluate(1)['mIoU'] <= 100


# -- Table 4's parameter counts --------------------------------------------------------------------
@pytest.mark.parametrize('name', NAMES)
def test_parameter_count_matches_table_4_within_3_percent(name):
    cfg = _load(name)
    with torch.device('meta'):  # shapes only: no memory for the large models
        model = MODELS.build(cfg.model)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    assert params == pytest.approx(RECIPES[name]['params'], rel=0.03)
