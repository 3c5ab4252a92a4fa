"""A user's own data, first try (issue 20): the shipped own-data configs train and test on small
data the tests write, ``load_from`` never trains silently from random weights, and data mistakes
that would fail later are named before training starts."""
import json
import logging
import os
import re
import time

import layouts
import numpy as np
import pytest
import torch
from helpers import ROOT, SMALL, load_tool, one_line
from make_demo_data import SEG_CLASSES, SHAPES, make_ade, make_coco
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from PIL import Image
from test_tools import check, needs_ops, tool
from torch import nn

from convnext_backbone import CheckpointError, ConvNeXt
from convnext_backbone.engine import DatasetError, ResumableRunner

CONFIGS = os.path.join(ROOT, 'configs')
OWN_COCO = os.path.join(CONFIGS, 'own-data', 'mask-rcnn_convnext-t_fpn_1x_own-coco.py')
OWN_SEG = os.path.join(CONFIGS, 'own-data', 'upernet_convnext-t_20k_own-seg-512x512.py')


# -- the data the tests write ----------------------------------------------------------------------
@pytest.fixture(scope='module')
def own_coco(tmp_path_factory):
    """The demo's shapes in the example config's layout: annotations/{train,val}.json."""
    root = tmp_path_factory.mktemp('own_coco')
    written = make_coco(str(root), {'train': 10, 'val': 2}, size=64)
    for split, path in written.items():
        os.rename(path, root / 'annotations' / f'{split}.json')
    return root


@pytest.fixture(scope='module')
def own_seg(tmp_path_factory):
    """The demo's ADE20K-layout scenes as labelme writes label maps: palette PNGs, 0 = background
    (a class), in the example config's layout images/{train,val}, labels/{train,val}."""
    root = tmp_path_factory.mktemp('own_seg')
    make_ade(str(root / 'ade'), {'training': 4, 'validation': 2}, size=64)
    palette = [v for i in range(256) for v in ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)]
    for ade, ours in (('training', 'train'), ('validation', 'val')):
        os.makedirs(root / 'labels' / ours)
        os.renames(root / 'ade' / 'images' / ade, root / 'images' / ours)
        for name in sorted(os.listdir(root / 'ade' / 'annotations' / ade)):
            label = Image.open(root / 'ade' / 'annotations' / ade / name)
            indexed = Image.fromarray(np.asarray(label), mode='P')
            indexed.putpalette(palette)
            indexed.save(root / 'labels' / ours / name)
    return root


def user_config(src, path, edits, extra=''):
    """The example config as a user edits it: the EDIT lines set to ``edits`` (each must be
    there once); then a config inheriting it with ``extra`` (what only a test needs: no
    workers, a local checkpoint), which is returned."""
    text = open(src, encoding='utf-8').read().replace("_base_ = '../", f"_base_ = '{CONFIGS}/")
    for name, value in edits.items():
        pattern = re.compile(rf'^{name} = .*$', re.M)
        assert len(pattern.findall(text)) == 1, name
        text = pattern.sub(lambda _, n=name, v=value: f'{n} = {v}', text)
    edited = path.with_name('edited_' + path.name)
    edited.write_text(text)
    path.write_text(f'_base_ = {str(edited)!r}\n' + extra)
    return str(path)


