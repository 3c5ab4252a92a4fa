"""tools/train.py, test.py, dist_train.sh, get_flops.py and convert_mmdet2_checkpoint.py, run for
real on a tiny COCO-format dataset that the tests write themselves."""
import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import ROOT, TOOLS, RunsCode
from PIL import Image

MASK_RCNN_T = os.path.join(ROOT, 'configs', 'mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py')
CASCADE_T = os.path.join(
    ROOT, 'configs', 'cascade-mask-rcnn_convnext-t_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py')
UPERNET_T = os.path.join(ROOT, 'configs', 'upernet_convnext-t_8xb2-amp-160k_ade20k-512x512.py')
# Annotated categories (ids 1..80 follow the order of mmdet's 80 COCO class names, which the json
# lists in full so that the 80-class models and the COCO metric apply unchanged).
USED_CATEGORIES = (1, 3)  # person, car
IMAGE_SIZE = 96

needs_ops = pytest.mark.skipif(
    subprocess.run([sys.executable, '-c', 'import mmcv.ops, mmdet'], capture_output=True)
    .returncode != 0, reason='mmcv ops / mmdet not installed')


def write_tiny_coco(root, num_train=4, num_val=2, seed=0):
    """Images with one or two filled rectangles each, and COCO json with polygon masks."""
    from mmdet.datasets import CocoDataset
    categories = [dict(id=i + 1, name=name)
                  for i, name in enumerate(CocoDataset.METAINFO['classes'])]
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.join(root, 'annotations'), exist_ok=True)
    for split, count in (('train', num_train), ('val', num_val)):
        os.makedirs(os.path.join(root, split), exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            img = rng.randint(0, 60, (IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.uint8)
            for _ in range(1 + i % 2):
                w, h = rng.randint(24, 48, size=2)
                x, y = rng.randint(0, IMAGE_SIZE - w), rng.randint(0, IMAGE_SIZE - h)
                cat = USED_CATEGORIES[len(annotations) % 2]
                img[y:y + h, x:x + w] = (200, 40, 40) if cat == 1 else (40, 200, 40)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=i + 1, category_id=cat, iscrowd=0,
                    bbox=[int(x), int(y), int(w), int(h)], area=int(w * h),
                    segmentation=[[int(x), int(y), int(x + w), int(y), int(x + w), int(y + h),
                                   int(x), int(y + h)]]))
            name = f'{i:04d}.png'
            Image.fromarray(img).save(os.path.join(root, split, name))
            images.append(dict(id=i + 1, file_name=name, width=IMAGE_SIZE, height=IMAGE_SIZE))
        with open(os.path.join(root, 'annotations', f'{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def write_config(path, data_root, base=MASK_RCNN_T, max_epochs=1):
    """A config inheriting a shipped one, on the tiny data at a small size, no pretrained
    download, single-worker loaders."""
    text = f'''
_base_ = [{base!r}]
data_root = {data_root + '/'!r}
# score_thr 0: after two iterations no score passes mmdet's 0.05, and the COCO metric needs
# detections to report numbers.
model = dict(backbone=dict(init_cfg=None),
             train_cfg=dict(rcnn=dict(sampler=dict(num=64))),
             test_cfg=dict(rcnn=dict(score_thr=0.0)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=2, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='annotations/train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, ann_file='annotations/val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/val.json')
test_evaluator = val_evaluator
max_epochs = {max_epochs}
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1))
env_cfg = dict(dist_cfg=dict(backend='gloo'))
'''
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


def build_model(config):
    from mmengine.config import Config

    from convnext_backbone.cli import build_model
    return build_model(Config.fromfile(config))


def run(args, timeout=300, **env):
    pythonpath = os.pathsep.join(p for p in (ROOT, os.environ.get('PYTHONPATH')) if p)
    environ = dict(os.environ, OMP_NUM_THREADS='1', PYTHONPATH=pythonpath, **env)
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=environ,
                          cwd=ROOT)


def tool(name, *args, **kwargs):
    return run([sys.executable, os.path.join(TOOLS, name), *map(str, args)], **kwargs)


def check(proc):
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope='module')
def tiny_coco(tmp_path_factory):
    root = tmp_path_factory.mktemp('coco')
    write_tiny_coco(str(root))
    return str(root)


