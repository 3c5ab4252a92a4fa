"""Deployment without mmdeploy: ONNX export of our detectors and segmentors, run in ONNX Runtime
or OpenVINO.

- :mod:`.graphs`, :mod:`.detector`: the exported graphs (backbone, mmseg encoder-decoder, mmdet
  two-stage detector), each taking an RGB 0..255 image with the config's normalisation inside;
- :mod:`.onnx_ops`: NMS and RoIAlign as torch operators that export to ONNX's own operators;
- :mod:`.export`: :func:`build_graph`, :func:`export_onnx`, :func:`custom_domain_ops`;
- :mod:`.graph_session`: the runtime-neutral session of an exported file
  (:class:`~.graph_session.GraphSession`: inputs -> outputs by name), and the file's header;
- :mod:`.ort_session`, :mod:`.ov_session`: its ONNX Runtime and OpenVINO implementations;
- :mod:`.session`: :func:`~.session.open_session` (a file in a runtime and precision);
- :mod:`.runtime`, :mod:`.exported_detector`, :mod:`.exported_segmentor`: the exported models
  of mmengine's test loop, in either runtime (``tools/test_onnx.py``).

``onnx``, ``onnxruntime``, ``onnxscript`` and ``openvino`` (the ``deploy`` extra) are imported
only when used.
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
