"""tools/benchmark.py runs its device-agnostic paths (what ``--device cuda`` runs) on the CPU:
backbone inference with the GEMM floors, channels-last, training, whole models with bf16 rows
and mmdet's Swin-T beside ours."""
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

BENCHMARK = os.path.join(ROOT, 'tools', 'benchmark.py')

needs_ops = pytest.mark.skipif(
    subprocess.run([sys.executable, '-c', 'import mmcv.ops, mmdet'], capture_output=True)
    .returncode != 0, reason='mmcv ops / mmdet not installed')


def _benchmark(*args, timeout=300):
    run = subprocess.run([sys.executable, BENCHMARK, '--warmup', '0', '--repeat', '1', *args],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run.stdout


def test_backbone_rows_floors_and_training_run_channels_last_on_the_cpu_device():
    out = _benchmark('--device', 'cpu', '--channels-last', '--dtypes', 'fp32', '--shape', '64',
                     '64', '--train', '--train-shape', '64', '64', '--train-batch', '1')
    assert '64x64 channels-last, cpu' in out
    # the floor names the faster of torch.mm and oneDNN
    assert 'fp32 GEMM-rate floor' in out and 'torch.mm' in out
    assert 'Training step (fp32, forward + backward)' in out


def test_fp16_on_the_cpu_and_an_unknown_device_are_refused_in_one_line():
    for args, message in ((['--dtypes', 'fp16'], 'CPU autocast computes in bf16 only'),
                          (['--device', 'tpu'], "use 'cpu' or 'cuda[:N]'")):
        run = subprocess.run([sys.executable, BENCHMARK, *args], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 2 and message in run.stderr


@needs_ops
def test_e2e_times_swin_t_beside_ours_and_a_bf16_row_where_native():
    from convnext_backbone import machine
    dtypes = ['fp32', 'bf16'] if machine.native_bf16() else ['fp32']
    out = _benchmark('--e2e', 'det', '--shape', '96', '96', '--dtypes', *dtypes, timeout=600)
    assert '| mmdet Swin-T |' in out
    assert re.search(r'^det: ours prepared \(ConvNeXt-T\) is \d+\.\d\dx mmdet Swin-T in fp32, '
                     r'\d+\.\d\dx in backbone \+ neck', out, re.M), out
    if 'bf16' in dtypes:
        assert '| ours prepared bf16 |' in out
        assert re.search(r'^det: ours prepared under bf16 autocast is \d+\.\d\dx its fp32 test '
                         'step', out, re.M), out
