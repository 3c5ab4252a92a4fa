"""Exporting a graph to an ONNX file with torch.onnx (the ``torch.export``-based exporter).

:func:`build_graph` picks the graph for a built model, :func:`export_onnx` traces it with dynamic
height and width (and batch, except for detectors), translates our NMS and RoIAlign operators to
ONNX's (:mod:`.onnx_ops`), refuses any operator outside ONNX's default domain
(:func:`custom_domain_ops`) and writes the file with metadata that :mod:`.runtime` reads.
"""
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from . import onnx_ops
from .detector import DetectorGraph
from .graphs import BackboneGraph, SegmentorGraph

__all__ = ['DEFAULT_OPSET', 'MIN_OPSET', 'PARTS', 'build_graph', 'custom_domain_ops',
           'export_onnx', 'graph_kind', 'min_input_size']

#: ONNX opset of the exported graphs unless asked otherwise, and the lowest one: torch.onnx
#: builds opset-18 graphs (onnxscript's torch_lib) and converts them to other opsets with onnx's
#: version converter, which has no adapter from 18 down to 17 for Pad, so a request for 17 gives
#: an opset-18 graph (with a warning). LayerNormalization, one node per LayerNorm instead of
#: ReduceMean/Pow/Sqrt, is in every opset from 17 on.
DEFAULT_OPSET = MIN_OPSET = 18
#: What can be exported: the whole model or its backbone alone.
PARTS = ('model', 'backbone')
#: Prefix of the metadata keys written into the file.
META = 'convnext_backbone.'
_DEFAULT_DOMAINS = ('', 'ai.onnx')


def build_graph(model: nn.Module, part: str = 'model') -> nn.Module:
    """The export graph of a built mmdet / mmseg model (eval mode, weights loaded).

    Args:
        model (nn.Module): An mmseg ``EncoderDecoder`` or an mmdet two-stage detector.
        part (str): 'model' (the whole model) or 'backbone'. Defaults to 'model'.

    Returns:
        nn.Module: :class:`SegmentorGraph`, :class:`DetectorGraph` or :class:`BackboneGraph`.

    Raises:
        ValueError: Unknown ``part``, a model the export does not support, or a torch older than
            :data:`~.onnx_ops.EXPORT_TORCH` (one line).
    """
    onnx_ops.require_export_torch()
    if part not in PARTS:
        raise ValueError(f'part={part!r}: use one of {PARTS}')
    if part == 'backbone':
        return BackboneGraph(model)
    if _is_detector(model):
        return DetectorGraph(model)
    return SegmentorGraph(model)


def _is_detector(model: nn.Module) -> bool:
    try:
        from mmdet.models.detectors import BaseDetector
    except ImportError:
        return False
    return isinstance(model, BaseDetector)


def graph_kind(graph: nn.Module) -> str:
    """'detector', 'segmentor' or 'backbone': what :mod:`.runtime` reads from the file."""
    for kind, cls in (('detector', DetectorGraph), ('segmentor', SegmentorGraph),
                      ('backbone', BackboneGraph)):
        if isinstance(graph, cls):
            return kind
    raise ValueError(f'not an export graph: {type(graph).__name__}')


