"""Data transforms: mmcv's ``LoadImageFromFile`` that can skip the images it cannot read.

Select it in a pipeline as ``dict(type='convnext_backbone.LoadImageFromFile',
skip_unreadable=True)`` (its other arguments are mmcv's). The dataset checks of
:mod:`convnext_backbone.engine.preflight` name unreadable images before training; with this
option they warn instead, and training goes on without them.
"""
import logging
from typing import Any, Optional

from mmcv.transforms import LoadImageFromFile as MMCVLoadImageFromFile
from mmengine.logging import print_log

from .registry import TRANSFORMS


@TRANSFORMS.register_module()
class LoadImageFromFile(MMCVLoadImageFromFile):
    """mmcv's ``LoadImageFromFile``, optionally skipping images it cannot read.

    Args:
        *args: mmcv's arguments (``to_float32``, ``color_type``, ``imdecode_backend``, ...).
        skip_unreadable (bool): Return None for a missing, empty, cut-off or undecodable image
            instead of failing, with a warning naming it. mmengine's ``BaseDataset`` then
            trains on another image of the dataset in its place (``max_refetch``); in test
            mode it raises, so use it in training pipelines only. Defaults to False (fail, as
            mmcv does).
        **kwargs: mmcv's keyword arguments (``backend_args``, ...).

    Note:
        mmcv's own ``ignore_empty=True`` returns None only when reading raises; an image that
        reads but does not decode (``imfrombytes`` returns None, e.g. a cut-off JPEG) still
        fails its ``assert img is not None`` (``mmcv/transforms/loading.py``).
    """

    def __init__(self, *args: Any, skip_unreadable: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_unreadable = bool(skip_unreadable)
        self.skipped = 0

    def transform(self, results: dict) -> Optional[dict]:
        """Load ``results['img_path']``; None for an unreadable image with ``skip_unreadable``."""
        if not self.skip_unreadable:
            return super().transform(results)
        try:
            return super().transform(results)
        except Exception as err:  # noqa: BLE001 - only reading and decoding happen in there
            self.skipped += 1
            cause = str(err).strip().splitlines()[0] if str(err).strip() else ''
            print_log(f"skipped unreadable image {results.get('img_path')} "
                      f'({type(err).__name__}: {cause}); {self.skipped} skipped so far in this '
                      'process', logger='current', level=logging.WARNING)
            return None

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', skip_unreadable={self.skip_unreadable})'
