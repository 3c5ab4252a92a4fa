"""Check the datasets of a config before training, with one-line messages.

mmdet and mmseg report a missing data folder, a broken annotation file or an empty dataset deep in
dataset construction (``FileNotFoundError`` from a worker, ``JSONDecodeError`` without the file
name, ``ValueError: need at least one array to concatenate``), and mmdet silently drops COCO
annotations whose category id is not in the config's classes. :func:`check_datasets` finds these
before the Runner is built and raises :class:`DatasetError` naming the file or folder, the
dataloader it belongs to and what to change.

What is checked, for each dataloader's dataset (wrappers such as ``RepeatDataset`` and
``ConcatDataset`` are looked through; remote paths and ``backend_args`` are skipped):

- any dataset: ``data_root``, the annotation file and the data folders exist;
- COCO-style (mmdet ``CocoDataset`` and subclasses): the annotation file is JSON with ``images``,
  ``annotations`` and ``categories`` lists, lists at least one image, every annotation's
  ``category_id`` is defined in ``categories``, the config's classes are category names of the
  file, the model's ``num_classes`` can hold them, and the image folder holds the first listed
  images;
- segmentation (mmseg ``BaseSegDataset`` and subclasses): the image folder holds images with the
  dataset's suffix, their label maps exist, and the label values of the first few fit the
  decode head's ``num_classes``.

Example:
    >>> from convnext_backbone.datasets_check import DatasetError, check_datasets
    >>> check_datasets(cfg, ('train_dataloader', 'val_dataloader'))  # raises DatasetError
"""
import inspect
import json
import os
import os.path as osp
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

#: How many listed images / label maps are checked on disk (the first ones).
SAMPLE = 5


class DatasetError(ValueError):
    """A dataset of the config is missing, empty or malformed."""


def check_datasets(cfg: Any, splits: Sequence[str] = ('train_dataloader', 'val_dataloader',
                                                      'test_dataloader')) -> None:
    """Check the datasets of the given dataloaders of ``cfg``.

    Args:
        cfg (Config | dict): A full mmdet or mmseg config (``default_scope`` 'mmdet' or 'mmseg').
        splits (Sequence[str]): Dataloader keys to check; absent or None ones are skipped.
            Defaults to the train, val and test dataloaders.

    Raises:
        DatasetError: The first problem found, in one line.
    """
    scope = cfg.get('default_scope')
    for split in splits:
        loader = cfg.get(split)
        if not loader or not loader.get('dataset'):
            continue
        for where, dataset in _datasets(loader['dataset'], f'{split}.dataset'):
            _check_one(dataset, where, scope, cfg.get('model') or {})