@pytest.fixture(scope='module')
def tiny_imagenet_t(tmp_path_factory):
    """A ConvNeXt-T classification file in the official layout (random weights): the init_cfg
    of the examples without a download."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp('pretrained') / 'convnext_tiny_cls.pth'
    model = ConvNeXt('tiny')
    torch.save(layouts.official_classification(model.state_dict(), model.dims), path)
    return str(path)


NO_WORKERS = '''
train_dataloader = dict(num_workers=0, persistent_workers=False)
val_dataloader = dict(num_workers=0, persistent_workers=False)
test_dataloader = val_dataloader
default_hooks = dict(logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
'''


def coco_config(path, root, pretrained, **edits):
    edits = {'data_root': repr(str(root) + '/'), 'classes': repr(SHAPES),
             'image_scale': '(128, 128)', 'max_epochs': '1', **edits}
    # score_thr 0: after two iterations no score passes mmdet's 0.05, and the COCO metric needs
    # detections to report numbers.
    extra = NO_WORKERS + f'''
model = dict(backbone=dict(init_cfg=dict(checkpoint={pretrained!r})),
             train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rcnn=dict(score_thr=0.0)))
'''
    return user_config(OWN_COCO, path, edits, extra)


def seg_config(path, root, pretrained, **edits):
    edits = {'data_root': repr(str(root) + '/'), 'classes': repr(('background',) + SEG_CLASSES),
             'crop_size': '(64, 64)', 'image_scale': '(128, 64)', 'max_iters': '2',
             'interval': '2', **edits}
    extra = NO_WORKERS + f'''
model = dict(backbone=dict(init_cfg=dict(checkpoint={pretrained!r})))
tta_scale = (128, 64)
'''
    return user_config(OWN_SEG, path, edits, extra)


def _runner(config, work_dir, **cfg_options):
    from convnext_backbone import cli
    cfg = cli.load_config(config, cfg_options, work_dir=str(work_dir))
    cfg.experiment_name = f'own-{time.time_ns()}'
    return cli.build_runner(cfg)


# -- the example configs, trained and tested -------------------------------------------------------
@needs_ops
def test_own_coco_example_trains_tests_and_keeps_the_best_and_last_checkpoints(
        own_coco, tiny_imagenet_t, tmp_path):
    config = coco_config(tmp_path / 'my_coco.py', own_coco, tiny_imagenet_t)
    work = tmp_path / 'work'
    log = check(tool('train.py', config, '--work-dir', work, timeout=900))
    log = log.stdout + log.stderr
    assert re.search(r'Epoch\(train\)\s+\[1\]\[5/5\]', log), log[-3000:]
    assert f'Loaded 178 ConvNeXt weights from {tiny_imagenet_t} (layout: official ' \
           'classification)' in log
    assert re.search(r'coco/segm_mAP: ', log)
    assert (work / 'epoch_1.pth').is_file() and (work / 'best_coco_segm_mAP_epoch_1.pth').is_file()
    check(tool('test.py', config, work / 'epoch_1.pth', '--work-dir', tmp_path / 'test',
               timeout=600))
    metrics = json.loads((tmp_path / 'test' / 'test_metrics.json').read_text())
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)


@needs_ops
def test_own_segmentation_example_trains_and_tests_on_palette_label_maps(own_seg, tiny_imagenet_t,
                                                                          tmp_path):
    config = seg_config(tmp_path / 'my_seg.py', own_seg, tiny_imagenet_t)
    work = tmp_path / 'work'
    log = check(tool('train.py', config, '--work-dir', work, timeout=900))
    log = log.stdout + log.stderr
    assert re.search(r'Iter\(train\) \[2/2\]', log), log[-3000:]
    assert re.search(r'mIoU: ', log)
    assert (work / 'iter_2.pth').is_file() and (work / 'best_mIoU_iter_2.pth').is_file()
    check(tool('test.py', config, work / 'iter_2.pth', '--work-dir', tmp_path / 'test',
               timeout=600))
    metrics = json.loads((tmp_path / 'test' / 'test_metrics.json').read_text())
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)


def test_examples_keep_the_last_three_checkpoints_and_so_do_the_recipes():
    """Every shipped recipe (the demo's save once, at their end)."""
    import glob

    from mmengine.config import Config
    configs = [p for p in glob.glob(os.path.join(CONFIGS, '**', '*.py'), recursive=True)
               if os.sep + '_base_' + os.sep not in p and os.sep + 'demo' + os.sep not in p]
    assert OWN_COCO in configs and OWN_SEG in configs and len(configs) >= 30
    for config in configs:
        assert Config.fromfile(config).default_hooks.checkpoint.max_keep_ckpts == 3, config


def test_own_data_page_shows_the_shipped_example_configs_verbatim():
    page = open(os.path.join(ROOT, 'docs', 'own-data.md'), encoding='utf-8').read()
    blocks = re.findall(r'```python\n(.*?)```', page, re.S)
    for config in (OWN_COCO, OWN_SEG):
        assert open(config, encoding='utf-8').read() in blocks, config


# -- load_from and resume --------------------------------------------------------------------------
class Detector(BaseModel):
    """A model of the usual parts: a ConvNeXt backbone, a neck and a head."""

    def __init__(self, classes=3):
        super().__init__()
        self.backbone = ConvNeXt(SMALL)
        self.neck = nn.Linear(64, 8)
        self.head = nn.Linear(8, classes)

    def forward(self, inputs, target=None, mode='tensor'):
        out = self.head(self.neck(self.backbone(inputs)[-1].mean((2, 3))))
        return dict(loss=out.square().mean()) if mode == 'loss' else out


def _toy_runner(tmp_path, load_from, resume=False, model=None):
    return ResumableRunner(model=model or Detector(), work_dir=str(tmp_path / 'work'),
                           load_from=str(load_from), resume=resume,
                           experiment_name=f'load-{time.time_ns()}')


@pytest.mark.parametrize('writer, layout', [
    (lambda sd, dims: sd, 'official detection/segmentation (or convnext_backbone)'),
    (layouts.official_classification, 'official classification'),
    (layouts.timm, 'timm'),
])
@pytest.mark.parametrize('resume', [False, True])
def test_load_from_a_backbone_alone_is_refused_with_the_init_cfg_to_write(tmp_path, writer,
                                                                           layout, resume):
    path = tmp_path / 'backbone.pth'
    torch.save(writer(ConvNeXt(SMALL).state_dict(), SMALL['dims']), path)
    with pytest.raises(CheckpointError) as err:
        _toy_runner(tmp_path, path, resume=resume).load_or_resume()
    message = one_line(str(err.value), limit=700)
    assert message.startswith(f'load_from {path}: none of its ')
    assert "fits the model (first model keys ['backbone.downsample_layers.0.0.weight'" in message
    assert message.endswith(
        f'it holds a ConvNeXt backbone alone (layout: {layout}); load it into the backbone with '
        f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{path}') and "
        'load_from=None')


def test_load_from_a_file_of_another_network_names_its_keys_and_the_models(tmp_path):
    path = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7),
                               'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}}, path)
    with pytest.raises(CheckpointError) as err:
        _toy_runner(tmp_path, path).load_or_resume()
    assert one_line(str(err.value), limit=700) == (
        f"load_from {path}: none of its 2 tensors fits the model (not a ConvNeXt layout; its "
        "first keys ['conv1.weight', 'layer1.0.conv1.weight']; the model's first keys "
        "['backbone.downsample_layers.0.0.weight', 'backbone.downsample_layers.0.0.bias', "
        "'backbone.downsample_layers.0.1.weight']): is it a checkpoint of this model?")


