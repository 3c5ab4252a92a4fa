"""Dataset checks that turn data mistakes into one line before any compute is spent.

mmdet and mmseg report a missing data folder, a broken annotation file or an empty dataset deep
in dataset construction or from a data worker (``FileNotFoundError``, ``JSONDecodeError``
without the file name, ``ValueError: need at least one array to concatenate``), and mmdet
silently drops COCO annotations whose category id the file does not define. The runner
(:class:`~convnext_backbone.engine.runner.ResumableRunner`) calls three functions around each
dataloader's construction, each raising :class:`DatasetError` naming the file or folder, the
config key it comes from and what to change:

1. :func:`check_config`, before the dataset is built (rank 0): ``data_root``, ``ann_file`` and
   every ``data_prefix`` folder exist, and the folders are not empty. File-system lookups only.
2. :func:`explain_build_error`, when building fails: a JSON or encoding error of the annotation
   file, or an error raised while the dataset parses it, is named with the file.
3. :func:`check_built`, after the dataset is built (rank 0), on what the dataset itself parsed,
   so no annotation file is ever parsed twice:

   - any dataset: it is not empty;
   - COCO-style (mmdet ``CocoDataset`` and subclasses): every annotation's category id is
     defined in the file's ``categories``, the config's classes are category names of the file,
     the model's ``num_classes`` can hold them, and the first listed images exist. The category
     list is read from the file without parsing the rest (:func:`read_coco_categories`: it is
     a few kB in a file of up to hundreds of MB);
   - segmentation (mmseg ``BaseSegDataset`` and subclasses): the first label maps exist, are
     single-channel and their values fit the decode head's ``num_classes``.

Wrappers (``ConcatDataset``, ``RepeatDataset``, ``ClassBalancedDataset``,
``MultiImageMixDataset``) are looked through; remote paths and ``backend_args`` are not checked.
"""
import json
import mmap
import os
import os.path as osp
import re
import traceback
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

#: How many listed images / label maps are checked on disk (the first ones).
SAMPLE = 5
_PREFIX_KIND = {'img': 'image folder', 'img_path': 'image folder', 'seg': 'label folder',
                'seg_map_path': 'label folder'}
_PARSERS = ('load_data_list', 'parse_data_info')  # the frames that parse annotation files
_CATEGORIES = re.compile(rb'"categories"\s*:\s*\[')
_MAX_CATEGORIES_BYTES = 64 << 20


class DatasetError(ValueError):
    """A dataset of the config is missing, empty or malformed."""


# -- walking configs and datasets ------------------------------------------------------------------
def _leaf_configs(dataset: Dict[str, Any], where: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
    if isinstance(dataset.get('datasets'), (list, tuple)):
        for i, inner in enumerate(dataset['datasets']):
            yield from _leaf_configs(inner, f'{where}.datasets[{i}]')
    elif isinstance(dataset.get('dataset'), dict):
        yield from _leaf_configs(dataset['dataset'], f'{where}.dataset')
    else:
        yield where, dataset


def _leaf_datasets(dataset: Any, where: str) -> Iterator[Tuple[str, Any]]:
    inner = getattr(dataset, 'datasets', None)
    if isinstance(inner, (list, tuple)):
        for i, item in enumerate(inner):
            yield from _leaf_datasets(item, f'{where}.datasets[{i}]')
    elif isinstance(getattr(dataset, 'dataset', None), torch.utils.data.Dataset):
        yield from _leaf_datasets(dataset.dataset, f'{where}.dataset')
    else:
        yield where, dataset


def _local(path: str) -> bool:
    return '://' not in path


def _join(root: str, path: str) -> str:
    if not path:
        return root
    if osp.isabs(path) or not root or not _local(path):
        return path
    return osp.join(root, path)


def _is_instance(obj: Any, module: str, name: str) -> bool:
    try:
        cls = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, cls)


