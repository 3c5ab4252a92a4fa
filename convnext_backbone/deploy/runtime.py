"""The config of an mmengine model that evaluates an exported graph in ONNX Runtime or OpenVINO
(CPU).

:func:`runtime_model` turns a config's ``model`` into an exported model of the same task
(:class:`~.exported_detector.ExportedDetector` or :class:`~.exported_segmentor.ExportedSegmentor`)
run by the runtime asked for, so that mmengine's test loop evaluates the exported file with the
config's test pipeline and metric, exactly as ``tools/test.py`` evaluates a checkpoint.
"""
from typing import Optional

from mmengine.config import Config

from .graph_session import SCOPES, file_kind, require_kind

__all__ = ['runtime_model']


def runtime_model(cfg: Config, onnx_file: str, threads: Optional[int] = None,
                  runtime: str = 'onnxruntime', precision: str = 'f32') -> dict:
    """The ``model`` config that evaluates ``onnx_file`` in place of ``cfg.model``.

    The data preprocessor is the config's, without normalisation and with RGB output (the
    graph normalises RGB 0..255 itself); detectors' padding is inside the graph too.

    Args:
        cfg (Config): The mmdet or mmseg config the file was exported from.
        onnx_file (str): The exported graph.
        threads (int, optional): The runtime's intra-op threads. Defaults to None.
        runtime (str): 'onnxruntime' or 'openvino' (:func:`~.session.open_session`). Defaults
            to 'onnxruntime'.
        precision (str): 'f32' or 'bf16' (OpenVINO, where the CPU has native bf16). Defaults
            to 'f32'.

    Returns:
        dict: ``type='convnext_backbone.ExportedDetector'`` or ``...Segmentor`` and its
        arguments.

    Raises:
        ValueError: The config's scope is neither mmdet nor mmseg, the file holds another kind
            of graph (or none of ours), or an mmseg data
            preprocessor pads at test time (its padding is normalised; the graph's input is
            not).
    """
    preprocessor = dict(cfg.model.get('data_preprocessor') or {})
    preprocessor.update(mean=None, std=None, bgr_to_rgb=True, rgb_to_bgr=False)
    preprocessor.pop('batch_augments', None)
    scope = cfg.get('default_scope')
    wanted = next((kind for kind, s in SCOPES.items() if s == scope), None)
    if wanted is not None:
        require_kind(onnx_file, file_kind(onnx_file), wanted)
    session = dict(onnx_file=onnx_file, threads=threads, runtime=runtime, precision=precision)
    if scope == 'mmdet':
        from . import exported_detector  # noqa: F401 - registers the model
        preprocessor['pad_size_divisor'] = 1
        rcnn = (cfg.model.get('test_cfg') or {}).get('rcnn') or {}
        return dict(type='convnext_backbone.ExportedDetector', **session,
                    mask_thr_binary=rcnn.get('mask_thr_binary', 0.5),
                    data_preprocessor=preprocessor)
    if scope == 'mmseg':
        from . import exported_segmentor  # noqa: F401 - registers the model
        if preprocessor.get('test_cfg'):
            raise ValueError(f'model.data_preprocessor.test_cfg={preprocessor["test_cfg"]}: '
                             'padding at test time is not supported by the evaluation of an '
                             'exported graph; remove it')
        return dict(type='convnext_backbone.ExportedSegmentor', **session,
                    test_cfg=cfg.model.get('test_cfg'), data_preprocessor=preprocessor)
    raise ValueError(f'default_scope={scope!r}: the evaluation of an exported graph runs mmdet '
                     'and mmseg configs')
