"""What to say when a dataset is empty: which file or folder lists no images, and why."""
import inspect
from typing import Any, Dict

from .problems import DatasetError
from .walk import join


def empty_dataset(where: str, dataset: Dict[str, Any]) -> DatasetError:
    """The error for an empty dataset, naming its annotation file, split file or image folder.

    Args:
        where (str): The dataset's config path.
        dataset (dict): Its config, or the same keys read from the built dataset
            (``data_root``, ``ann_file``, ``filter_cfg``, ``data_prefix``, ``img_suffix``,
            ``type``; missing ones count as unset).

    Returns:
        DatasetError: The error to raise.
    """
    root = dataset.get('data_root') or ''
    ann_file = join(root, dataset.get('ann_file') or '')
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
    folder = join(root, prefix.get('img_path', prefix.get('img', '')))
    suffix = dataset.get('img_suffix') or _default_arg(dataset.get('type'), 'img_suffix')
    return DatasetError(f'image folder {folder} holds no {suffix or "matching"} images: the '
                        f'dataset is empty ({where}.data_prefix, img_suffix)')


def _default_arg(type_name: Any, name: str) -> Any:
    """The default of argument ``name`` of the registered dataset class ``type_name``."""
    from mmengine.registry import DATASETS
    try:
        cls = type_name if isinstance(type_name, type) else DATASETS.get(type_name)
        return inspect.signature(cls.__init__).parameters[name].default
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