@pytest.fixture(scope='module')
def trained(tiny_coco, tmp_path_factory):
    """One epoch of training (2 iterations) with tools/train.py; returns (config, work_dir)."""
    tmp = tmp_path_factory.mktemp('train')
    config = write_config(tmp / 'tiny_mask_rcnn.py', tiny_coco)
    work_dir = tmp / 'work'
    proc = check(tool('train.py', config, '--work-dir', work_dir))
    return config, work_dir, proc.stdout + proc.stderr


# -- missing inputs --------------------------------------------------------------------------------
@pytest.mark.parametrize('args', [
    ('train.py', 'configs/no-such-config.py'),
    ('test.py', 'configs/no-such-config.py', 'model.pth'),
    ('get_flops.py', 'configs/no-such-config.py'),
])
def test_missing_config_gives_one_line_error(args):
    proc = tool(*args, timeout=120)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert 'config file not found: configs/no-such-config.py' in lines[0]


def test_test_tool_names_a_missing_checkpoint(tmp_path):
    proc = tool('test.py', MASK_RCNN_T, tmp_path / 'missing.pth', timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.strip().splitlines()[-1].endswith(f'checkpoint not found: '
                                                         f'{tmp_path / "missing.pth"}')


# -- train / test ----------------------------------------------------------------------------------
@needs_ops
def test_train_runs_on_cpu_with_fp32_fallback_and_saves_a_checkpoint(trained):
    _, work_dir, log = trained
    assert (work_dir / 'epoch_1.pth').is_file()
    assert 'AmpOptimWrapper needs a GPU' in log           # the T config asks for AMP
    assert re.search(r'Epoch\(train\)\s+\[1\]\[2/2\]', log), log[-2000:]
    assert re.search(r'coco/bbox_mAP: ', log)              # validation ran the COCO metric
    assert "runner_type = 'convnext_backbone.ResumableRunner'" in log  # the config dump


@needs_ops
def test_test_evaluates_draws_and_dumps_predictions(trained, tmp_path):
    config, work_dir, _ = trained
    out = tmp_path / 'preds.pkl'
    show = tmp_path / 'show'
    proc = check(tool('test.py', config, work_dir / 'epoch_1.pth', '--work-dir',
                      tmp_path / 'test', '--out', out, '--show-dir', show))
    # the backbone's inference kernels ran with its weights frozen (their decisions say so)
    assert 'frozen weights' in proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / 'test' / 'test_metrics.json').read_text())
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ('coco/bbox_mAP', 'coco/segm_mAP'))
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 2 and {'pred_instances', 'img_id'} <= set(preds[0])
    assert sorted(os.listdir(show)) == ['0000.png', '0001.png']


@needs_ops
def test_test_rejects_a_checkpoint_that_does_not_fit(trained, tmp_path):
    config, work_dir, _ = trained
    ckpt = torch.load(work_dir / 'epoch_1.pth', map_location='cpu', weights_only=False)
    state = ckpt['state_dict']
    state.pop('roi_head.mask_head.conv_logits.weight')
    torch.save({'state_dict': state}, tmp_path / 'partial.pth')
    proc = tool('test.py', config, tmp_path / 'partial.pth', '--work-dir', tmp_path / 'w')
    assert proc.returncode != 0
    assert 'roi_head.mask_head.conv_logits.weight' in proc.stdout + proc.stderr


