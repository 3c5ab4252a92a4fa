"""Deployment without mmdeploy: ONNX export of our detectors and segmentors, run in ONNX Runtime.

- :mod:`.graphs`, :mod:`.detector`: the exported graphs (backbone, mmseg encoder-decoder, mmdet
  two-stage detector), each taking an RGB 0..255 image with the config's normalisation inside;
- :mod:`.onnx_ops`: NMS and RoIAlign as torch operators that export to ONNX's own operators;
- :mod:`.export`: :func:`build_graph`, :func:`export_onnx`, :func:`custom_domain_ops`;
- :mod:`.session`: an ONNX Runtime session of an exported file (:class:`~.session.OnnxGraph`);
- :mod:`.runtime`, :mod:`.ort_detector`, :mod:`.ort_segmentor`: ONNX Runtime models for
  mmengine's test loop (``tools/test_onnx.py``).

``onnx``, ``onnxruntime`` and ``onnxscript`` (the ``deploy`` extra) are imported only when used.
"""
from .detector import DetectorGraph, paste_masks
from .export import (
                     DEFAULT_OPSET,
                     MIN_OPSET,
                     PARTS,
                     build_graph,
                     custom_domain_ops,
                     export_onnx,
                     graph_kind,
)
from .graphs import BackboneGraph, ImageInput, SegmentorGraph

__all__ = ['DEFAULT_OPSET', 'MIN_OPSET', 'PARTS', 'BackboneGraph', 'DetectorGraph',
           'ImageInput', 'SegmentorGraph', 'build_graph', 'custom_domain_ops', 'export_onnx',
           'graph_kind', 'paste_masks']