# -- 1. before building ----------------------------------------------------------------------------
def check_config(dataset: Dict[str, Any], where: str) -> None:
    """Check that the files and folders a dataset config names exist (file-system lookups only).

    Args:
        dataset (dict): The dataloader's ``dataset`` config (wrappers are looked through).
        where (str): Its config path, e.g. 'train_dataloader.dataset', for the messages.

    Raises:
        DatasetError: The first missing or empty file or folder.
    """
    for leaf_where, leaf in _leaf_configs(dataset, where):
        if leaf.get('backend_args'):
            continue  # remote storage
        root = leaf.get('data_root') or ''
        if root and _local(root) and not osp.isdir(root):
            raise DatasetError(f'dataset folder not found: {root} ({leaf_where}.data_root); '
                               'download the data there or point data_root at it, e.g. '
                               f'--cfg-options {leaf_where}.data_root=/path/to/data')
        ann_file = _join(root, leaf.get('ann_file') or '')
        if ann_file and ann_file != root and _local(ann_file) and not osp.exists(ann_file):
            raise DatasetError(f'annotation file not found: {ann_file} ({leaf_where}.ann_file)')
        for key, value in (leaf.get('data_prefix') or {}).items():
            folder = _join(root, value) if isinstance(value, str) else ''
            if not folder or not _local(folder) or folder == root:
                continue
            kind = _PREFIX_KIND.get(key, 'folder')
            if not osp.isdir(folder):
                raise DatasetError(f'{kind} not found: {folder} ({leaf_where}.data_prefix.{key})')
            with os.scandir(folder) as entries:  # one entry is enough: no full listing
                empty = next(entries, None) is None
            if empty:
                raise DatasetError(f'{kind} {folder} is empty ({leaf_where}.data_prefix.{key})')


# -- 2. when building fails ------------------------------------------------------------------------
def explain_build_error(dataset: Dict[str, Any], where: str,
                        err: BaseException) -> Optional[DatasetError]:
    """Name the annotation file or folder behind an error raised while a dataset was built.

    Args:
        dataset (dict): The dataset config that failed to build.
        where (str): Its config path.
        err (BaseException): What building raised.

    Returns:
        DatasetError | None: The explanation, or None when the error did not come from reading
        the data (then re-raise ``err``).
    """
    leaves = list(_leaf_configs(dataset, where))
    frames = [frame.name for frame in traceback.extract_tb(err.__traceback__)]
    if isinstance(err, ValueError) and '_serialize_data' in frames:
        # mmengine's BaseDataset concatenates the parsed items: nothing to concatenate
        return _empty(*leaves[0]) if len(leaves) == 1 else DatasetError(
            f'a dataset of {where} is empty: {err}')
    files = [(w, _join(d.get('data_root') or '', d.get('ann_file') or ''))
             for w, d in leaves if d.get('ann_file')]
    if not files:
        return None
    leaf_where, ann_file = files[0]
    if len(files) > 1:
        ann_file, leaf_where = 'one of ' + ', '.join(f for _, f in files), where
    if isinstance(err, json.JSONDecodeError):
        return DatasetError(f'annotation file {ann_file} is not valid JSON: {err.msg} at line '
                            f'{err.lineno} column {err.colno} ({leaf_where}.ann_file)')
    if isinstance(err, UnicodeDecodeError):
        return DatasetError(f'annotation file {ann_file} is not UTF-8 text ({err.reason} at '
                            f'byte {err.start}) ({leaf_where}.ann_file)')
    if isinstance(err, (KeyError, TypeError, ValueError, IndexError, AssertionError)) \
            and any(name in _PARSERS for name in frames):
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ''
        return DatasetError(f'annotation file {ann_file} could not be parsed '
                            f'({type(err).__name__}: {detail}); is it in the format '
                            f'{leaf_where}.type expects? ({leaf_where}.ann_file)')
    return None


def _empty(where: str, dataset: Dict[str, Any]) -> DatasetError:
    root = dataset.get('data_root') or ''
    ann_file = _join(root, dataset.get('ann_file') or '')
    if ann_file and ann_file != root and ann_file.endswith('.json'):
        filtering = (dataset.get('filter_cfg') or {}).get('filter_empty_gt')
        return DatasetError(
            f'annotation file {ann_file} lists no images: the dataset is empty'
            + (" (or none of its images has an annotation of the config's classes, and "
               f'{where}.filter_cfg.filter_empty_gt drops such images)' if filtering else ''))
    if ann_file and ann_file != root:
        return DatasetError(f'split file {ann_file} lists no images: the dataset is empty '
                            f'({where}.ann_file)')
    prefix = dataset.get('data_prefix') or {}
    folder = _join(root, prefix.get('img_path', prefix.get('img', '')))
    suffix = dataset.get('img_suffix') or _default_arg(dataset.get('type'), 'img_suffix')
    return DatasetError(f'image folder {folder} holds no {suffix or "matching"} images: the '
                        f'dataset is empty ({where}.data_prefix, img_suffix)')


