"""Inference on images with mmdet's ``DetInferencer`` and mmseg's ``MMSegInferencer``.

:func:`build_inferencer` returns one of them, changed in three ways (by subclassing, as both
document for ``_load_weights_to_model``):

- the weights are read by :func:`convnext_backbone.checkpoint.read_checkpoint` (the allowlist,
  one-line errors) and must fit the config's model exactly (:func:`load_state_strictly`);
- class names come from the checkpoint's ``meta.dataset_meta``, else from the config's test
  dataset, else ``class 0 ... class K-1`` (not COCO's or Cityscapes' names, as both inferencers
  default to), with a fixed palette when none is given;
- nothing is downloaded: the backbone's ``init_cfg`` is not applied.

:func:`read_image` reads any image the training pipeline reads as 3-channel BGR uint8
(grayscale expanded, alpha dropped, 16-bit scaled), and :func:`detection_entry` /
:func:`segmentation_entry` turn a prediction into the JSON that ``tools/infer.py`` writes.
"""
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.config import Config

from .checkpoint import load_state_strictly, read_checkpoint, unwrap_state_dict
from .config import read_config

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}


class _StrictWeights:
    """Mixin for an mmengine ``BaseInferencer``: strict weights and our class names."""

    def _init_model(self, cfg: Config, weights: Optional[str],
                    device: str = 'cpu') -> torch.nn.Module:
        from mmengine.registry import MODELS
        if cfg.model.get('pretrained') is not None:
            del cfg.model.pretrained
        checkpoint = read_checkpoint(weights) if weights else None
        model = MODELS.build(cfg.model)
        model.cfg = cfg
        self._load_weights_to_model(model, checkpoint, cfg)
        return model.to(device).eval()

    def _load_weights_to_model(self, model: torch.nn.Module, checkpoint: Optional[dict],
                               cfg: Config) -> None:
        meta: Dict[str, Any] = {}
        if checkpoint is not None:
            source = getattr(self, 'checkpoint_name', 'the checkpoint')
            load_state_strictly(model, unwrap_state_dict(checkpoint), source,
                                getattr(self, 'config_name', 'the config'))
            meta = dict((checkpoint.get('meta') or {}).get('dataset_meta') or {})
        model.dataset_meta = dataset_meta(cfg, meta, model)


def build_inferencer(config: str, checkpoint: str, device: str = 'cpu') -> Tuple[Any, str]:
    """The inferencer for a config (mmdet or mmseg scope) with a checkpoint loaded strictly.

    Args:
        config (str): mmdet or mmseg config file.
        checkpoint (str): Checkpoint of that config's model (path or URL).
        device (str): torch device. Defaults to 'cpu'.

    Returns:
        tuple: (``DetInferencer`` or ``MMSegInferencer``, scope 'mmdet' or 'mmseg').

    Raises:
        ConfigError: The config, or one of its bases, is not there.
        ValueError: The config's ``default_scope`` is neither.
        CheckpointError: The checkpoint is unreadable, refused or does not fit the model.
    """
    cfg = read_config(config)
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f"{config} has default_scope={scope!r}; inference handles 'mmdet' "
                         "(detection) and 'mmseg' (segmentation) configs")
    backbone = cfg.model.get('backbone')
    if isinstance(backbone, dict):
        backbone['init_cfg'] = None  # the checkpoint holds every weight
    if scope == 'mmdet':
        from mmdet.apis import DetInferencer as base
        cfg.setdefault('visualizer', dict(type='DetLocalVisualizer'))
    else:
        from mmseg.apis import MMSegInferencer as base
        cfg.setdefault('visualizer', dict(type='SegLocalVisualizer', alpha=0.5))
    cls = type(f'Strict{base.__name__}', (_StrictWeights, base),
               dict(config_name=config, checkpoint_name=checkpoint))
    inferencer = cls(model=cfg, weights=checkpoint, device=device)
    inferencer.show_progress = False
    meta = inferencer.model.dataset_meta
    if scope == 'mmseg':
        inferencer.visualizer.set_dataset_meta(meta['classes'], meta['palette'])
    else:
        inferencer.visualizer.dataset_meta = meta
    return inferencer, scope


def predict(inferencer: Any, scope: str, image: np.ndarray) -> Any:
    """The prediction (``DetDataSample`` / ``SegDataSample``) for one BGR uint8 image."""
    if scope == 'mmdet':
        return inferencer(image, return_datasamples=True, no_save_pred=True)['predictions'][0]
    return inferencer(image, return_datasamples=True)


