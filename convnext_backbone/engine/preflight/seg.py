"""After building a segmentation dataset (mmseg ``BaseSegDataset`` and subclasses): the decode
head's ``num_classes`` is the number of classes, ``reduce_zero_label`` does not drop a
``background`` class 0, the images and label maps exist, and the first label maps are
single-channel (palette PNGs read as mmseg reads them, with Pillow) with values that fit."""
from typing import Any, List, Optional

import numpy as np
import torch

from .classes import heads, is_background_name
from .empty import empty_dataset
from .images import check_files, skips_unreadable
from .problems import DatasetError, short
from .walk import all_infos, is_local

#: How many label maps are decoded to check their values (the first ones).
SAMPLE = 5


def check_seg(dataset: Any, where: str, model: Optional[torch.nn.Module]) -> None:
    """Check a built segmentation dataset (see the module docstring).

    Args:
        dataset (BaseSegDataset): The built dataset.
        where (str): Its config path, for the messages.
        model (nn.Module, optional): The model, whose decode and auxiliary heads'
            ``num_classes`` must equal the number of classes (None: not checked).

    Raises:
        DatasetError: The first problem found, in one line.
    """
    if len(dataset) == 0:
        raise empty_dataset(where, dict(ann_file=dataset.ann_file, img_suffix=dataset.img_suffix,
                                        data_prefix=dataset.data_prefix))
    classes = tuple(dataset.metainfo.get('classes') or ())
    reduce_zero = bool(dataset.reduce_zero_label)
    if reduce_zero and classes and is_background_name(classes[0]):
        raise DatasetError(
            f'the first class of {where} is {classes[0]!r}, but reduce_zero_label=True ignores '
            f'label 0 and makes label 1 class 0 ({classes[0]!r}), shifting every class by one: '
            f'set {where}.reduce_zero_label=False where label 0 is the background (as labelme '
            f"writes it), or leave {classes[0]!r} out of the classes where 0 means 'ignore'")
    nums = [(n, getattr(h, 'num_classes', None)) for n, h in
            heads(model, ('decode_head', 'auxiliary_head'))]
    for name, num in nums:
        if isinstance(num, int) and classes and num != len(classes):
            raise DatasetError(
                f'{where} has {len(classes)} classes ({short(classes)}) but model.{name}.'
                f'num_classes is {num}: set num_classes={len(classes)} (the metric counts the '
                "dataset's classes)")
    infos = all_infos(dataset)
    skip = skips_unreadable(dataset)
    prefix = dataset.data_prefix
    listed = f'listed in {dataset.ann_file}' if dataset.ann_file else 'of the images found'
    check_files([i['img_path'] for i in infos], where, listed, prefix.get('img_path', ''),
                f'{where}.data_prefix.img_path, img_suffix', skip)
    maps = [i['seg_map_path'] for i in infos if i.get('seg_map_path')]
    check_files(maps, where, 'that its images need', prefix.get('seg_map_path', ''),
                f'{where}.data_prefix.seg_map_path, seg_map_suffix', False, kind='label maps')
    ints = [n for _, n in nums if isinstance(n, int)]
    if ints:
        _check_labels([m for m in maps[:SAMPLE] if is_local(m)], reduce_zero, min(ints), where)


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