@needs_ops
def test_resume_continues_from_the_saved_epoch(trained, tmp_path):
    config, work_dir, _ = trained
    resumed = tmp_path / 'resumed'
    proc = check(tool('train.py', config, '--work-dir', resumed, '--resume',
                      work_dir / 'epoch_1.pth', '--cfg-options', 'train_cfg.max_epochs=2'))
    log = proc.stdout + proc.stderr
    assert (resumed / 'epoch_2.pth').is_file() and not (resumed / 'epoch_1.pth').exists()
    assert re.search(r'Epoch\(train\)\s+\[2\]\[2/2\]', log)
    assert not re.search(r'Epoch\(train\)\s+\[1\]\[', log)


@needs_ops
def test_two_process_cpu_training_with_dist_train_sh(tiny_coco, tmp_path):
    config = write_config(tmp_path / 'tiny_mask_rcnn.py', tiny_coco)
    # 4 training images, 2 processes x 2 images: one iteration per epoch and process.
    proc = run(['bash', os.path.join(TOOLS, 'dist_train.sh'), config, '2', '--work-dir',
                str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_epochs=2',
                'train_cfg.val_interval=2'],
               PYTHON=sys.executable, PORT=str(29500 + os.getpid() % 1000))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'Distributed launcher: pytorch' in log and 'Distributed training: True' in log
    assert re.search(r'Epoch\(train\)\s+\[2\]\[1/1\]', log), log[-2000:]
    assert (tmp_path / 'work' / 'epoch_2.pth').is_file()


# -- a checkpoint of our own run starts the next one ----------------------------------------------
def _own_checkpoint(trained):
    return trained[1] / 'epoch_1.pth'


@needs_ops
def test_own_checkpoint_carries_what_plain_weights_only_loading_refuses(trained):
    from convnext_backbone.checkpoint import read_checkpoint
    path = _own_checkpoint(trained)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, map_location='cpu', weights_only=True)
    ckpt = read_checkpoint(str(path))
    assert {'state_dict', 'optimizer', 'param_schedulers', 'message_hub', 'meta'} <= set(ckpt)


