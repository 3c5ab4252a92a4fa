"""``convnext_backbone.ExportedSegmentor``: an exported segmentor in mmseg's test loop, run by
ONNX Runtime or OpenVINO (also registered as ``convnext_backbone.ONNXRuntimeSegmentor``, its
earlier name)."""
from typing import List, Optional

from mmengine.config import ConfigDict
from mmengine.logging import print_log
from mmseg.models.segmentors import BaseSegmentor, EncoderDecoder
from torch import Tensor

from ..registry import MODELS
from .session import open_session

__all__ = ['ExportedSegmentor']


@MODELS.register_module()
class ExportedSegmentor(EncoderDecoder):
    """A segmentor graph of ``tools/export_onnx.py`` run by a runtime inside mmseg's own
    inference: ``encode_decode`` runs the graph, and mmseg's ``EncoderDecoder`` does the rest,
    whole-image or sliding-window (``test_cfg.mode='slide'``: the windows run through the graph
    one by one) and the bilinear resize of the logits to the original image before the argmax.

    Note:
        It skips ``EncoderDecoder.__init__`` (which builds the backbone and heads) and sets the
        attributes that mmseg's inference reads: ``test_cfg``, ``align_corners`` (from the
        file), ``out_channels`` and ``num_classes`` (the graph's logits channels).

    Args:
        onnx_file (str): The exported segmentor graph.
        test_cfg (dict, optional): The config's ``model.test_cfg``. Defaults to whole-image.
        threads (int, optional): The runtime's intra-op threads. Defaults to None.
        runtime (str): 'onnxruntime' or 'openvino' (:func:`~.session.open_session`). Defaults
            to 'onnxruntime'.
        precision (str): 'f32' or 'bf16' (OpenVINO). Defaults to 'f32'.
        data_preprocessor (dict, optional): mmseg's ``SegDataPreprocessor`` config without
            normalisation, RGB output (see :func:`~.runtime.runtime_model`).
        init_cfg (dict, optional): Unused (no weights). Defaults to None.
    """

    def __init__(self, onnx_file: str, test_cfg: Optional[dict] = None,
                 threads: Optional[int] = None, runtime: str = 'onnxruntime',
                 precision: str = 'f32', data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        BaseSegmentor.__init__(self, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.graph = open_session(onnx_file, runtime, threads, precision)
        self.graph.require('segmentor')
        print_log(f'{onnx_file}: {self.graph.describe()}', logger='current')
        self.test_cfg = ConfigDict(test_cfg or dict(mode='whole'))
        self.align_corners = self.graph.metadata.get('align_corners') == 'True'
        channels = self.graph.output_shapes['seg_logits'][1]
        self.out_channels = self.num_classes = int(channels)

    def encode_decode(self, inputs: Tensor, batch_img_metas: List[dict]) -> Tensor:
        """The graph's ``seg_logits`` (N, K, H, W) at the input's size."""
        return self.graph(inputs, ['seg_logits'])['seg_logits']

    def extract_feat(self, inputs: Tensor) -> List[Tensor]:
        raise NotImplementedError('an exported model only predicts')

    def loss(self, inputs: Tensor, data_samples) -> dict:
        raise NotImplementedError('an exported model only predicts')

    def _forward(self, inputs: Tensor, data_samples=None) -> Tensor:
        raise NotImplementedError('an exported model only predicts')


MODELS.register_module(name='ONNXRuntimeSegmentor', module=ExportedSegmentor)
