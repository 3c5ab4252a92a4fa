"""tools/benchmark.py runs its device-agnostic paths (what ``--device cuda`` runs) on the CPU:
backbone inference with the GEMM floors, channels-last, training, whole models with bf16 rows
and mmdet's Swin-T beside ours; the CPU inference engines beside ours (``--engines``) and a busy
machine (``--busy``)."""
import importlib.util
import os
import re
import subprocess
import sys
import time

import pytest
from helpers import ROOT, SMALL

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


def test_head_times_every_head_kernel_per_stage_and_sums_one_forward():
    from convnext_backbone import native
    out = _benchmark('--head', '--arch', 'atto', '--shape', '64', '64', '--dtypes', 'fp32')
    kernels = ['plain', 'native'] if native.available() else ['plain']
    for kernel in kernels:
        rows = [re.search(rf'^\| fp32 \| {i} \| \(1, {64 // 2 ** (i + 2)}, {64 // 2 ** (i + 2)}, '
                          rf'{dim}\) \| {kernel} \| ([\d.]+) \|', out, re.M)
                for i, dim in enumerate((40, 80, 160, 320))]
        assert all(rows), out
        total = re.search(rf'^\| fp32 \| all \| 12 blocks \| {kernel} \| ([\d.]+) \|', out, re.M)
        assert total, out
        # atto's depths (2, 2, 6, 2): one forward's heads, from the printed (rounded) medians
        want = sum(float(r.group(1)) * d for r, d in zip(rows, (2, 2, 6, 2)))
        assert abs(float(total.group(1)) - want) <= 0.05 + 0.005 * 12, out


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


# -- --engines: the CPU inference engines on our ONNX export ------------------------------------
needs_onnxruntime = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ('onnxruntime', 'onnx', 'onnxscript')),
    reason='onnxruntime / onnx / onnxscript not installed (the deploy extra)')


def _row(out, precision, model):
    """The cells of a table row of the backbone inference table."""
    match = re.search(rf'^\| {precision} \| {model} \|(.*)\|$', out, re.M)
    assert match, out
    return [cell.strip() for cell in match.group(1).split('|')]


@needs_onnxruntime
def test_engines_time_onnxruntime_and_openvino_on_our_export_with_small_errors():
    from convnext_backbone import machine
    openvino = importlib.util.find_spec('openvino') is not None
    engines = ['onnxruntime'] + (['openvino'] if openvino else [])
    dtypes = ['fp32', 'bf16'] if machine.native_bf16() and openvino else ['fp32']
    out = _benchmark('--arch', 'atto', '--shape', '64', '64', '--dtypes', *dtypes,
                     '--engines', *engines)
    # median, best, images/s, rel. err, ratio: the error is against our plain fp32 output
    assert float(_row(out, 'fp32', 'ONNX Runtime')[3]) < 1e-4
    assert re.search(r'^fp32: ours is \d+\.\d\dx ONNX Runtime \(its median time / ours', out,
                     re.M), out
    assert '| bf16 | ONNX Runtime |' not in out  # fp32 only on the CPU
    if openvino:
        assert float(_row(out, 'fp32', 'OpenVINO')[3]) < 1e-4
        assert re.search(r"^# OpenVINO .*its default chose \w+ here", out, re.M), out
    if 'bf16' in dtypes:  # OpenVINO's default is bf16 where the CPU has it: the bf16 row
        assert float(_row(out, 'bf16', 'OpenVINO')[3]) < 3e-2
        assert re.search(r'^bf16: ours is \d+\.\d\dx OpenVINO \(', out, re.M), out


@needs_ops
@needs_onnxruntime
def test_deploy_times_pytorch_onnxruntime_and_openvino_per_image_with_the_same_labels():
    from convnext_backbone import machine
    from convnext_backbone.deploy.session import DeployError, check_runtime

    def openvino_runs(precision):
        try:
            check_runtime('openvino', precision)
        except DeployError:
            return False
        return True

    openvino = openvino_runs('f32')
    dtypes = ['fp32', 'bf16'] if machine.native_bf16() else ['fp32']
    out = _benchmark('--deploy', 'seg', '--shape', '64', '96', '--dtypes', *dtypes, timeout=600)
    assert 'Deployed end to end, one image (EncoderDecoder test_step), upernet_convnext-t' in out
    rows = ['PyTorch fp32', 'ONNX Runtime fp32'] + (['OpenVINO f32'] if openvino else [])
    for row in rows:  # median, best, speed-up, open s, prediction
        cells = [c.strip() for c in re.search(rf'^\| {row} \|(.*)\|$', out, re.M).group(1)
                 .split('|')]
        assert float(cells[0]) > 0 and cells[4] == "100.0 % of fp32 PyTorch's pixels", cells
    if 'bf16' in dtypes:
        assert '| PyTorch bf16 |' in out
        assert ('| OpenVINO bf16 |' in out) == openvino_runs('bf16')


