"""Dataset checks that turn data mistakes into one line before any compute is spent.

mmdet and mmseg report a missing data folder, a broken annotation file or an empty dataset deep
in dataset construction or from a data worker (``FileNotFoundError``, ``JSONDecodeError``
without the file name, ``ValueError: need at least one array to concatenate``), a missing or
unreadable image at the iteration that loads it, and mmdet silently drops COCO annotations whose
category id the file does not define. The runner
(:class:`~convnext_backbone.engine.runner.ResumableRunner`) calls these functions, each raising
:class:`DatasetError` naming the file or folder, the config key it comes from and what to change:

0. :func:`check_paths`, when ``train()``, ``val()`` or ``test()`` starts (rank 0): the files
   and folders of every dataloader and evaluator that it will use, every problem in one line
   (so a wrong ``val_evaluator.ann_file`` is named before training, not after the first epoch).
1. :func:`check_config`, before each dataset is built (rank 0): ``data_root``, ``ann_file``
   and every ``data_prefix`` folder exist, and the folders are not empty. File-system lookups
   only.
2. :func:`explain_build_error`, when building fails: a JSON or encoding error of the annotation
   file, or an error raised while the dataset parses it, is named with the file.
3. :func:`check_built`, after the dataset is built (rank 0), on what the dataset itself parsed,
   so no annotation file is ever parsed twice:

   - any dataset: it is not empty;
   - every image file (and label map) it lists exists (one ``stat`` each), is not empty, and
     ends as a JPEG or PNG must end (a read of its last bytes); the few that do not are decoded
     as mmcv's ``LoadImageFromFile`` decodes them, and those that fail to decode are an error
     (a warning where the pipeline skips unreadable images:
     :class:`~convnext_backbone.transforms.LoadImageFromFile`);
   - COCO-style (mmdet ``CocoDataset`` and subclasses): every annotation's category id is
     defined in the file's ``categories``, the config's classes are category names of the file
     and exclude a ``_background_`` category (what labelme's COCO export writes as id 0), and
     the model's ``num_classes`` can hold them. The category list is read from the file
     without parsing the rest (:func:`read_coco_categories`: it is a few kB in a file of up to
     hundreds of MB);
   - segmentation (mmseg ``BaseSegDataset`` and subclasses): the decode head's ``num_classes``
     is the number of classes, ``reduce_zero_label`` does not drop a ``background`` class 0,
     and the first label maps are single-channel (palette PNGs read as mmseg reads them, with
     Pillow) with values that fit.

Wrappers (``ConcatDataset``, ``RepeatDataset``, ``ClassBalancedDataset``,
``MultiImageMixDataset``) are looked through; remote paths and ``backend_args`` are not checked.
"""
import json
import logging
import mmap
import os
import os.path as osp
import re
import stat
import traceback
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmengine.logging import print_log

#: How many label maps are decoded to check their values (the first ones).
SAMPLE = 5
#: Names shown per kind of problem.
SHOWN = 3
#: What a file of each format ends with: JPEG's end-of-image marker, PNG's IEND chunk.
_ENDINGS = ((b'\xff\xd8', b'\xff\xd9'), (b'\x89PNG', b'IEND\xaeB`\x82'))
_TAIL = 32  # bytes read from the end of each image
#: Category names that stand for "no object" (labelme's COCO export writes '_background_', id 0).
_BACKGROUND = ('_background_', '__background__', 'background', 'bg')
_SKIP_HINT = ("or skip them in training with dict(type='convnext_backbone.LoadImageFromFile', "
              'skip_unreadable=True) as the first transform of the train pipeline')
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


# -- 0. when a run starts -------------------------------------------------------------------------
def check_paths(entries: Sequence[Tuple[str, Any]]) -> None:
    """Check the files and folders of several dataset and evaluator configs, all at once.

    Args:
        entries (Sequence[tuple]): ``(where, config)`` pairs: a dataloader's ``dataset`` config
            (``where`` e.g. 'train_dataloader.dataset') or an evaluator config, a dict or a list
            of dicts (``where`` e.g. 'val_evaluator'), whose ``ann_file`` must exist.

    Raises:
        DatasetError: Every missing file or folder, in one line.
    """
    problems: List[str] = []
    for where, config in entries:
        if where.endswith('_evaluator'):
            problems += _evaluator_problems(config, where)
        elif isinstance(config, dict):
            problems += config_problems(config, where)
    _raise(problems)
    _warn_other_ann_file(entries)