def _default_arg(type_name: Any, name: str) -> Any:
    """The default of argument ``name`` of the registered dataset class ``type_name``."""
    import inspect

    from mmengine.registry import DATASETS
    try:
        cls = type_name if isinstance(type_name, type) else DATASETS.get(type_name)
        return inspect.signature(cls.__init__).parameters[name].default
    except (KeyError, TypeError, AttributeError, ValueError):
        return None


# -- 3. after building -----------------------------------------------------------------------------
def check_built(dataset: Any, where: str, model: Optional[torch.nn.Module] = None) -> None:
    """Check what a built dataset parsed (see the module docstring).

    Args:
        dataset (Dataset): The built dataset (wrappers are looked through).
        where (str): Its config path, for the messages.
        model (nn.Module, optional): The model, whose heads' ``num_classes`` must hold the
            dataset's classes. Defaults to None (not checked).

    Raises:
        DatasetError: The first problem found, in one line.
    """
    for leaf_where, leaf in _leaf_datasets(dataset, where):
        if getattr(leaf, 'backend_args', None):
            continue
        if _is_instance(leaf, 'mmdet.datasets', 'CocoDataset'):
            _check_coco(leaf, leaf_where, model)
        elif _is_instance(leaf, 'mmseg.datasets', 'BaseSegDataset'):
            _check_seg(leaf, leaf_where, model)
        elif len(leaf) == 0:
            raise DatasetError(f'{leaf_where} is empty ({type(leaf).__name__})')


def _check_coco(dataset: Any, where: str, model: Optional[torch.nn.Module]) -> None:
    ann_file = dataset.ann_file
    if len(dataset) == 0:
        raise _empty(where, dict(ann_file=ann_file, filter_cfg=dataset.filter_cfg))
    classes = tuple(dataset.metainfo.get('classes') or ())
    categories = read_coco_categories(ann_file) if _local(ann_file) else None
    if categories is not None:
        _check_categories(dataset, where, classes, categories)
    elif len(dataset.cat_ids) < len(classes):
        raise DatasetError(f'only {len(dataset.cat_ids)} of the {len(classes)} classes of '
                           f'{where} ({_short(classes)}) are category names of {ann_file}: set '
                           f'{where}.metainfo=dict(classes=(...)) to the names in the file')
    for name, head in _heads(model, ('roi_head.bbox_head', 'roi_head.mask_head', 'bbox_head')):
        num = getattr(head, 'num_classes', None)
        if isinstance(num, int) and num < len(classes):
            raise DatasetError(f'{where} has {len(classes)} classes but model.{name}.num_classes '
                               f'is {num}: set num_classes={len(classes)}')
    paths = [info['img_path'] for info in _first_infos(dataset) if 'img_path' in info]
    absent = [p for p in paths if _local(p) and not osp.isfile(p)]
    if absent:
        folder = dataset.data_prefix.get('img', '')
        raise DatasetError(f'{len(absent)} of the first {len(paths)} images listed in {ann_file} '
                           f'are not in {folder}, e.g. {osp.basename(absent[0])}: check '
                           f'{where}.data_prefix')


def _check_categories(dataset: Any, where: str, classes: Tuple[str, ...],
                      categories: List[dict]) -> None:
    ann_file = dataset.ann_file
    names = [str(c.get('name')) for c in categories]
    defined = {c.get('id') for c in categories}
    unknown = sorted((cat for cat, imgs in dataset.cat_img_map.items()
                      if imgs and cat not in defined), key=str)
    if unknown:
        count = sum(len(dataset.cat_img_map[cat]) for cat in unknown)
        raise DatasetError(
            f'annotations in {ann_file} use category ids {unknown[:10]} that its "categories" '
            f'do not define (defined: {sorted(defined, key=str)[:20]}): {count} such '
            f'annotation(s), the first on image id {dataset.cat_img_map[unknown[0]][0]}; mmdet '
            'would drop them silently')
    missing = [c for c in classes if c not in names]
    if missing:
        raise DatasetError(
            f'the classes of {where} ({_short(classes)}) are not all category names of '
            f'{ann_file} (it has {_short(names)}; missing {_short(missing)}): set '
            f"{where}.metainfo=dict(classes=(...)) to the names in the file and the model's "
            'num_classes to their count')