@needs_ops
def test_own_checkpoint_initialises_a_backbone_through_init_cfg(trained):
    from convnext_backbone import ConvNeXt
    from convnext_backbone.checkpoint import read_checkpoint
    path = _own_checkpoint(trained)
    model = ConvNeXt('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                           prefix='backbone.'))
    model.init_weights()
    saved = read_checkpoint(str(path))['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved['backbone.' + key]), key


@needs_ops
def test_own_checkpoint_fine_tunes_a_detector_with_other_classes_through_load_from(trained,
                                                                                    tmp_path):
    """COCO (80 classes) -> own data (3 classes): what differs stays initialised, the rest
    loads."""
    from convnext_backbone import cli
    from convnext_backbone.checkpoint import read_checkpoint
    config, work_dir, _ = trained
    cfg = cli.load_config(config, {'model.roi_head.bbox_head.num_classes': 3,
                                   'model.roi_head.mask_head.num_classes': 3},
                          work_dir=str(tmp_path / 'finetune'))
    cfg.load_from = str(_own_checkpoint(trained))
    runner = cli.build_runner(cfg)
    runner.load_or_resume()
    saved = read_checkpoint(cfg.load_from)['state_dict']
    state = runner.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in saved.items() if k.startswith('backbone.'))
    assert torch.equal(state['neck.fpn_convs.0.conv.weight'], saved['neck.fpn_convs.0.conv.weight'])
    assert state['roi_head.bbox_head.fc_cls.weight'].shape[0] == 4  # 3 classes + background


@needs_ops
def test_own_checkpoint_converts_to_a_backbone_checkpoint(trained, tmp_path):
    out = tmp_path / 'backbone.pth'
    proc = check(tool('convert_checkpoint.py', _own_checkpoint(trained), out))
    assert 'layout: official detection/segmentation' in proc.stdout
    state = torch.load(out, map_location='cpu', weights_only=True)['state_dict']
    assert 'stages.2.8.pwconv2.weight' in state and not any(k.startswith('neck') for k in state)


@needs_ops
def test_own_checkpoint_runs_through_infer(trained, tiny_coco, tmp_path):
    config = trained[0]
    check(tool('infer.py', config, _own_checkpoint(trained), os.path.join(tiny_coco, 'val'),
               '--out', tmp_path / 'out', '--score-thr', 0))
    entries = json.loads((tmp_path / 'out' / 'predictions.json').read_text())
    assert [os.path.basename(e['image']) for e in entries] == ['0000.png', '0001.png']
    assert all(inst['class'] in ('person', 'car') or inst['class']
               for e in entries for inst in e['instances'])


@pytest.fixture(scope='module')
def poisoned(trained, tmp_path_factory):
    """Our own checkpoint with a code-running object in its meta; returns (file, marker)."""
    from convnext_backbone.checkpoint import read_checkpoint
    folder = tmp_path_factory.mktemp('poisoned')
    ckpt = read_checkpoint(str(_own_checkpoint(trained)))
    marker = folder / 'code-ran'
    ckpt['meta']['note'] = RunsCode(marker)
    torch.save(ckpt, folder / 'poisoned.pth')
    return folder / 'poisoned.pth', marker


def test_the_payload_runs_its_code_when_fully_unpickled(tmp_path):
    """The control for the test below: the payload is live."""
    marker = tmp_path / 'code-ran'
    torch.save({'meta': {'note': RunsCode(marker)}}, tmp_path / 'poisoned.pth')
    torch.load(tmp_path / 'poisoned.pth', map_location='cpu', weights_only=False)
    assert marker.exists()


@needs_ops
@pytest.mark.parametrize('entry', ['init_cfg', 'load_from', 'resume', 'convert_checkpoint.py',
                                   'convert_mmdet2_checkpoint.py', 'test.py', 'infer.py'])
def test_checkpoint_with_a_type_outside_the_allowlist_is_refused_without_running_it(
        trained, tiny_coco, poisoned, tmp_path, entry):
    from convnext_backbone import ConvNeXt, cli
    from convnext_backbone.checkpoint import CheckpointError
    config = trained[0]
    path, marker = poisoned
    if entry == 'init_cfg':
        model = ConvNeXt('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path),
                                               prefix='backbone.'))
        with pytest.raises(CheckpointError) as err:
            model.init_weights()
        message = str(err.value)
    elif entry in ('load_from', 'resume'):
        cfg = cli.load_config(config, work_dir=str(tmp_path / 'work'))
        cfg.load_from, cfg.resume = str(path), entry == 'resume'
        with pytest.raises(CheckpointError) as err:
            cli.build_runner(cfg).load_or_resume()
        message = str(err.value)
    else:
        args = {'convert_checkpoint.py': [path, tmp_path / 'out.pth'],
                'convert_mmdet2_checkpoint.py': [config, path, tmp_path / 'out.pth'],
                'test.py': [config, path, '--work-dir', tmp_path / 'work'],
                'infer.py': [config, path, os.path.join(tiny_coco, 'val'), '--out',
                             tmp_path / 'out']}[entry]
        proc = tool(entry, *args)
        assert proc.returncode == 1 and 'Traceback' not in proc.stderr, proc.stderr[-3000:]
        message = proc.stderr.strip().splitlines()[-1]
        assert not (tmp_path / 'out.pth').exists()
    assert '\n' not in message and len(message) < 600, message
    assert f'checkpoint {path} holds an object of type posix.system' in message, message
    assert 'if you trust the file' in message.lower()
    assert not marker.exists()


