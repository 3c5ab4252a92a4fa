"""The CPU inference engines timed beside ours (``--engines``): ONNX Runtime and OpenVINO on our
ONNX export of the same backbone (same weights, same input), and zentorch, AMD's
``torch.compile`` backend, on the backbone module itself.

- The backbone is exported once per run (:func:`export_backbone`: the package's
  :class:`~convnext_backbone.deploy.BackboneGraph` and
  :func:`~convnext_backbone.deploy.export_onnx`, torch.onnx's dynamo exporter) into a temporary
  folder, which is removed once the engines have read it.
- ONNX Runtime: the package's CPU session (:class:`~convnext_backbone.deploy.session.OnnxGraph`,
  ``intra_op_num_threads`` = ``--threads``, one inter-op thread, all graph optimisations). Its
  CPU execution provider computes a float32 graph in float32: fp32 is its default (and only)
  precision there, so it has an fp32 row only.
- OpenVINO: ``core.compile_model(model, 'CPU', config)`` with ``INFERENCE_NUM_THREADS`` =
  ``--threads`` and ``PERFORMANCE_HINT='LATENCY'``, once with ``INFERENCE_PRECISION_HINT='f32'``
  (the fp32 row) and once with its default, which is bf16 on a CPU with native bf16 (the bf16
  row, beside ours under bf16 autocast); a ``#`` line says what the default chose.
- zentorch: ``torch.compile(backend='zentorch')`` of a copy of our backbone, a module like ours:
  timed in every precision of the run (bf16 under autocast), compiled before the timed rounds.

Every engine is optional: one that cannot be used is left out with one ``#`` line naming what
is missing and how to install it.
"""
import argparse
import copy
import importlib
import os.path as osp
import tempfile
from types import ModuleType
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import nn

from .common import autocast

#: The engines of ``--engines``, in table order, with the row name each gets.
ENGINES = {'onnxruntime': 'ONNX Runtime', 'openvino': 'OpenVINO', 'zentorch': 'zentorch'}
#: How to install each engine (zentorch's wheels are built for one torch minor version each).
INSTALL = {'onnxruntime': 'pip install onnxruntime', 'openvino': 'pip install openvino',
           'zentorch': f'pip install "zentorch=={".".join(torch.__version__.split(".")[:2])}.*" '
                       '(its version follows the torch it was built for)'}
#: OpenVINO's element type names -> the benchmark's precision names.
OV_PRECISIONS = {'f32': 'fp32', 'bf16': 'bf16', 'f16': 'fp16'}


class EnginePeer:
    """One engine's compiled backbone, per precision: timed by calling it with a precision,
    checked through :meth:`result` (the interface of :class:`~.earlier.EarlierCheckout`).

    Args:
        runs (dict): Precision ('fp32', 'bf16') -> a function that runs the backbone once on
            the benchmark's input and returns the four maps (in any array type
            ``torch.as_tensor`` takes).
    """

    def __init__(self, runs: Dict[str, Callable[[], Sequence[Any]]]) -> None:
        self._runs = runs
        #: The precisions it is timed in.
        self.precisions = tuple(runs)

    def __call__(self, dtype: str) -> None:
        """One run in precision ``dtype``."""
        self._runs[dtype]()

    def result(self, dtype: str) -> List[torch.Tensor]:
        """One run's four maps in precision ``dtype``, copied into tensors."""
        return [torch.as_tensor(out).clone() for out in self._runs[dtype]()]


def missing(engine: str, err: BaseException) -> None:
    """Print the one line of an engine left out: what failed and, for a missing module, how to
    install it.

    Args:
        engine (str): A key of :data:`ENGINES`.
        err (BaseException): Why.
    """
    lines = str(err).strip().splitlines() or ['']
    why = f'install: {INSTALL[engine]}' if isinstance(err, ImportError) else 'it failed here'
    print(f'# {ENGINES[engine]} left out: {type(err).__name__}: {lines[0]} ({why})')