def _datasets(dataset: Dict[str, Any], where: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """The leaf datasets of a (possibly wrapped) dataset config, with their config path."""
    if isinstance(dataset.get('datasets'), (list, tuple)):
        for i, inner in enumerate(dataset['datasets']):
            yield from _datasets(inner, f'{where}.datasets[{i}]')
    elif isinstance(dataset.get('dataset'), dict):
        yield from _datasets(dataset['dataset'], f'{where}.dataset')
    else:
        yield where, dataset


def _dataset_class(type_: Any, scope: Optional[str]) -> Optional[type]:
    if isinstance(type_, type):
        return type_
    if not isinstance(type_, str):
        return None
    try:
        if scope == 'mmseg':
            from mmseg.registry import DATASETS
        else:
            from mmdet.registry import DATASETS
        return DATASETS.get(type_)
    except (ImportError, KeyError):
        return None


def _is_subclass(cls: Optional[type], module: str, name: str) -> bool:
    if cls is None:
        return False
    try:
        base = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return False
    return issubclass(cls, base)


def _local(path: str) -> bool:
    return '://' not in path


def _join(root: str, path: str) -> str:
    if not path:
        return root
    if osp.isabs(path) or not root or not _local(path):
        return path
    return osp.join(root, path)


def _check_one(dataset: Dict[str, Any], where: str, scope: Optional[str],
               model: Dict[str, Any]) -> None:
    if dataset.get('backend_args'):
        return  # remote storage: not checked
    root = dataset.get('data_root') or ''
    if root and _local(root) and not osp.isdir(root):
        raise DatasetError(f'dataset folder not found: {root} ({where}.data_root); download the '
                           'data there or point data_root at it, e.g. --cfg-options '
                           f'{where}.data_root=/path/to/data')
    cls = _dataset_class(dataset.get('type'), scope)
    ann_file = _join(root, dataset.get('ann_file') or '')
    prefix = {k: _join(root, v) for k, v in (dataset.get('data_prefix') or {}).items()
              if isinstance(v, str)}
    if _is_subclass(cls, 'mmdet.datasets', 'CocoDataset'):
        classes = _classes(dataset, cls)
        _check_coco(ann_file, prefix.get('img', root), where, classes, model)
    elif _is_subclass(cls, 'mmseg.datasets', 'BaseSegDataset'):
        _check_seg(dataset, cls, ann_file, prefix, where, model)
    else:
        if ann_file and ann_file != root and _local(ann_file) and not osp.exists(ann_file):
            raise DatasetError(f'annotation file not found: {ann_file} ({where}.ann_file)')


def _classes(dataset: Dict[str, Any], cls: type) -> Tuple[str, ...]:
    meta = dataset.get('metainfo') or {}
    classes = meta.get('classes') or getattr(cls, 'METAINFO', {}).get('classes') or ()
    return tuple(classes)


# -- COCO ------------------------------------------------------------------------------------------
def _check_coco(ann_file: str, img_dir: str, where: str, classes: Tuple[str, ...],
                model: Dict[str, Any]) -> None:
    if not ann_file or not _local(ann_file):
        return
    if not osp.isfile(ann_file):
        raise DatasetError(f'annotation file not found: {ann_file} ({where}.ann_file)')
    try:
        with open(ann_file, encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as err:
        raise DatasetError(f'annotation file {ann_file} is not valid JSON: {err.msg} at line '
                           f'{err.lineno} column {err.colno}') from None
    except UnicodeDecodeError as err:
        raise DatasetError(f'annotation file {ann_file} is not UTF-8 JSON text ({err.reason} at '
                           f'byte {err.start})') from None
    if not isinstance(data, dict):
        raise DatasetError(f'annotation file {ann_file} holds a JSON {type(data).__name__}; COCO '
                           'annotations are an object with images, annotations and categories')
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise DatasetError(f'annotation file {ann_file} has no "{key}" list: not a COCO '
                               'instances file')
    images, anns, cats = data['images'], data['annotations'], data['categories']
    if not images:
        raise DatasetError(f'annotation file {ann_file} lists no images: the dataset is empty')
    try:
        cat_ids = {c['id'] for c in cats}
        names = [str(c['name']) for c in cats]
        used = [(a['category_id'], a.get('id'), a.get('image_id')) for a in anns]
    except (KeyError, TypeError) as err:
        raise DatasetError(f'annotation file {ann_file}: a category lacks "id"/"name" or an '
                           f'annotation lacks "category_id" ({type(err).__name__}: '
                           f'{err})') from None
    unknown = [u for u in used if u[0] not in cat_ids]
    if unknown:
        ids = sorted({u[0] for u in unknown}, key=str)
        raise DatasetError(
            f'annotations in {ann_file} use category ids {ids[:10]} that its "categories" do not '
            f'define (defined: {sorted(cat_ids, key=str)[:20]}): {len(unknown)} such '
            f'annotation(s), the first is annotation id {unknown[0][1]} of image id '
            f'{unknown[0][2]}')
    if classes:
        missing = [c for c in classes if c not in names]
        if missing:
            raise DatasetError(
                f'the classes of {where} ({_short(classes)}) are not all category names of '
                f'{ann_file} (it has {_short(names)}; missing {_short(missing)}): set '
                f'{where}.metainfo=dict(classes=(...)) to the names in the file and the model\'s '
                'num_classes to their count')
        _check_num_classes(len(classes), model, where)
    _check_images(img_dir, [str(im.get('file_name', '')) for im in images[:SAMPLE]], ann_file,
                  where)


def _check_num_classes(count: int, model: Dict[str, Any], where: str) -> None:
    for name, heads in (('roi_head.bbox_head', _get(model, 'roi_head', 'bbox_head')),
                        ('roi_head.mask_head', _get(model, 'roi_head', 'mask_head')),
                        ('bbox_head', model.get('bbox_head'))):
        for head in heads if isinstance(heads, (list, tuple)) else [heads]:
            num = head.get('num_classes') if isinstance(head, dict) else None
            if isinstance(num, int) and num < count:
                raise DatasetError(f'{where} has {count} classes but model.{name}.num_classes is '
                                   f'{num}: set num_classes={count}')


def _get(cfg: Dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(cfg, dict):
            return None
        cfg = cfg.get(key)
    return cfg


def _check_images(img_dir: str, names: List[str], listed_in: str, where: str) -> None:
    if not img_dir or not _local(img_dir):
        return
    if not osp.isdir(img_dir):
        raise DatasetError(f'image folder not found: {img_dir} ({where}.data_prefix)')
    if not os.listdir(img_dir):
        raise DatasetError(f'image folder {img_dir} is empty ({where}.data_prefix)')
    absent = [n for n in names if not osp.isfile(osp.join(img_dir, n))]
    if absent:
        raise DatasetError(f'{len(absent)} of the first {len(names)} images listed in '
                           f'{listed_in} are not in {img_dir}, e.g. {absent[0]}: check '
                           f'{where}.data_prefix')


def _short(names: Sequence[str], n: int = 6) -> str:
    shown = ', '.join(repr(x) for x in list(names)[:n])
    return shown + (f', ... ({len(names)} in all)' if len(names) > n else '')


# -- segmentation ----------------------------------------------------------------------------------
def _check_seg(dataset: Dict[str, Any], cls: type, ann_file: str, prefix: Dict[str, str],
               where: str, model: Dict[str, Any]) -> None:
    img_dir = prefix.get('img_path', '')
    seg_dir = prefix.get('seg_map_path')
    if not img_dir or not _local(img_dir):
        return
    if not osp.isdir(img_dir):
        raise DatasetError(f'image folder not found: {img_dir} ({where}.data_prefix.img_path)')
    defaults = inspect.signature(cls.__init__).parameters
    img_suffix = dataset.get('img_suffix', _default(defaults, 'img_suffix', '.jpg'))
    seg_suffix = dataset.get('seg_map_suffix', _default(defaults, 'seg_map_suffix', '.png'))
    if ann_file and ann_file != dataset.get('data_root') and _local(ann_file) \
            and not osp.isdir(ann_file):
        if not osp.isfile(ann_file):
            raise DatasetError(f'split file not found: {ann_file} ({where}.ann_file)')
        with open(ann_file, encoding='utf-8') as f:
            stems = [line.strip() for line in f if line.strip()]
        if not stems:
            raise DatasetError(f'split file {ann_file} lists no images: the dataset is empty')
    else:
        stems = sorted(_relative_files(img_dir, img_suffix))
        if not stems:
            raise DatasetError(f'image folder {img_dir} holds no {img_suffix} images: the dataset '
                               f'is empty ({where}.data_prefix.img_path, img_suffix)')
    missing = [s for s in stems[:SAMPLE] if not osp.isfile(osp.join(img_dir, s + img_suffix))]
    if missing:
        raise DatasetError(f'image {osp.join(img_dir, missing[0] + img_suffix)} not found '
                           f'({where}.data_prefix.img_path)')
    if seg_dir is None or not _local(seg_dir):
        return
    if not osp.isdir(seg_dir):
        raise DatasetError(f'label folder not found: {seg_dir} '
                           f'({where}.data_prefix.seg_map_path)')
    maps = [osp.join(seg_dir, s + seg_suffix) for s in stems[:SAMPLE]]
    absent = [m for m in maps if not osp.isfile(m)]
    if absent:
        raise DatasetError(f'label map {absent[0]} not found for image '
                           f'{osp.join(img_dir, stems[maps.index(absent[0])] + img_suffix)} '
                           f'({where}.data_prefix.seg_map_path, seg_map_suffix)')
    reduce_zero = bool(dataset.get('reduce_zero_label',
                                   _default(defaults, 'reduce_zero_label', False)))
    _check_labels(maps, reduce_zero, where, model)


def _default(params: Any, name: str, fallback: Any) -> Any:
    param = params.get(name)
    if param is None or param.default is inspect.Parameter.empty:
        return fallback
    return param.default


def _relative_files(folder: str, suffix: str) -> List[str]:
    found = []
    for dirpath, _, files in os.walk(folder):
        for name in files:
            if name.endswith(suffix):
                rel = osp.relpath(osp.join(dirpath, name), folder)
                found.append(rel[:-len(suffix)])
    return found


def _check_labels(maps: List[str], reduce_zero: bool, where: str, model: Dict[str, Any]) -> None:
    head = model.get('decode_head')
    heads = head if isinstance(head, (list, tuple)) else [head]
    nums = [h.get('num_classes') for h in heads if isinstance(h, dict)]
    num = min((n for n in nums if isinstance(n, int)), default=None)
    if num is None:
        return
    import cv2
    ignore = 255
    for path in maps:
        label = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if label is None:
            raise DatasetError(f'label map {path} is not a readable image')
        if label.ndim == 3:
            raise DatasetError(f'label map {path} has {label.shape[2]} channels: label maps hold '
                               'one class index per pixel (a single-channel PNG)')
        raw = np.unique(label).astype(np.int64)
        # mmseg's LoadAnnotations: 255 is ignored; with reduce_zero_label 0 is ignored too and
        # value v is class v - 1.
        values = raw[(raw != ignore) & (raw != 0)] - 1 if reduce_zero else raw[raw != ignore]
        if values.size and values.max() >= num:
            value = int(values.max()) + (1 if reduce_zero else 0)
            raise DatasetError(
                f'label map {path} holds class value {value}, beyond decode_head.num_classes={num}'
                + (' (reduce_zero_label=True: value v is class v-1, 0 is ignored)'
                   if reduce_zero else ' (255 is ignored)')
                + f': set num_classes or fix the labels ({where})')