def read_coco_categories(path: str) -> Optional[List[dict]]:
    """The ``categories`` list of a COCO annotation file, without parsing the rest.

    The file is memory-mapped and searched for the ``"categories": [`` key (from the end: COCO
    writes it last); only the list itself is decoded.

    Args:
        path (str): A local COCO annotation file.

    Returns:
        list[dict] | None: The categories (each with ``id`` and ``name``), or None when they
        cannot be found this way.
    """
    try:
        with open(path, 'rb') as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            starts = [m.end() - 1 for m in _CATEGORIES.finditer(data)]
            decoder = json.JSONDecoder()
            for start in reversed(starts):
                found = _decode_list(data, start, decoder)
                if found is not None:
                    return found
    except (OSError, ValueError):
        return None
    return None


def _decode_list(data: mmap.mmap, start: int, decoder: json.JSONDecoder) -> Optional[List[dict]]:
    size = 1 << 16
    while True:
        chunk = data[start:start + size].decode('utf-8', errors='replace')
        try:
            value, _ = decoder.raw_decode(chunk)
        except json.JSONDecodeError:
            if start + size >= len(data) or size >= _MAX_CATEGORIES_BYTES:
                return None
            size *= 4
            continue
        ok = isinstance(value, list) and all(isinstance(c, dict) and 'id' in c and 'name' in c
                                             for c in value)
        return value if ok else None


def _check_seg(dataset: Any, where: str, model: Optional[torch.nn.Module]) -> None:
    if len(dataset) == 0:
        raise _empty(where, dict(ann_file=dataset.ann_file, img_suffix=dataset.img_suffix,
                                 data_prefix=dataset.data_prefix))
    infos = _first_infos(dataset)
    missing = [i['img_path'] for i in infos if _local(i['img_path'])
               and not osp.isfile(i['img_path'])]
    if missing:
        raise DatasetError(f'image {missing[0]} not found ({where}.data_prefix.img_path)')
    maps = [(i['seg_map_path'], i['img_path']) for i in infos
            if i.get('seg_map_path') and _local(i['seg_map_path'])]
    for label_map, image in maps:
        if not osp.isfile(label_map):
            raise DatasetError(f'label map {label_map} not found for image {image} '
                               f'({where}.data_prefix.seg_map_path, seg_map_suffix)')
    heads = [getattr(h, 'num_classes', None) for _, h in _heads(model, ('decode_head',))]
    nums = [n for n in heads if isinstance(n, int)]
    if nums:
        _check_labels([m for m, _ in maps], bool(dataset.reduce_zero_label), min(nums), where)


def _check_labels(maps: List[str], reduce_zero: bool, num: int, where: str) -> None:
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


def _first_infos(dataset: Any) -> List[dict]:
    # get_data_info: data_list itself is emptied once serialised (mmengine's serialize_data)
    return [dataset.get_data_info(i) for i in range(min(SAMPLE, len(dataset)))]


def _heads(model: Optional[torch.nn.Module],
           names: Sequence[str]) -> Iterator[Tuple[str, torch.nn.Module]]:
    """(name, head) for each head of ``model`` at the dotted ``names`` (lists unrolled)."""
    for name in names:
        obj: Any = model
        for part in name.split('.'):
            obj = getattr(obj, part, None)
        for head in obj if isinstance(obj, (list, tuple, torch.nn.ModuleList)) else [obj]:
            if head is not None:
                yield name, head


def _short(names: Sequence[str], n: int = 6) -> str:
    shown = ', '.join(repr(x) for x in list(names)[:n])
    return shown + (f', ... ({len(names)} in all)' if len(names) > n else '')