def import_engine(engine: str) -> Optional[ModuleType]:
    """Import an engine's module, or print the one line of an engine left out.

    Args:
        engine (str): A key of :data:`ENGINES` (its module's name).

    Returns:
        ModuleType | None: The module, or None.
    """
    try:
        return importlib.import_module(engine)
    except ImportError as err:
        missing(engine, err)
        return None


def export_backbone(ours: nn.Module, shape: Sequence[int], folder: str) -> str:
    """Export our backbone to ``folder/backbone.onnx`` with the package's export.

    The export graph (:class:`~convnext_backbone.deploy.BackboneGraph`) normalises the image as
    a model's data preprocessor would; here it gets one that neither flips the channels nor
    normalises (mmengine's ``ImgDataPreprocessor(bgr_to_rgb=True)`` without mean and std), so
    the file maps the benchmark's input to the backbone's four maps as ``ours(x)`` does.

    Args:
        ours (nn.Module): Our backbone.
        shape (Sequence[int]): The input's (H, W), traced (the graph runs at any size).
        folder (str): Where to write.

    Returns:
        str: The file.

    Raises:
        ImportError: onnx, onnxscript or mmengine is missing.
        ValueError: The export refuses (one line: e.g. a side under 64).
    """
    from mmengine.model import ImgDataPreprocessor

    from convnext_backbone.deploy import BackboneGraph, export_onnx
    holder = nn.Module()
    holder.backbone = ours
    holder.data_preprocessor = ImgDataPreprocessor(bgr_to_rgb=True)
    path = osp.join(folder, 'backbone.onnx')
    export_onnx(BackboneGraph(holder), path, shape)
    return path


def build_onnxruntime(onnxruntime: ModuleType, path: str, x: torch.Tensor,
                      threads: int) -> EnginePeer:
    """ONNX Runtime's CPU session of ``path``, in fp32.

    Args:
        onnxruntime (ModuleType): The module (:func:`import_engine`).
        path (str): The exported file.
        x (torch.Tensor): The input, contiguous NCHW float32.
        threads (int): ``intra_op_num_threads``.

    Returns:
        EnginePeer: Its fp32 run.
    """
    from convnext_backbone.deploy.session import OnnxGraph
    graph = OnnxGraph(path, threads=threads)
    print(f'# ONNX Runtime {onnxruntime.__version__}: CPU execution provider, '
          f'intra_op_num_threads={threads}, fp32 (its default and only precision for a float32 '
          'graph on the CPU)')
    return EnginePeer({'fp32': lambda: list(graph(x).values())})


def build_openvino(openvino: ModuleType, path: str, x: torch.Tensor, threads: int,
                   dtypes: Sequence[str]) -> Optional[EnginePeer]:
    """OpenVINO's CPU compilation of ``path`` in f32 and in its default precision, or None when
    its CPU plugin fails.

    Args:
        openvino (ModuleType): The module (:func:`import_engine`).
        path (str): The exported file.
        x (torch.Tensor): The input, contiguous NCHW float32.
        threads (int): ``INFERENCE_NUM_THREADS``.
        dtypes (Sequence[str]): The precisions of the run: the default precision is timed when
            it is one of them and is not f32.

    Returns:
        EnginePeer | None: Its runs by precision, or None (after one line).
    """
    core = openvino.Core()
    array = x.numpy()
    runs: Dict[str, Callable[[], Sequence[Any]]] = {}
    for hint in ('f32', None):
        config = {'INFERENCE_NUM_THREADS': threads, 'PERFORMANCE_HINT': 'LATENCY'}
        if hint:
            config['INFERENCE_PRECISION_HINT'] = hint
        try:
            compiled = core.compile_model(core.read_model(path), 'CPU', config)
        except RuntimeError as err:  # OpenVINO's errors (e.g. a CPU its plugin does not run on)
            missing('openvino', err)
            return None
        chosen = compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()
        dtype = OV_PRECISIONS.get(chosen, chosen)
        if hint is None:
            print(f'# OpenVINO {openvino.__version__}: CPU, INFERENCE_NUM_THREADS={threads}, '
                  f"PERFORMANCE_HINT=LATENCY; INFERENCE_PRECISION_HINT='f32' for the fp32 row, "
                  f'and its default chose {chosen} here ('
                  + ('the same as the fp32 row' if dtype == 'fp32' else
                     f'the {dtype} row' if dtype in dtypes else
                     f'not timed: {dtype} is not among --dtypes') + ')')
        if dtype in runs or dtype not in dtypes:
            continue
        request = compiled.create_infer_request()
        runs[dtype] = (lambda request=request: list(
            request.infer({0: array}, share_inputs=True, share_outputs=True).values()))
    return EnginePeer(runs)