def export_onnx(graph: nn.Module, path: str, shape: Sequence[int] = (480, 640),
                opset: int = DEFAULT_OPSET, metadata: Optional[Dict[str, str]] = None):
    """Export ``graph`` to ``path`` with dynamic input size and check its operators.

    Args:
        graph (nn.Module): From :func:`build_graph`.
        path (str): The ``.onnx`` file to write (its folder is created).
        shape (Sequence[int]): Height and width of the example image that is traced; the
            graph runs at any size >= :func:`min_input_size`. Defaults to (480, 640).
        opset (int): ONNX opset, >= :data:`MIN_OPSET`. Defaults to :data:`DEFAULT_OPSET`.
        metadata (dict, optional): More ``key: value`` strings for the file's metadata.

    Returns:
        onnx.ModelProto: The written model.

    Raises:
        ValueError: A bad ``shape`` or ``opset``, an operator outside ONNX's default domain
            in the graph (nothing is written then), or a torch older than
            :data:`~.onnx_ops.EXPORT_TORCH`.
    """
    onnx_ops.require_export_torch()
    import onnx
    height, width = (int(s) for s in shape)
    if opset < MIN_OPSET:
        raise ValueError(f'opset {opset}: use >= {MIN_OPSET} (below 17 LayerNorm decomposes '
                         'into ReduceMean/Pow/Sqrt; torch.onnx cannot convert these graphs to 17)')
    kind = graph_kind(graph)
    smallest = min_input_size(graph)
    if min(height, width) < smallest:
        raise ValueError(f'shape {height}x{width}: this graph needs height and width >= '
                         f'{smallest}')
    # batch 2: torch.export specialises a dimension of size 1 of the example to 1
    batch = 1 if kind == 'detector' else 2
    example = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(0))
    dims = {2: torch.export.Dim('height', min=smallest),
            3: torch.export.Dim('width', min=smallest)}
    if batch > 1:
        dims[0] = torch.export.Dim('batch', min=1)
    graph = graph.eval()
    # torch.onnx.export(dynamo=True) captures with this setting, and on a constraint violation
    # retries with the dimensions torch.export suggests, which may restrict them to multiples
    # (torch/onnx/_internal/exporter/_capture_strategies.py). Capturing here makes any
    # violation an error instead.
    with torch.no_grad(), torch.fx.experimental._config.patch(backed_size_oblivious=True):
        exported = torch.export.export(graph, (example * 255,), dynamic_shapes=(dims,),
                                       strict=False)
    program = torch.onnx.export(
        exported, (example * 255,), dynamo=True, input_names=list(graph.input_names),
        output_names=list(graph.output_names), opset_version=opset,
        custom_translation_table=onnx_ops.TRANSLATIONS, verbose=False)
    model = program.model_proto
    written = next(o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS)
    if written != opset:
        raise ValueError(f'opset {opset}: torch.onnx could not convert the graph to it (it '
                         f'stayed at {written}); use {written}')
    _name_dims(model, kind)
    foreign = custom_domain_ops(model)
    if foreign:
        raise ValueError(f'the exported graph holds operators outside ONNX\'s default domain: '
                         f'{", ".join(sorted(set(foreign)))}')
    entries = {'graph': kind, **(metadata or {})}
    if kind == 'segmentor':
        entries['align_corners'] = str(bool(graph.segmentor.align_corners))
    onnx.helper.set_model_props(model, {META + k: str(v) for k, v in entries.items()})
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    onnx.save(model, path, save_as_external_data=model.ByteSize() > 2_000_000_000)
    return model


def _name_dims(model, kind: str) -> None:
    """Give the dynamic dimensions the names of the docs (torch.export calls them s0, u0 ...):
    the input's ``batch``, ``height``, ``width`` and a detector's ``detections``, wherever they
    occur in the graph's inputs, outputs and intermediate shapes."""
    names: Dict[str, str] = {}
    axes = (2, 3) if kind == 'detector' else (0, 2, 3)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis in axes:
        if dims[axis].dim_param:
            names[dims[axis].dim_param] = {0: 'batch', 2: 'height', 3: 'width'}[axis]
    if kind == 'detector':
        first = model.graph.output[0].type.tensor_type.shape.dim[0]
        if first.dim_param:
            names[first.dim_param] = 'detections'
    if not names:
        return
    pattern = re.compile(r'\b(' + '|'.join(map(re.escape, names)) + r')\b')
    for value in [*model.graph.input, *model.graph.output, *model.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = pattern.sub(lambda m: names[m.group(1)], dim.dim_param)


def min_input_size(graph: nn.Module) -> int:
    """The smallest height and width the exported ``graph`` accepts: two cells of its coarsest
    feature map (the backbone's stride 32, or a detector's coarsest anchor stride).

    Note:
        torch.export traces with sizes that may be any value in a declared range, but it
        assumes that a computed size it cannot prove to be 1 is not 1; a 1-cell feature map
        is outside what it proved, so the range starts where the coarsest map has two cells.
    """
    if isinstance(graph, DetectorGraph):
        strides = graph.detector.rpn_head.prior_generator.strides
        return 2 * max(max(s) if isinstance(s, (tuple, list)) else s for s in strides)
    return 64


def custom_domain_ops(model) -> List[str]:
    """Every operator of ``model`` outside ONNX's default domain, as ``'domain::op_type'``.

    Walks the main graph, the subgraphs of control-flow nodes (If, Loop, Scan) and the model's
    local functions (whose calls are nodes of the functions' own domains).

    Args:
        model (onnx.ModelProto): The model.

    Returns:
        list[str]: One entry per offending node (empty when every node is standard).
    """
    import onnx
    found: List[str] = []

    def walk(nodes) -> None:
        for node in nodes:
            if node.domain not in _DEFAULT_DOMAINS:
                found.append(f'{node.domain}::{node.op_type}')
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g.node)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for sub in attr.graphs:
                        walk(sub.node)

    walk(model.graph.node)
    for function in model.functions:
        walk(function.node)
    return found