def dataset_meta(cfg: Config, meta: Dict[str, Any], model: torch.nn.Module) -> Dict[str, Any]:
    """Class names and palette: the checkpoint's, the config's test set's, or generic ones.

    Args:
        cfg (Config): The model's config.
        meta (dict): The checkpoint's ``meta.dataset_meta`` (may be empty).
        model (nn.Module): The model (its head's ``num_classes`` for generic names).

    Returns:
        dict: ``classes`` and ``palette`` (one RGB triple per class).
    """
    meta = {k.lower(): v for k, v in meta.items()}
    if not meta.get('classes'):
        meta.update(_config_metainfo(cfg))
    if not meta.get('classes'):
        meta['classes'] = tuple(f'class {i}' for i in range(_num_classes(model)))
    if not meta.get('palette') or len(meta['palette']) < len(meta['classes']):
        rng = np.random.RandomState(42)
        meta['palette'] = [tuple(int(c) for c in rng.randint(0, 256, 3))
                           for _ in meta['classes']]
    return meta


def _config_metainfo(cfg: Config) -> Dict[str, Any]:
    try:
        dataset = dict(cfg.test_dataloader.dataset)
    except (AttributeError, KeyError, TypeError):
        return {}
    dataset['lazy_init'] = True
    from mmengine.registry import DATASETS
    try:
        return dict(DATASETS.build(dataset).metainfo)
    except Exception:  # noqa: BLE001 - the data may be absent at inference: fall back
        return {}


def _num_classes(model: torch.nn.Module) -> int:
    for owner in ('decode_head', 'roi_head.bbox_head', 'bbox_head'):
        obj: Any = model
        for part in owner.split('.'):
            obj = getattr(obj, part, None)
        if isinstance(obj, (list, tuple, torch.nn.ModuleList)):
            obj = obj[-1]
        if obj is not None and hasattr(obj, 'num_classes'):
            return int(obj.num_classes)
    return 1


def read_image(path: str) -> np.ndarray:
    """Read an image as 3-channel BGR uint8 (grayscale expanded, alpha dropped).

    Raises:
        ValueError: When the file is not a readable image.
    """
    import mmcv
    try:
        img = mmcv.imread(path, flag='color', channel_order='bgr')
    except Exception as err:  # noqa: BLE001 - reported per image, the run goes on
        raise ValueError(f'cannot read image {path}: {err}') from None
    if img is None:
        raise ValueError(f'cannot read image {path}: not an image or corrupt')
    return img  # cv2's colour mode also turns 16-bit images into 8-bit


def detection_entry(sample: Any, classes: Sequence[str], score_thr: float) -> Dict[str, Any]:
    """JSON-ready detections of one ``DetDataSample`` with score >= ``score_thr``."""
    inst = sample.pred_instances
    keep = inst.scores >= score_thr
    bboxes = inst.bboxes[keep].cpu().numpy()
    scores = inst.scores[keep].cpu().numpy()
    labels = inst.labels[keep].cpu().numpy()
    masks = inst.masks[keep].cpu().numpy() if 'masks' in inst else None
    out = []
    for i, (bbox, score, label) in enumerate(zip(bboxes, scores, labels)):
        item = {'label': int(label),
                'class': str(classes[label]) if label < len(classes) else str(label),
                'score': round(float(score), 5),
                'bbox': [round(float(v), 2) for v in bbox]}
        if masks is not None:
            from pycocotools import mask as mask_utils
            rle = mask_utils.encode(np.asfortranarray(masks[i].astype(np.uint8)))
            item['mask'] = {'size': [int(s) for s in rle['size']],
                            'counts': rle['counts'].decode('ascii')}
        out.append(item)
    return {'instances': out}


def segmentation_entry(sample: Any, classes: Sequence[str]) -> Tuple[Dict[str, Any], np.ndarray]:
    """JSON-ready class statistics of one ``SegDataSample`` and its label map."""
    label_map = sample.pred_sem_seg.data[0].cpu().numpy()
    values, counts = np.unique(label_map, return_counts=True)
    total = float(label_map.size)
    stats = [{'label': int(v), 'class': str(classes[v]) if v < len(classes) else str(v),
              'pixels': int(c), 'fraction': round(c / total, 5)}
             for v, c in sorted(zip(values, counts), key=lambda vc: -vc[1])]
    return {'classes': stats}, label_map