# -- the same tools on an mmseg config ------------------------------------------------------------
def write_tiny_ade(root, num_train=2, num_val=2, seed=0):
    """ADE20K-layout images and label maps (0 = ignored "other", then classes 1..150)."""
    rng = np.random.RandomState(seed)
    for split, count in (('training', num_train), ('validation', num_val)):
        for sub in ('images', 'annotations'):
            os.makedirs(os.path.join(root, sub, split), exist_ok=True)
        for i in range(count):
            label = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
            label[:IMAGE_SIZE // 2] = 3                         # "sky" on top
            label[IMAGE_SIZE // 2:] = 4                         # "floor" below
            label[20:50, 30:70] = 13                            # a "person"
            img = (rng.randint(0, 40, (IMAGE_SIZE, IMAGE_SIZE, 3)) + label[..., None] * 15)
            Image.fromarray(img.astype(np.uint8)).save(
                os.path.join(root, 'images', split, f'{i:04d}.jpg'))
            Image.fromarray(label).save(os.path.join(root, 'annotations', split, f'{i:04d}.png'))


def write_seg_config(path, data_root):
    """A config inheriting the shipped UperNet T, at 64 px, 2 iterations, small TTA scales."""
    text = f'''
_base_ = [{UPERNET_T!r}]
data_root = {data_root!r}
crop_size = (64, 64)
model = dict(data_preprocessor=dict(size=crop_size), backbone=dict(init_cfg=None),
             test_cfg=dict(mode='whole'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale=(48, 48), keep_ratio=True),
         dict(type='Resize', scale=(64, 64), keep_ratio=True)],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]]),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False,
                      dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=2)
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=2)]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=2))
'''
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


@needs_ops
def test_train_and_tta_test_of_an_mmseg_config(tmp_path):
    if not os.path.isfile(UPERNET_T):
        pytest.skip(f'{UPERNET_T} not written yet')
    write_tiny_ade(str(tmp_path / 'ade'))
    config = write_seg_config(tmp_path / 'tiny_upernet.py', str(tmp_path / 'ade'))
    proc = check(tool('train.py', config, '--work-dir', tmp_path / 'work'))
    log = proc.stdout + proc.stderr
    assert re.search(r'Iter\(train\) \[2/2\]', log), log[-2000:]
    assert (tmp_path / 'work' / 'iter_2.pth').is_file()
    out = tmp_path / 'pred'
    proc = check(tool('test.py', config, tmp_path / 'work' / 'iter_2.pth', '--work-dir',
                      tmp_path / 'test', '--tta', '--out', out))
    # 2 scales x 2 flips, merged by SegTTAModel; label maps written for both images.
    assert "type='SegTTAModel'" in proc.stdout + proc.stderr
    metrics = json.loads((tmp_path / 'test' / 'test_metrics.json').read_text())
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert sorted(os.listdir(out)) == ['0000.png', '0001.png']


# -- get_flops -------------------------------------------------------------------------------------
@needs_ops
@pytest.mark.parametrize('config, params_m', [(MASK_RCNN_T, 48.0), (UPERNET_T, 60.0)])
def test_get_flops_prints_params_and_flops(config, params_m):
    if not os.path.isfile(config):
        pytest.skip(f'{config} not written yet')
    proc = check(tool('get_flops.py', config, '--shape', 64, 64))
    params = re.search(r'^Params: (\d+\.\d+)M$', proc.stdout, re.M)
    flops = re.search(r'^FLOPs: (\d+\.\d+)G$', proc.stdout, re.M)
    assert params and flops, proc.stdout
    assert abs(float(params.group(1)) - params_m) / params_m < 0.03  # Table 3 / Table 4
    assert float(flops.group(1)) > 0
    assert 'Input: 1x3x64x64' in proc.stdout


@needs_ops
def test_flops_forward_runs_box_heads_on_all_and_mask_heads_on_first_proposals():
    from get_flops import TwoStageDummy
    from mmengine.config import Config
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope('mmdet')
    cfg = Config.fromfile(CASCADE_T)
    cfg.model.backbone.init_cfg = None
    detector = revert_sync_batchnorm(MODELS.build(cfg.model)).eval()
    dummy = TwoStageDummy(detector, (64, 64), num_proposals=12, num_mask_rois=5)
    seen = []
    for kind in ('bbox_head', 'mask_head'):
        for head in getattr(detector.roi_head, kind):
            head.register_forward_hook(lambda m, i, o, kind=kind: seen.append((kind, len(i[0]))))
    with torch.no_grad():
        outs = dummy(torch.randn(1, 3, 64, 64))
    assert seen == [('bbox_head', 12)] * 3 + [('mask_head', 5)] * 3
    assert all(isinstance(t, torch.Tensor) for t in outs)


# -- converting mmdet 2.x era checkpoints ----------------------------------------------------------
def _mmdet2_checkpoint(state, mmpretrain_backbone=False, palette=None):
    """What an mmdet 2.x / mmseg 0.x run saved: our keys are the 2.x keys (heads and official
    backbone), an mmpretrain backbone renames its blocks; plus meta, optimizer and apex amp
    states."""
    out = {}
    for key, value in state.items():
        if mmpretrain_backbone and key.startswith('backbone.stages.'):
            key = key.replace('.dwconv.', '.depthwise_conv.').replace('.pwconv', '.pointwise_conv')
        out[key] = value.clone()
    meta = {'mmdet_version': '2.11.0', 'CLASSES': ('person', 'car'), 'epoch': 36,
            'config': 'model = dict(...)', 'hook_msgs': {'last_ckpt': 'epoch_36.pth'}}
    if palette is not None:
        meta['PALETTE'] = palette
    return {'state_dict': out, 'meta': meta,
            'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-6, 'params': [0]}]},
            'amp': {'loss_scaler0': {'loss_scale': 512.0, 'unskipped': 10}}}


@needs_ops
@pytest.mark.parametrize('config, mmpretrain_backbone', [
    (MASK_RCNN_T, False),   # official Mask R-CNN release
    (CASCADE_T, False),     # official Cascade release: 4conv1fc heads with SyncBN statistics
    (MASK_RCNN_T, True),    # OpenMMLab model zoo: mmpretrain backbone keys
    (UPERNET_T, False),     # official mmseg 0.x UperNet release: UPerHead + auxiliary FCNHead
])
def test_mmdet2_checkpoint_converts_and_loads_strictly(config, mmpretrain_backbone, tmp_path):
    if not os.path.isfile(config):
        pytest.skip(f'{config} not written yet')
    from convert_mmdet2_checkpoint import main
    model = build_model(config)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    src = tmp_path / 'mmdet2.pth'
    palette = [(120, 120, 120), (180, 120, 120)] if config == UPERNET_T else None
    torch.save(_mmdet2_checkpoint(state, mmpretrain_backbone, palette), src)
    assert main([config, str(src), str(tmp_path / 'out.pth')]) == 0
    out = torch.load(tmp_path / 'out.pth', map_location='cpu', weights_only=True)
    assert set(out) == {'state_dict', 'meta'}  # optimizer and apex states dropped
    expected_meta = {'classes': ('person', 'car')}
    if palette:
        expected_meta['palette'] = [list(c) for c in palette]
    assert out['meta']['dataset_meta'] == expected_meta
    converted = out['state_dict']
    assert set(converted) == set(state)
    assert all(torch.equal(converted[k], v) for k, v in state.items())
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
    model.load_state_dict(converted, strict=True)
    assert torch.equal(model.backbone.stages[2][4].pwconv1.weight,
                       state['backbone.stages.2.4.pwconv1.weight'])


@needs_ops
def test_mmdet2_checkpoint_of_another_architecture_is_refused(tmp_path):
    from convert_mmdet2_checkpoint import main
    state = build_model(MASK_RCNN_T).state_dict()
    src = tmp_path / 'mask_rcnn.pth'
    torch.save(_mmdet2_checkpoint(state), src)
    # A Mask R-CNN file does not fit Cascade Mask R-CNN: nothing may be written.
    assert main([CASCADE_T, str(src), str(tmp_path / 'out.pth')]) == 1
    assert not (tmp_path / 'out.pth').exists()
