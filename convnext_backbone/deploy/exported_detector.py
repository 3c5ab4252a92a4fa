"""``convnext_backbone.ExportedDetector``: an exported detector in mmdet's test loop, run by
ONNX Runtime or OpenVINO (also registered as ``convnext_backbone.ONNXRuntimeDetector``, its
earlier name)."""
from typing import List, Optional

import torch
from mmdet.models.detectors import BaseDetector
from mmdet.structures import SampleList
from mmengine.logging import print_log
from mmengine.structures import InstanceData
from torch import Tensor

from ..registry import MODELS
from .detector import paste_masks
from .session import open_session

__all__ = ['ExportedDetector']


@MODELS.register_module()
class ExportedDetector(BaseDetector):
    """A detector graph of ``tools/export_onnx.py`` run by a runtime, predicting like mmdet.

    Each image of the batch, cropped to its ``img_shape`` (the batch is padded to a common
    size), runs through the graph alone (the graph takes one image). With ``rescale`` the boxes
    are scaled to the original image and the masks pasted there from ``mask_probs``, as mmdet's
    box and mask heads do.

    Args:
        onnx_file (str): The exported detector graph.
        mask_thr_binary (float): Mask threshold (``test_cfg.rcnn.mask_thr_binary``); < 0
            gives uint8 masks (probability x 255), as mmdet. Defaults to 0.5.
        threads (int, optional): The runtime's intra-op threads. Defaults to None.
        runtime (str): 'onnxruntime' or 'openvino' (:func:`~.session.open_session`). Defaults
            to 'onnxruntime'.
        precision (str): 'f32' or 'bf16' (OpenVINO). Defaults to 'f32'.
        data_preprocessor (dict, optional): mmdet's ``DetDataPreprocessor`` config without
            normalisation, RGB output (see :func:`~.runtime.runtime_model`).
        init_cfg (dict, optional): Unused (no weights). Defaults to None.
    """

    def __init__(self, onnx_file: str, mask_thr_binary: float = 0.5,
                 threads: Optional[int] = None, runtime: str = 'onnxruntime',
                 precision: str = 'f32', data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.graph = open_session(onnx_file, runtime, threads, precision)
        self.graph.require('detector')
        print_log(f'{onnx_file}: {self.graph.describe()}', logger='current')
        self.predicts_masks = 'mask_probs' in self.graph.output_names
        self.mask_thr_binary = mask_thr_binary

    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """mmdet's ``predict``: ``pred_instances`` (bboxes, scores, labels[, masks])."""
        results = [self._predict_image(image, sample.metainfo, rescale)
                   for image, sample in zip(batch_inputs, batch_data_samples)]
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _predict_image(self, image: Tensor, meta: dict, rescale: bool) -> InstanceData:
        height, width = meta['img_shape'][:2]
        names = ['boxes', 'scores', 'labels']
        if self.predicts_masks:
            names.append('mask_probs' if rescale else 'masks')
        out = self.graph(image[None, :, :height, :width], names)
        boxes = out['boxes']
        results = InstanceData(scores=out['scores'], labels=out['labels'])
        if not self.predicts_masks:
            if rescale:  # BBoxHead: scale_boxes(bboxes, [1 / s for s in scale_factor])
                boxes = boxes * boxes.new_tensor([1 / s for s in meta['scale_factor']]).repeat(2)
            results.bboxes = boxes
            return results
        if rescale:  # FCNMaskHead: bboxes /= scale_factor, then paste at ori_shape
            boxes = boxes / boxes.new_tensor(meta['scale_factor']).repeat(2)
            ori_h, ori_w = meta['ori_shape'][:2]
            probs = paste_masks(out['mask_probs'], boxes, ori_h, ori_w)
        else:
            probs = out['masks']
        results.bboxes = boxes
        results.masks = probs >= self.mask_thr_binary if self.mask_thr_binary >= 0 \
            else (probs * 255).to(torch.uint8)
        return results

    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> dict:
        raise NotImplementedError('an exported model only predicts')

    def _forward(self, batch_inputs: Tensor, batch_data_samples: SampleList = None) -> tuple:
        raise NotImplementedError('an exported model only predicts')

    def extract_feat(self, batch_inputs: Tensor) -> List[Tensor]:
        raise NotImplementedError('an exported model only predicts')


MODELS.register_module(name='ONNXRuntimeDetector', module=ExportedDetector)
