"""Image files and label maps a dataset lists: present, not empty, and decodable when cut off."""
import logging
import os
import os.path as osp
import stat
from typing import Any, Sequence

import numpy as np
from mmengine.logging import print_log

from .problems import DatasetError
from .walk import is_local

#: Names shown per kind of problem.
SHOWN = 3
#: What a file of each format ends with: JPEG's end-of-image marker, PNG's IEND chunk.
_ENDINGS = ((b'\xff\xd8', b'\xff\xd9'), (b'\x89PNG', b'IEND\xaeB`\x82'))
_TAIL = 32  # bytes read from the end of each image
_SKIP_HINT = ("or skip them in training with dict(type='convnext_backbone.LoadImageFromFile', "
              'skip_unreadable=True) as the first transform of the train pipeline')


def check_files(paths: Sequence[str], where: str, listed: str, folder: str, key: str,
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
    local = [p for p in paths if is_local(p)]
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


def skips_unreadable(dataset: Any) -> bool:
    """Whether the dataset's pipeline skips images it cannot read (our LoadImageFromFile).

    Args:
        dataset (BaseDataset): A built dataset.

    Returns:
        bool: Whether a transform of its pipeline has ``skip_unreadable=True``.
    """
    transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None) or ()
    return any(getattr(t, 'skip_unreadable', False) for t in transforms)


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