def _raise(problems: List[str]) -> None:
    if len(problems) == 1:
        raise DatasetError(problems[0])
    if problems:
        raise DatasetError(f'{len(problems)} problems with the data of the config: '
                           + '; '.join(problems))


def _metrics(config: Any, where: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
    if isinstance(config, (list, tuple)):
        for i, item in enumerate(config):
            yield from _metrics(item, f'{where}[{i}]')
    elif isinstance(config, dict):
        if isinstance(config.get('metrics'), (list, tuple, dict)):  # dict(type='Evaluator', ...)
            yield from _metrics(config['metrics'], f'{where}.metrics')
        else:
            yield where, config


def _evaluator_problems(config: Any, where: str) -> List[str]:
    problems = []
    for metric_where, metric in _metrics(config, where):
        ann_file = metric.get('ann_file')
        if metric.get('backend_args') or not isinstance(ann_file, str) or not _local(ann_file):
            continue
        if not osp.isfile(ann_file):
            problems.append(f'annotation file not found: {ann_file} ({metric_where}.ann_file)')
    return problems


def _warn_other_ann_file(entries: Sequence[Tuple[str, Any]]) -> None:
    """Warn where an evaluator compares with another file than its dataloader's dataset reads."""
    datasets = {w.split('_')[0]: d for w, d in entries
                if not w.endswith('_evaluator') and isinstance(d, dict)}
    for where, config in entries:
        dataset = datasets.get(where.split('_')[0]) if where.endswith('_evaluator') else None
        leaves = list(_leaf_configs(dataset, '')) if dataset else []
        if len(leaves) != 1 or not leaves[0][1].get('ann_file'):
            continue
        leaf = leaves[0][1]
        ds_file = _join(leaf.get('data_root') or '', leaf['ann_file'])
        for metric_where, metric in _metrics(config, where):
            ann_file = metric.get('ann_file')
            if (isinstance(ann_file, str) and osp.isfile(ann_file) and osp.isfile(ds_file)
                    and osp.realpath(ann_file) != osp.realpath(ds_file)):
                print_log(f'{metric_where}.ann_file is {ann_file}, but the dataset of the same '
                          f'split reads {ds_file}: the metric compares the predictions with the '
                          f'annotations of {ann_file}; set {metric_where}.ann_file={ds_file} '
                          'unless that is meant', logger='current', level=logging.WARNING)


# -- 1. before building ----------------------------------------------------------------------------
def check_config(dataset: Dict[str, Any], where: str) -> None:
    """Check that the files and folders a dataset config names exist (file-system lookups only).

    Args:
        dataset (dict): The dataloader's ``dataset`` config (wrappers are looked through).
        where (str): Its config path, e.g. 'train_dataloader.dataset', for the messages.

    Raises:
        DatasetError: Every missing or empty file or folder, in one line.
    """
    _raise(config_problems(dataset, where))


def config_problems(dataset: Dict[str, Any], where: str) -> List[str]:
    """The missing or empty files and folders of a dataset config, one message each.

    Args:
        dataset (dict): A dataset config (wrappers are looked through).
        where (str): Its config path, for the messages.

    Returns:
        list[str]: The problems, in config order (empty when there are none).
    """
    problems = []
    for leaf_where, leaf in _leaf_configs(dataset, where):
        if leaf.get('backend_args'):
            continue  # remote storage
        root = leaf.get('data_root') or ''
        if root and _local(root) and not osp.isdir(root):
            problems.append(f'dataset folder not found: {root} ({leaf_where}.data_root); '
                            'download the data there or point data_root at it, e.g. '
                            f'--cfg-options {leaf_where}.data_root=/path/to/data')
            continue  # what lies under it is missing too
        ann_file = _join(root, leaf.get('ann_file') or '')
        if ann_file and ann_file != root and _local(ann_file) and not osp.exists(ann_file):
            problems.append(f'annotation file not found: {ann_file} ({leaf_where}.ann_file)')
        for key, value in (leaf.get('data_prefix') or {}).items():
            folder = _join(root, value) if isinstance(value, str) else ''
            if not folder or not _local(folder) or folder == root:
                continue
            kind = _PREFIX_KIND.get(key, 'folder')
            if not osp.isdir(folder):
                problems.append(f'{kind} not found: {folder} ({leaf_where}.data_prefix.{key})')
                continue
            with os.scandir(folder) as entries:  # one entry is enough: no full listing
                empty = next(entries, None) is None
            if empty:
                problems.append(f'{kind} {folder} is empty ({leaf_where}.data_prefix.{key})')
    return problems


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
        if isinstance(num, int) and num > len(classes):
            print_log(f'model.{name}.num_classes is {num} but {where} has {len(classes)} '
                      f'classes: {num - len(classes)} outputs are never trained; set '
                      f'num_classes={len(classes)}', logger='current', level=logging.WARNING)
    infos = _all_infos(dataset)
    _check_files([i['img_path'] for i in infos if 'img_path' in i], where,
                 f'listed in {ann_file}', dataset.data_prefix.get('img', ''),
                 f'{where}.data_prefix', _skips_unreadable(dataset))


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
    background = [c for c in categories if _is_background(c, dataset.cat_img_map)]
    listed = [str(c.get('name')) for c in background if str(c.get('name')) in classes]
    if listed:
        cat = next(c for c in background if str(c.get('name')) == listed[0])
        raise DatasetError(
            f"{listed[0]!r} is one of the classes of {where}, but in {ann_file} it is category "
            f"id {cat.get('id')} without any annotation, the background category that labelme's "
            'COCO export writes: leave it out of metainfo.classes (and of num_classes), mmdet '
            'models background themselves')
    missing = [c for c in classes if c not in names]
    if missing:
        hint = ''
        if background:
            hint = (f' (leave out {str(background[0].get("name"))!r}: it is the background '
                    "category that labelme's COCO export writes, not an object class)")
        raise DatasetError(
            f'the classes of {where} ({_short(classes)}) are not all category names of '
            f'{ann_file} (it has {_short(names)}; missing {_short(missing)}): set '
            f"{where}.metainfo=dict(classes=(...)) to the names in the file{hint} and the "
            "model's num_classes to their count")


def _is_background(category: dict, cat_img_map: Dict[Any, list]) -> bool:
    """A "no object" category: a background name, or id 0, and no annotation uses it."""
    name = str(category.get('name', '')).strip().lower()
    unused = not cat_img_map.get(category.get('id'))
    return unused and (name in _BACKGROUND or category.get('id') == 0)


# -- image files -----------------------------------------------------------------------------------
def _check_files(paths: Sequence[str], where: str, listed: str, folder: str, key: str,
                 skip: bool, kind: str = 'images') -> None:
    """Every listed file exists, is not empty and, if it is cut off, still decodes.

    Args:
        paths (Sequence[str]): The files.
        where (str): The dataset's config path.
        listed (str): Where the files come from, e.g. 'listed in ANN_FILE'.
        folder (str): Where they should be.
        key (str): The config keys to check when they are not there.
        skip (bool): The pipeline skips unreadable images.
        kind (str): What they are, for the messages. Defaults to 'images'.

    One ``stat`` and one read of the last :data:`_TAIL` bytes per file; only the files that do
    not end as their format requires are decoded (with OpenCV, as mmcv's ``LoadImageFromFile``
    does by default: ``mmcv.imfrombytes(..., backend='cv2')``).

    Raises:
        DatasetError: Missing files, or files that cannot be decoded (unless ``skip``: then a
            warning).
    """
    local = [p for p in paths if _local(p)]
    missing, unreadable, cut = [], [], []
    for path in local:
        ending = _ending(path)
        if ending == 'missing':
            missing.append(path)
        elif ending == 'empty':
            unreadable.append(path)
        elif ending == 'cut':
            (cut if _decodes(path) else unreadable).append(path)
    if missing:
        raise DatasetError(
            f'{len(missing)} of the {len(local)} {kind} {listed} are not in '
            f'{folder or osp.dirname(missing[0])}, e.g. '
            f'{", ".join(osp.basename(p) for p in missing[:SHOWN])}: check {key}')
    if unreadable:
        message = (f'{len(unreadable)} of the {len(local)} {kind} of {where} cannot be read '
                   '(empty, cut off or not an image), e.g. '
                   f'{", ".join(unreadable[:SHOWN])}')
        if not skip:
            raise DatasetError(f'{message}: replace or remove them, {_SKIP_HINT}')
        print_log(f'{message}: training skips them (skip_unreadable=True)', logger='current',
                  level=logging.WARNING)
    if cut:
        print_log(f'{len(cut)} of the {len(local)} {kind} of {where} do not end as their format '
                  f'requires (cut off, or with data after the end) but decode, maybe with a part '
                  f'missing: e.g. {", ".join(cut[:SHOWN])}', logger='current',
                  level=logging.WARNING)


def _ending(path: str) -> str:
    """'missing', 'empty', 'cut' (a JPEG or PNG without its end marker) or 'ok'."""
    try:
        info = os.stat(path)
    except OSError:
        return 'missing'
    if not stat.S_ISREG(info.st_mode):
        return 'missing'
    if info.st_size == 0:
        return 'empty'
    try:
        with open(path, 'rb') as f:
            head = f.read(8)
            f.seek(max(info.st_size - _TAIL, 0))
            tail = f.read(_TAIL)
    except OSError:
        return 'empty'
    for magic, end in _ENDINGS:
        if head.startswith(magic):
            return 'ok' if tail.rstrip(b'\x00\r\n ').endswith(end) else 'cut'
    return 'ok'


def _decodes(path: str) -> bool:
    import cv2
    try:
        with open(path, 'rb') as f:
            data = np.frombuffer(f.read(), np.uint8)
        return cv2.imdecode(data, cv2.IMREAD_COLOR) is not None
    except (OSError, cv2.error):
        return False


def _skips_unreadable(dataset: Any) -> bool:
    """Whether the dataset's pipeline skips images it cannot read (our LoadImageFromFile)."""
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None) or ()
    return any(getattr(t, 'skip_unreadable', False) for t in transforms)


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
    classes = tuple(dataset.metainfo.get('classes') or ())
    reduce_zero = bool(dataset.reduce_zero_label)
    if reduce_zero and classes and str(classes[0]).strip().lower() in _BACKGROUND:
        raise DatasetError(
            f'the first class of {where} is {classes[0]!r}, but reduce_zero_label=True ignores '
            f'label 0 and makes label 1 class 0 ({classes[0]!r}), shifting every class by one: '
            f'set {where}.reduce_zero_label=False where label 0 is the background (as labelme '
            f"writes it), or leave {classes[0]!r} out of the classes where 0 means 'ignore'")
    heads = [(n, getattr(h, 'num_classes', None)) for n, h in
             _heads(model, ('decode_head', 'auxiliary_head'))]
    for name, num in heads:
        if isinstance(num, int) and classes and num != len(classes):
            raise DatasetError(
                f'{where} has {len(classes)} classes ({_short(classes)}) but model.{name}.'
                f'num_classes is {num}: set num_classes={len(classes)} (the metric counts the '
                "dataset's classes)")
    infos = _all_infos(dataset)
    skip = _skips_unreadable(dataset)
    prefix = dataset.data_prefix
    listed = f'listed in {dataset.ann_file}' if dataset.ann_file else 'of the images found'
    _check_files([i['img_path'] for i in infos], where, listed, prefix.get('img_path', ''),
                 f'{where}.data_prefix.img_path, img_suffix', skip)
    maps = [i['seg_map_path'] for i in infos if i.get('seg_map_path')]
    _check_files(maps, where, 'that its images need', prefix.get('seg_map_path', ''),
                 f'{where}.data_prefix.seg_map_path, seg_map_suffix', False, kind='label maps')
    nums = [n for _, n in heads if isinstance(n, int)]
    if nums:
        _check_labels([m for m in maps[:SAMPLE] if _local(m)], reduce_zero, min(nums), where)


def _check_labels(maps: List[str], reduce_zero: bool, num: int, where: str) -> None:
    from PIL import Image
    ignore = 255
    for path in maps:
        # As mmseg's LoadAnnotations reads them (imdecode_backend='pillow', flag 'unchanged'):
        # a palette PNG (labelme's SegmentationClassPNG) is its palette indices.
        try:
            with Image.open(path) as image:
                label = np.asarray(image)
        except (OSError, ValueError):
            raise DatasetError(f'label map {path} is not a readable image') from None
        if label.ndim == 3:
            raise DatasetError(f'label map {path} has {label.shape[2]} channels: label maps hold '
                               'one class index per pixel (a single-channel or palette PNG)')
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


def _all_infos(dataset: Any) -> List[dict]:
    # get_data_info: data_list itself is emptied once serialised (mmengine's serialize_data)
    return [dataset.get_data_info(i) for i in range(len(dataset))]


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
