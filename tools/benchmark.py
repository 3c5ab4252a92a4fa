"""Time the ConvNeXt backbone (and a detector or segmentor built from a config) on the CPU.

Usage::

    # backbone inference, fp32 and bf16 autocast, with the fast paths and with the plain ops
    python tools/benchmark.py [--arch tiny] [--shape 800 1216] [--batch 1] [--threads 2]
    # the same, beside timm's and mmpretrain's ConvNeXt on the same weights and input
    python tools/benchmark.py --compare
    # beside the CPU inference engines: ONNX Runtime and OpenVINO on our ONNX export, zentorch
    python tools/benchmark.py --engines [onnxruntime openvino zentorch]
    # any mode on a busy machine: N single-threaded busy processes run beside every row
    python tools/benchmark.py --engines --busy 1
    # training step (forward + backward of the four outputs) and with_cp peak memory
    python tools/benchmark.py --compare --train --train-shape 512 512 --train-batch 2 --memory
    # end-to-end inference of a detector / segmentor config (random weights)
    python tools/benchmark.py --config configs/mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py
    # deployed: Mask R-CNN-T / UperNet-T in PyTorch beside our ONNX export in ONNX Runtime and
    # OpenVINO (f32, bf16), per image through the same test step (bench/deploy.py)
    python tools/benchmark.py --deploy det seg
    # check that torch.compile (inductor) works on the backbone and time it
    python tools/benchmark.py --compile --shape 512 512

How it measures:

- Every candidate runs once per round, candidates interleaved (each round starting one candidate
  later, so each runs in every position alike), for ``--warmup`` rounds that are
  thrown away and ``--repeat`` timed rounds; the table shows the median wall time of each, the
  best one (the least disturbed by other processes) and images/s from the median. Interleaving
  spreads the noise of a shared machine over all candidates alike.
- ``--compare`` builds timm's ConvNeXt (its ``stem`` and ``stages`` plus a timm ``LayerNorm2d`` on
  each stage output, the norms our backbone and the official detection code have) and mmpretrain's
  (``out_indices=(0, 1, 2, 3)``, ``gap_before_final_norm=False``: the same norms) when they are
  installed, gives them our weights (randomised layer scales, so every block counts) through the
  layout converter of ``convnext_backbone.checkpoint``, runs the same input and prints each one's
  relative error against our plain fp32 output (``||a - b|| / ||b||``, worst of the four maps) and
  the time ratios. The training step compares parameter gradients the same way.
- ``--engines`` exports our backbone once (the package's ONNX export, same weights) and times
  ONNX Runtime (fp32, its default on the CPU) and OpenVINO (f32, and its default precision:
  bf16 on a CPU with native bf16) on the file, and zentorch (AMD's ``torch.compile`` backend)
  on the module, on the same input in the same rounds, with their relative errors and time
  ratios; an engine that is not installed is left out with one line saying how to install it
  (:mod:`bench.engines`).
- ``--busy N`` runs N busy processes (a pure-Python loop each) from before the first row is
  built until the last is timed, and stops them however the run ends (:mod:`bench.busy`).
- Peak memory (``--memory``): the most bytes of tensors alive at once during one training step,
  on top of what existed before it (weights, input), from the CPU allocator's allocation and free
  events recorded by ``torch.profiler`` (``profile_memory=True``): every event's own bytes
  (allocations minus frees), summed in time order. Gradients of the weights are included.

The modes live in ``tools/bench/`` (one module each, :mod:`bench`); this file reads the options
and runs the mode they ask for.

Note:
    timm and mmpretrain are optional, not dependencies. Both import torchvision, whose PyPI wheels
    do not load beside this project's CPU build of torch, so ``--compare`` runs in a separate
    environment (see the README performance section); everything else runs in the project's own.
"""
import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence

# first: it sets how OpenMP threads wait before torch loads (convnext_backbone/openmp.py)
import convnext_backbone  # noqa: F401

# isort: split
import torch