def test_an_engine_that_is_not_installed_is_left_out_in_one_line(monkeypatch, capsys):
    import argparse

    import torch

    from bench import engines
    from convnext_backbone import ConvNeXt
    for module in engines.ENGINES:  # None in sys.modules: importing it raises ImportError
        monkeypatch.setitem(sys.modules, module, None)
    args = argparse.Namespace(engines=[], shape=[64, 64], threads=1, dtypes=['fp32'])
    ours = ConvNeXt(arch=SMALL).eval()
    assert engines.engine_peers(args, ours, torch.zeros(1, 3, 64, 64)) == {}
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3, lines  # one each, no export attempted, no traceback
    for line, (module, name) in zip(lines, engines.ENGINES.items()):
        assert re.match(rf'# {name} left out: (ModuleNotFound|Import)Error: ', line), line
        assert f'pip install {module}' in line or f'pip install "{module}==' in line, line


# -- --busy N: a busy machine -------------------------------------------------------------------
def _running(pid):
    """Whether process ``pid`` runs (a zombie, ended but not reaped, does not)."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            return stat.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


needs_proc = pytest.mark.skipif(not os.path.isdir('/proc/self'), reason='needs Linux /proc')


@needs_proc
def test_busy_processes_run_in_the_block_and_are_stopped_however_it_ends():
    from bench.busy import busy_processes
    with busy_processes(2) as procs:
        assert len(procs) == 2 and all(_running(p.pid) for p in procs)
    assert all(p.returncode is not None and not _running(p.pid) for p in procs)
    with pytest.raises(KeyboardInterrupt), busy_processes(1) as procs:
        raise KeyboardInterrupt
    assert procs[0].returncode is not None and not _running(procs[0].pid)


@needs_proc
def test_a_busy_process_ends_on_its_own_when_the_benchmark_is_killed():
    # the context manager is kept: collecting it would close it (and stop the process)
    code = ('import os, time; from bench.busy import busy_processes; '
            'context = busy_processes(1); procs = context.__enter__(); '
            'print(procs[0].pid, flush=True); time.sleep(1); os._exit(0)')  # as if killed
    # stderr not captured: a pipe the busy process inherits would be read until it ends
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'tools'))
    run = subprocess.run([sys.executable, '-c', code], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, timeout=60)
    pid = int(run.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(pid)


@needs_proc
def test_busy_1_runs_one_process_beside_the_rows_and_stops_it():
    out = _benchmark('--busy', '1', '--arch', 'atto', '--shape', '64', '64', '--dtypes', 'fp32')
    header = re.search(r'^# busy machine: 1 busy process .* pid (\d+)$', out, re.M)
    assert header, out
    assert re.search(r'^### Backbone inference, .*, beside 1 busy process$', out, re.M), out
    assert not _running(int(header.group(1)))


def test_an_earlier_checkouts_worker_computes_ours_and_goes_with_its_folder():
    """--before runs a checkout in a worker fed through a folder of weights (hundreds of MB for
    a large arch): both must go when the benchmark is done with it (they were left behind)."""
    import gc

    import torch

    from bench.earlier import EarlierCheckout
    from convnext_backbone import ConvNeXt
    ours = ConvNeXt('v2-atto').eval()
    x = torch.randn(1, 3, 64, 64)
    before = EarlierCheckout(ROOT, 'v2-atto', ours.state_dict(), x)
    before('fp32')
    with torch.no_grad():
        for got, ref in zip(before.result('fp32'), ours(x)):
            assert (got - ref).norm() / ref.norm() < 1e-5
    folder, proc = before._dir, before._proc
    assert os.path.isdir(folder) and proc.poll() is None
    del before
    gc.collect()
    assert not os.path.exists(folder)
    assert proc.poll() is not None                 # the worker ended