def test_load_from_with_other_classes_loads_the_rest_and_says_how_much_in_one_line(tmp_path,
                                                                                   caplog):
    trained = Detector(classes=80)
    path = tmp_path / 'coco.pth'
    torch.save({'state_dict': trained.state_dict(), 'meta': {}}, path)
    runner = _toy_runner(tmp_path, path)
    runner.logger.addHandler(caplog.handler)  # mmengine's logger does not propagate
    with caplog.at_level(logging.INFO):
        runner.load_or_resume()
    state = runner.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in trained.state_dict().items()
               if not k.startswith('head.'))
    assert not torch.equal(state['neck.weight'], Detector().neck.weight)
    lines = [r for r in caplog.records if 'tensors from' in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert lines[0].getMessage() == (
        f"Loaded 62 of the model's 64 tensors from {path}: backbone 60/60, neck 2/2, head 0/2 (the "
        'others keep their initialisation); 2 differ in shape, first head.weight: checkpoint '
        '(80, 8) vs model (3, 8); head.bias: checkpoint (80,) vs model (3,).')
    assert 'missing keys in source state_dict' not in caplog.text  # mmengine's key lists


def test_load_from_a_whole_model_with_an_mmpretrain_backbone_is_refused_with_how_to_convert(
        tmp_path):
    """mmdet's and mmseg's model-zoo ConvNeXt files: only the backbone's norms and convs of the
    downsampling layers would load, its blocks not."""
    state = {}
    for key, value in Detector().state_dict().items():
        state[key.replace('.dwconv.', '.depthwise_conv.').replace('.pwconv', '.pointwise_conv')] = \
            value
    path = tmp_path / 'mmdet_zoo.pth'
    torch.save({'state_dict': state}, path)
    with pytest.raises(CheckpointError) as err:
        _toy_runner(tmp_path, path).load_or_resume()
    message = one_line(str(err.value), limit=700)
    assert message.startswith(f"load_from {path}: its backbone is in the mmpretrain layout (as in "
                              "mmdet's and mmseg's model zoos), so only 36 of the backbone's 60 "
                              'tensors would load: convert the file once with python '
                              f'tools/convert_mmdet2_checkpoint.py CONFIG {path} OUT.pth')


MMSEG_CONFIG = '''
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), out_indices=(3,)),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     num_classes=9, loss_decode=dict(type='CrossEntropyLoss')))
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(type='BaseSegDataset', data_root=DATA_ROOT, img_suffix='.jpg',
                 seg_map_suffix='.png', reduce_zero_label=False,
                 metainfo=dict(classes=tuple(f'c{i}' for i in range(9))),
                 data_prefix=dict(img_path='images/train', seg_map_path='labels/train'),
                 pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                           dict(type='PackSegInputs')]))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=1)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
'''


@pytest.mark.parametrize('how', [['--cfg-options', 'load_from={path}'], ['--resume', '{path}']])
def test_train_py_with_a_load_from_that_fits_nothing_exits_with_one_line(own_seg, tmp_path, how):
    pytest.importorskip('mmseg')
    config = tmp_path / 'tiny.py'
    config.write_text(f'DATA_ROOT = {str(own_seg)!r}\n' + MMSEG_CONFIG)
    path = tmp_path / 'backbone_small.pth'
    torch.save(ConvNeXt('small').state_dict(), path)
    proc = tool('train.py', config, '--work-dir', tmp_path / 'work',
                *[a.format(path=path) for a in how])
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert 'Traceback' not in proc.stderr and 'Iter(train)' not in proc.stdout + proc.stderr
    last = one_line(proc.stderr.strip().splitlines()[-1], limit=700)
    assert last.startswith(f'train.py: error: load_from {path}: none of its 348 tensors fits the '
                           'model'), last
    assert f"model.backbone.init_cfg=dict(type='Pretrained', checkpoint='{path}')" in last


# -- the data, checked before training starts ------------------------------------------------------
@pytest.fixture
def coco_copy(own_coco, tmp_path):
    import shutil
    root = tmp_path / 'coco'
    shutil.copytree(own_coco, root)
    return root


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _train_fails(config, work_dir, **cfg_options):
    """Training stops with a DatasetError before its first iteration."""
    runner = _runner(config, work_dir, **cfg_options)
    with pytest.raises(DatasetError) as err:
        runner.train()
    # the train loop was never built, so no iteration ran and nothing was saved
    assert isinstance(runner._train_loop, dict)
    assert not any(n.endswith('.pth') for n in os.listdir(work_dir))
    return one_line(str(err.value), limit=700)


@needs_ops
def test_a_missing_image_is_named_before_training(coco_copy, tiny_imagenet_t, tmp_path):
    os.remove(coco_copy / 'train' / '000007.jpg')
    config = coco_config(tmp_path / 'c.py', coco_copy, tiny_imagenet_t)
    message = _train_fails(config, tmp_path / 'w')
    assert message == (f'1 of the 10 images listed in {coco_copy}/annotations/train.json are not '
                       f'in {coco_copy}/train/, e.g. 000007.jpg: check '
                       'train_dataloader.dataset.data_prefix')


@needs_ops
@pytest.mark.parametrize('damage', ['cut', 'empty'])
def test_a_truncated_or_empty_image_is_named_before_training(coco_copy, tiny_imagenet_t, tmp_path,
                                                             damage):
    image = coco_copy / 'train' / '000003.jpg'
    image.write_bytes(image.read_bytes()[:600] if damage == 'cut' else b'')
    config = coco_config(tmp_path / 'c.py', coco_copy, tiny_imagenet_t)
    message = _train_fails(config, tmp_path / 'w')
    assert message == (
        f'1 of the 10 images of train_dataloader.dataset cannot be read (empty, cut off or not '
        f'an image), e.g. {image}: replace or remove them, or skip them in training with '
        "dict(type='convnext_backbone.LoadImageFromFile', skip_unreadable=True) as the first "
        'transform of the train pipeline')


@needs_ops
def test_wrong_evaluator_file_and_val_folder_are_named_together_before_training(
        coco_copy, tiny_imagenet_t, tmp_path):
    config = coco_config(tmp_path / 'c.py', coco_copy, tiny_imagenet_t)
    message = _train_fails(config, tmp_path / 'w', **{
        'val_evaluator.ann_file': str(coco_copy / 'annotations' / 'instances_val2017.json'),
        'val_dataloader.dataset.data_prefix.img': 'val2017/'})
    assert message == (
        f'2 problems with the data of the config: image folder not found: {coco_copy}/val2017/ '
        '(val_dataloader.dataset.data_prefix.img); annotation file not found: '
        f'{coco_copy}/annotations/instances_val2017.json (val_evaluator.ann_file)')


@needs_ops
def test_an_evaluator_reading_another_existing_file_is_warned_about(coco_copy, tiny_imagenet_t,
                                                                    tmp_path, caplog):
    from convnext_backbone.engine import preflight
    config = coco_config(tmp_path / 'c.py', coco_copy, tiny_imagenet_t)
    from mmengine.config import Config
    cfg = Config.fromfile(config)
    other = str(coco_copy / 'annotations' / 'train.json')
    MMLogger.get_current_instance().addHandler(caplog.handler)
    with caplog.at_level(logging.WARNING):
        preflight.check_paths([('val_dataloader.dataset', cfg.val_dataloader.dataset),
                               ('val_evaluator', dict(cfg.val_evaluator, ann_file=other))])
    assert (f'val_evaluator.ann_file is {other}, but the dataset of the same split reads '
            f'{coco_copy}/annotations/val.json') in caplog.text


@needs_ops
@pytest.mark.parametrize('listed', [True, False])
def test_labelmes_background_category_is_explained(coco_copy, tiny_imagenet_t, tmp_path, listed):
    """labelme's labelme2coco.py writes '_background_' as category id 0, without annotations."""
    def add_background(data):
        data['categories'].insert(0, dict(id=0, name='_background_', supercategory=None))
    for split in ('train', 'val'):
        _edit_json(coco_copy / 'annotations' / f'{split}.json', add_background)
    classes = ('_background_',) + SHAPES if listed else SHAPES
    config = coco_config(tmp_path / 'c.py', coco_copy, tiny_imagenet_t, classes=repr(classes))
    if not listed:  # what is right passes: the dataloaders build
        runner = _runner(config, tmp_path / 'w')
        runner.build_dataloader(runner._train_dataloader)
        return
    message = _train_fails(config, tmp_path / 'w')
    assert message == (
        "'_background_' is one of the classes of train_dataloader.dataset, but in "
        f'{coco_copy}/annotations/train.json it is category id 0 without any annotation, the '
        "background category that labelme's COCO export writes: leave it out of "
        'metainfo.classes (and of num_classes), mmdet models background themselves')


def test_skip_unreadable_warns_before_training_and_trains_on_other_images(own_seg, tmp_path,
                                                                          caplog):
    pytest.importorskip('mmseg')
    import shutil
    root = tmp_path / 'seg'
    shutil.copytree(own_seg, root)
    broken = root / 'images' / 'train' / '000001.jpg'
    broken.write_bytes(broken.read_bytes()[:500])
    config = tmp_path / 'tiny.py'
    config.write_text(f'DATA_ROOT = {str(root)!r}\n' + MMSEG_CONFIG.replace(
        "dict(type='LoadImageFromFile')",
        "dict(type='convnext_backbone.LoadImageFromFile', skip_unreadable=True)"))
    runner = _runner(str(config), tmp_path / 'w')
    runner.logger.addHandler(caplog.handler)  # mmengine's logger does not propagate
    with caplog.at_level(logging.WARNING):
        loader = runner.build_dataloader(runner._train_dataloader)
        assert '1 of the 4 images of train_dataloader.dataset cannot be read' in caplog.text
        assert 'training skips them (skip_unreadable=True)' in caplog.text
        dataset = loader.dataset
        sample = dataset[1]  # the broken one: mmengine's BaseDataset takes another in its place
    assert sample['data_samples'].img_path != str(broken)
    assert f'skipped unreadable image {broken}' in caplog.text
    # off (the default), the same image fails as mmcv fails
    config.write_text(config.read_text().replace('skip_unreadable=True', 'skip_unreadable=False'))
    runner = _runner(str(config), tmp_path / 'w2')
    with pytest.raises(DatasetError, match='1 of the 4 images of train_dataloader.dataset cannot'):
        runner.build_dataloader(runner._train_dataloader)


# -- tools/infer.py --------------------------------------------------------------------------------
@pytest.mark.parametrize('cuda', [True, False])
def test_infer_device_defaults_to_cuda_where_available(monkeypatch, cuda):
    infer = load_tool('infer')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    args = ['config.py', 'model.pth', 'images/', '--out', 'out']
    assert infer.parse_args(args).device == ('cuda' if cuda else 'cpu')
    assert infer.parse_args(args + ['--device', 'cpu']).device == 'cpu'