from bench import common
from bench.busy import busy_processes, describe
from bench.compiled import bench_compile
from bench.config import bench_config
from bench.deploy import DEPLOY, bench_deploy
from bench.e2e import E2E, bench_e2e
from bench.engines import ENGINES
from bench.head import bench_head
from bench.inference import bench_inference
from bench.mlp import bench_mlp
from bench.peers import TIMM_NAMES
from bench.training import bench_training
from convnext_backbone import allocator, machine, openmp, tuning
from convnext_backbone.ops import mkldnn_linear_available


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The options, checked, with the defaults that depend on the machine filled in.

    Args:
        argv (Sequence[str], optional): The arguments. Defaults to None (``sys.argv[1:]``).

    Returns:
        argparse.Namespace: The options.
    """
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--arch', default='tiny', help="backbone arch (default 'tiny')")
    parser.add_argument('--shape', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='inference input size (default 800 1216; a config: 800 1216 for '
                             'mmdet, 512 512 for mmseg)')
    parser.add_argument('--batch', type=int, default=1, help='inference batch (default 1)')
    parser.add_argument('--dtypes', nargs='+', choices=('fp32', 'bf16', 'fp16'), default=None,
                        help='precisions to time (bf16 / fp16 = autocast; default: fp32, and bf16 '
                             'where the CPU computes bf16 natively; on CUDA fp32, fp16 and bf16 '
                             'where supported)')
    parser.add_argument('--device', default='cpu',
                        help="'cpu' (default) or a CUDA device ('cuda', 'cuda:1')")
    parser.add_argument('--channels-last', action='store_true',
                        help='backbone input and weights in channels-last memory format')
    parser.add_argument('--threads', type=int, default=2, help='torch threads (default 2)')
    parser.add_argument('--warmup', type=int, default=2, help='untimed rounds (default 2)')
    parser.add_argument('--repeat', type=int, default=7, help='timed rounds (default 7)')
    parser.add_argument('--compare', action='store_true',
                        help="also time timm's and mmpretrain's ConvNeXt (when installed)")
    parser.add_argument('--engines', nargs='*', choices=tuple(ENGINES), default=None,
                        metavar='ENGINE',
                        help='also time the CPU inference engines (when installed) on our ONNX '
                             f'export / module: {", ".join(ENGINES)} (default: all of them)')
    parser.add_argument('--busy', type=int, default=0, metavar='N',
                        help='run N busy processes (single-threaded Python loops) beside the '
                             'whole run (default 0)')
    parser.add_argument('--no-inference', action='store_true', help='skip backbone inference')
    parser.add_argument('--train', action='store_true', help='time a training step')
    parser.add_argument('--train-shape', type=int, nargs=2, metavar=('H', 'W'),
                        default=[512, 512], help='training input size (default 512 512)')
    parser.add_argument('--train-batch', type=int, default=2, help='training batch (default 2)')
    parser.add_argument('--memory', action='store_true',
                        help='with --train: peak memory with and without with_cp')
    parser.add_argument('--mlp', action='store_true',
                        help='time the block MLP candidates (plain, oneDNN, blocked) per stage')
    parser.add_argument('--head', action='store_true',
                        help='time the block head kernels (dwconv 7x7 -> LayerNorm: plain, ours) '
                             'per stage and precision')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile (inductor) the backbone: check and time it')
    parser.add_argument('--config', help='a detector/segmentor config: time its test_step')
    parser.add_argument('--before', metavar='CHECKOUT',
                        help='also time the backbone of an earlier checkout of this repository '
                             '(e.g. made by git worktree add), in a worker process, same rounds')
    parser.add_argument('--save-fast-paths', metavar='FILE',
                        help='write the fast-path decisions of this run to FILE, to pin them '
                             'later with CONVNEXT_FAST_PATHS=FILE')
    parser.add_argument('--e2e', nargs='+', choices=tuple(E2E), default=None,
                        help="whole models: our UperNet-T (seg) / Mask R-CNN-T (det) config beside "
                             "mmseg's / mmdet's own ConvNeXt-T config, same weights (+ --train)")
    parser.add_argument('--deploy', nargs='+', choices=tuple(DEPLOY), default=None,
                        help='deployed Mask R-CNN-T (det) / UperNet-T (seg): PyTorch beside '
                             'ONNX Runtime and OpenVINO on our ONNX export, per image')
    args = parser.parse_args(argv)
    if args.arch not in TIMM_NAMES and args.compare:
        parser.error(f'--compare supports the V1 archs {sorted(TIMM_NAMES)}, got {args.arch!r}')
    cuda = args.device.startswith('cuda')
    if cuda and not torch.cuda.is_available():
        parser.error(f'--device {args.device}: CUDA is not available here')
    if not cuda and args.device != 'cpu':
        parser.error(f"--device {args.device}: use 'cpu' or 'cuda[:N]'")
    if cuda and args.before:
        parser.error('--before runs the earlier checkout on the CPU only')
    if cuda and args.engines is not None:
        parser.error('--engines times CPU engines: use --device cpu')
    if args.engines is not None and (args.e2e or args.config or args.mlp or args.head
                                     or args.compile or args.no_inference):
        parser.error('--engines is timed in the backbone inference mode: leave out --e2e, '
                     '--config, --mlp, --head, --compile and --no-inference')
    if args.busy < 0:
        parser.error(f'--busy {args.busy}: give a number of processes >= 0')
    if args.dtypes is None and cuda:
        args.dtypes = ['fp32', 'fp16'] + (['bf16'] if torch.cuda.is_bf16_supported() else [])
    elif args.dtypes is None:
        args.dtypes = ['fp32', 'bf16'] if machine.native_bf16() else ['fp32']
    if not cuda and 'fp16' in args.dtypes:
        parser.error('--dtypes fp16: CPU autocast computes in bf16 only; use bf16')
    if args.shape is None and not (args.e2e or args.deploy):
        scope_is_seg = bool(args.config) and 'upernet' in osp.basename(args.config)
        args.shape = [512, 512] if scope_is_seg else [800, 1216]
    return args


def run_mode(args: argparse.Namespace) -> bool:
    """Run the mode the options ask for.

    Args:
        args (argparse.Namespace): The options.

    Returns:
        bool: False when an output or gradient disagrees beyond its tolerance.
    """
    if args.e2e:
        return bench_e2e(args)
    if args.deploy:
        return bench_deploy(args)
    if args.config:
        return bench_config(args)
    if args.mlp:
        return bench_mlp(args)
    if args.head:
        return bench_head(args)
    if args.compile:
        return bench_compile(args)
    ok = True
    if not args.no_inference:
        ok = bench_inference(args)
    if args.train:
        ok = bench_training(args) and ok
    return ok


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the mode the options ask for.

    Args:
        argv (Sequence[str], optional): The arguments. Defaults to None (``sys.argv[1:]``).

    Returns:
        int: 0, or 1 when an output or gradient disagrees beyond its tolerance.
    """
    args = parse_args(argv)
    common.set_device(args.device)
    torch.set_num_threads(args.threads)
    print(f'# {machine.describe()}')
    print(f'# {openmp.describe()}')
    print(f'# {allocator.describe()}')
    print(f'# torch {torch.__version__}, {torch.get_num_threads()} threads, oneDNN fused Linear: '
          f'fp32 {mkldnn_linear_available(torch.float32)}, '
          f'bf16 {mkldnn_linear_available(torch.bfloat16)}, fast paths: {tuning.policy()}, '
          f'THP_MEM_ALLOC_ENABLE={os.environ.get("THP_MEM_ALLOC_ENABLE", "unset")}, load average '
          f'at start: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    if 'bf16' in args.dtypes and not machine.native_bf16():
        print('# bf16 was asked for on a CPU without native bf16: expect it to be ~'
              f'{machine.BF16_SLOWDOWN_WITHOUT_NATIVE}x slower than fp32')
    with busy_processes(args.busy) as busy:
        if busy:
            print(describe(busy))
        ok = run_mode(args)
    if args.save_fast_paths:
        count = tuning.save(args.save_fast_paths)
        print(f'\n{count} fast-path decisions written to {args.save_fast_paths} (pin them with '
              f'CONVNEXT_FAST_PATHS={args.save_fast_paths})')
    if not ok:
        print('\nFAILED: an output or gradient disagrees beyond the tolerance (see the tables)')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