def build_zentorch(ours: nn.Module, x: torch.Tensor,
                   dtypes: Sequence[str]) -> Optional[nn.Module]:
    """Our backbone compiled with zentorch, or None when zentorch is missing or fails.

    The compilation of each precision happens here (its first call), not in the timed rounds.

    Args:
        ours (nn.Module): Our backbone (a copy is compiled).
        x (torch.Tensor): The input.
        dtypes (Sequence[str]): The precisions of the run.

    Returns:
        nn.Module | None: The compiled module, or None (after one line).
    """
    zentorch = import_engine('zentorch')
    if zentorch is None:
        return None
    try:
        compiled = torch.compile(copy.deepcopy(ours), backend='zentorch')
        with torch.no_grad():
            for dtype in dtypes:
                with autocast(dtype):
                    compiled(x)
    except RuntimeError as err:  # dynamo's backend failures are RuntimeErrors
        missing('zentorch', err)
        return None
    print(f'# zentorch {zentorch.__version__}: torch.compile(backend=\'zentorch\') of our '
          f'backbone, {torch.get_num_threads()} torch threads, timed in {", ".join(dtypes)}')
    return compiled


def engine_peers(args: argparse.Namespace, ours: nn.Module,
                 x: torch.Tensor) -> Dict[str, Any]:
    """The engines of ``args.engines`` (all of :data:`ENGINES` when empty) that can be used.

    Args:
        args (argparse.Namespace): The options (``engines``, ``shape``, ``threads``,
            ``dtypes``).
        ours (nn.Module): Our backbone, eval mode.
        x (torch.Tensor): The input.

    Returns:
        dict: Row name (:data:`ENGINES`) -> :class:`EnginePeer` (ONNX Runtime, OpenVINO) or
        compiled module (zentorch), in :data:`ENGINES` order.
    """
    wanted = [name for name in ENGINES if name in (args.engines or ENGINES)]
    peers: Dict[str, Any] = {}
    modules = {name: import_engine(name) for name in wanted if name in ('onnxruntime', 'openvino')}
    modules = {name: module for name, module in modules.items() if module is not None}
    if modules:
        contiguous = x.detach().float().contiguous()
        with tempfile.TemporaryDirectory(prefix='convnext-engines-') as folder:
            try:
                path = export_backbone(ours, args.shape, folder)
            except (ImportError, ValueError) as err:
                hint = (' (the export needs onnx and onnxscript: pip install onnx onnxscript)'
                        if isinstance(err, ImportError) else '')
                print(f'# {" and ".join(ENGINES[name] for name in modules)} left out: the ONNX '
                      f'export failed: {type(err).__name__}: {str(err).splitlines()[0]}{hint}')
                modules = {}
            if 'onnxruntime' in modules:
                peers['onnxruntime'] = build_onnxruntime(modules['onnxruntime'], path,
                                                         contiguous, args.threads)
            if 'openvino' in modules:
                peers['openvino'] = build_openvino(modules['openvino'], path, contiguous,
                                                   args.threads, args.dtypes)
    if 'zentorch' in wanted:
        peers['zentorch'] = build_zentorch(ours, x, args.dtypes)
    return {ENGINES[name]: peer for name, peer in peers.items() if peer is not None}
