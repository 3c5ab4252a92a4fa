"""After a dataset is built: what the dataset itself parsed is checked, so no annotation file is
ever parsed twice (COCO-style datasets by :mod:`.coco`, segmentation datasets by :mod:`.seg`;
any other dataset must not be empty)."""
from typing import Any, Optional

import torch

from .coco import check_coco
from .problems import DatasetError
from .seg import check_seg
from .walk import is_instance, leaf_datasets


def check_built(dataset: Any, where: str, model: Optional[torch.nn.Module] = None) -> None:
    """Check what a built dataset parsed (see :mod:`convnext_backbone.engine.preflight`).

    Args:
        dataset (Dataset): The built dataset (wrappers are looked through).
        where (str): Its config path, for the messages.
        model (nn.Module, optional): The model, whose heads' ``num_classes`` must hold the
            dataset's classes. Defaults to None (not checked).

    Raises:
        DatasetError: The first problem found, in one line.
    """
    for leaf_where, leaf in leaf_datasets(dataset, where):
        if getattr(leaf, 'backend_args', None):
            continue
        if is_instance(leaf, 'mmdet.datasets', 'CocoDataset'):
            check_coco(leaf, leaf_where, model)
        elif is_instance(leaf, 'mmseg.datasets', 'BaseSegDataset'):
            check_seg(leaf, leaf_where, model)
        elif len(leaf) == 0:
            raise DatasetError(f'{leaf_where} is empty ({type(leaf).__name__})')
