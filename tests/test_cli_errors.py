"""The tools stop on a bad config path, model config, work dir or dataset folder with one line
and no traceback (issue 6), --debug or CONVNEXT_DEBUG=1 shows the traceback; plot_logs names a
work dir without logs."""
import os
import subprocess

import cv2
import numpy as np
import pytest
from helpers import PY, ROOT, load_tool

pytestmark = pytest.mark.core


# -- config paths ----------------------------------------------------------------------------------
@pytest.mark.parametrize('tool, extra', [('train', []), ('test', ['ckpt.pth']),
                                         ('infer', ['ckpt.pth', 'img.jpg', '--out', 'o'])])
def test_missing_config_path_is_one_line_without_traceback(tmp_path, tool, extra):
    if not os.path.isfile(os.path.join(ROOT, 'tools', f'{tool}.py')):
        pytest.skip(f'tools/{tool}.py is not there')
    missing = str(tmp_path / 'no_such_config.py')
    proc = subprocess.run([PY, os.path.join(ROOT, 'tools', f'{tool}.py'), missing] + extra,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    assert f'config file not found: {missing}' in proc.stderr


# -- model configs and work dirs through the tools ------------------------------------------------
def _run_tool(tool, args, cwd, prefix=(), **env):
    return subprocess.run(list(prefix) + [PY, os.path.join(ROOT, 'tools', f'{tool}.py')]
                          + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS='1', **env))


def _tiny_seg_config(tmp_path, arch="dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64))",
                     head='FCNHead'):
    config = tmp_path / 'tiny.py'
    config.write_text(f'DATA_ROOT = {str(tmp_path / "no_data")!r}\n'
                      + MISSING_DATA_CONFIG.replace("arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, "
                                                    "32, 64))", f'arch={arch}')
                      .replace("type='FCNHead'", f'type={head!r}'))
    return config


@pytest.mark.parametrize('tool', ['train', 'test', 'infer'])
def test_bad_backbone_argument_stops_each_tool_in_one_line_before_any_log(tmp_path, tool):
    config = _tiny_seg_config(tmp_path, arch="'tinyy'")
    (tmp_path / 'ckpt.pth').write_bytes(b'')
    cv2.imwrite(str(tmp_path / 'img.jpg'), np.zeros((40, 40, 3), np.uint8))
    extra = {'train': ['--work-dir', tmp_path / 'w'], 'test': [tmp_path / 'ckpt.pth'],
             'infer': [tmp_path / 'ckpt.pth', tmp_path / 'img.jpg', '--out', tmp_path / 'o']}
    proc = _run_tool(tool, [config] + extra[tool], tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert 'Traceback' not in output and 'System environment' not in output, output[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f"{tool}.py: error: model.backbone: unknown ConvNeXt arch 'tinyy'; choose one of tiny, "
        'small, base, large, xlarge, v2-atto, v2-femto, v2-pico, v2-nano, v2-tiny, v2-base, '
        'v2-large, v2-huge or dict(depths=..., dims=...)'], proc.stderr


@pytest.mark.parametrize('switch', [['--debug'], 'CONVNEXT_DEBUG'])
def test_debug_shows_the_full_traceback(tmp_path, switch):
    config = _tiny_seg_config(tmp_path, arch="'tinyy'")
    args, env = ([config] + switch, {}) if isinstance(switch, list) else ([config], {switch: '1'})
    proc = _run_tool('train', args + ['--work-dir', tmp_path / 'w'], tmp_path, **env)
    assert proc.returncode != 0
    assert 'Traceback (most recent call last)' in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "ValueError: unknown ConvNeXt arch 'tinyy'"), proc.stderr[-2000:]


def test_model_error_outside_the_backbone_is_the_last_line(tmp_path):
    pytest.importorskip('mmseg')
    config = _tiny_seg_config(tmp_path, head='FCNHeadd')
    proc = _run_tool('train', [config, '--work-dir', tmp_path / 'w'], tmp_path)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('train.py: error: cannot build the model: FCNHeadd is not in the '
                           'mmseg::model registry'), last


def test_read_only_work_dir_is_one_line(tmp_path):
    """As root, the tool runs without the capabilities that let root write anywhere."""
    import shutil
    prefix = ()
    if os.geteuid() == 0:
        if not shutil.which('setpriv'):
            pytest.skip('root without setpriv: a read-only folder cannot be made')
        prefix = ('setpriv', '--bounding-set=-dac_override,-dac_read_search,-fowner', '--')
    config = _tiny_seg_config(tmp_path)
    work = tmp_path / 'read_only'
    work.mkdir()
    work.chmod(0o555)
    try:
        proc = _run_tool('train', [config, '--work-dir', work], tmp_path, prefix=prefix)
    finally:
        work.chmod(0o755)
    assert proc.returncode != 0
    assert 'Traceback' not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines() == [
        f'train.py: error: cannot write to {work} (Permission denied): choose a writable folder '
        'with --work-dir'], proc.stderr


def test_plot_logs_names_a_work_dir_without_logs(tmp_path):
    with pytest.raises(SystemExit, match=f'error: no \\*/vis_data/scalars.json in {tmp_path}'):
        load_tool('plot_logs').main([str(tmp_path)])
    with pytest.raises(SystemExit, match='error: work dir not found'):
        load_tool('plot_logs').main([str(tmp_path / 'nope')])


MISSING_DATA_CONFIG = '''
default_scope = 'mmseg'
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
    backbone=dict(type='convnext_backbone.ConvNeXt',
                  arch=dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), out_indices=(3,)),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=16, num_convs=1,
                     num_classes=8, loss_decode=dict(type='CrossEntropyLoss')))
train_dataloader = dict(
    batch_size=2, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type='ADE20KDataset', data_root=DATA_ROOT,
                 data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
                 pipeline=[dict(type='LoadImageFromFile')]))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2)
optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.01))
'''


@pytest.mark.needs_full_stack  # not in make test-oldest
def test_train_py_names_a_missing_dataset_folder_before_training(tmp_path):
    config = tmp_path / 'no_data.py'
    missing = tmp_path / 'no_such_data'
    config.write_text(f'DATA_ROOT = {str(missing)!r}\n' + MISSING_DATA_CONFIG)
    proc = subprocess.run([PY, os.path.join(ROOT, 'tools', 'train.py'), str(config),
                           '--work-dir', str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.endswith(f'dataset folder not found: {missing} (train_dataloader.dataset.'
                         'data_root); download the data there or point data_root at it, e.g. '
                         '--cfg-options train_dataloader.dataset.data_root=/path/to/data'), last

