"""After building a COCO-style dataset (mmdet ``CocoDataset`` and subclasses): every
annotation's category id is defined in the file's ``categories``, the config's classes are
category names of the file and exclude a ``_background_`` category (what labelme's COCO export
writes as id 0), the model's ``num_classes`` can hold them, and the images exist and decode."""
import logging
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.logging import print_log

from .classes import heads, is_background_name
from .coco_categories import read_coco_categories
from .empty import empty_dataset
from .images import check_files, skips_unreadable
from .problems import DatasetError, short
from .walk import all_infos, is_local


def check_coco(dataset: Any, where: str, model: Optional[torch.nn.Module]) -> None:
    """Check a built COCO-style dataset (see the module docstring).

    Args:
        dataset (CocoDataset): The built dataset.
        where (str): Its config path, for the messages.
        model (nn.Module, optional): The model, whose box and mask heads' ``num_classes`` must
            hold the dataset's classes (None: not checked).

    Raises:
        DatasetError: The first problem found, in one line.
    """
    ann_file = dataset.ann_file
    if len(dataset) == 0:
        raise empty_dataset(where, dict(ann_file=ann_file, filter_cfg=dataset.filter_cfg))
    classes = tuple(dataset.metainfo.get('classes') or ())
    categories = read_coco_categories(ann_file) if is_local(ann_file) else None
    if categories is not None:
        _check_categories(dataset, where, classes, categories)
    elif len(dataset.cat_ids) < len(classes):
        raise DatasetError(f'only {len(dataset.cat_ids)} of the {len(classes)} classes of '
                           f'{where} ({short(classes)}) are category names of {ann_file}: set '
                           f'{where}.metainfo=dict(classes=(...)) to the names in the file')
    for name, head in heads(model, ('roi_head.bbox_head', 'roi_head.mask_head', 'bbox_head')):
        num = getattr(head, 'num_classes', None)
        if isinstance(num, int) and num < len(classes):
            raise DatasetError(f'{where} has {len(classes)} classes but model.{name}.num_classes '
                               f'is {num}: set num_classes={len(classes)}')
        if isinstance(num, int) and num > len(classes):
            print_log(f'model.{name}.num_classes is {num} but {where} has {len(classes)} '
                      f'classes: {num - len(classes)} outputs are never trained; set '
                      f'num_classes={len(classes)}', logger='current', level=logging.WARNING)
    infos = all_infos(dataset)
    check_files([i['img_path'] for i in infos if 'img_path' in i], where,
                f'listed in {ann_file}', dataset.data_prefix.get('img', ''),
                f'{where}.data_prefix', skips_unreadable(dataset))


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
            f'the classes of {where} ({short(classes)}) are not all category names of '
            f'{ann_file} (it has {short(names)}; missing {short(missing)}): set '
            f"{where}.metainfo=dict(classes=(...)) to the names in the file{hint} and the "
            "model's num_classes to their count")


def _is_background(category: dict, cat_img_map: Dict[Any, list]) -> bool:
    """A "no object" category: a background name, or id 0, and no annotation uses it."""
    unused = not cat_img_map.get(category.get('id'))
    return unused and (is_background_name(category.get('name', '')) or category.get('id') == 0)
