"""Before a dataset is built: the files and folders its config names exist and the folders are
not empty (file-system lookups only)."""
import os
import os.path as osp
from typing import Any, Dict, List

from .problems import raise_problems
from .walk import is_local, join, leaf_configs

_PREFIX_KIND = {'img': 'image folder', 'img_path': 'image folder', 'seg': 'label folder',
                'seg_map_path': 'label folder'}


def check_config(dataset: Dict[str, Any], where: str) -> None:
    """Check that the files and folders a dataset config names exist (file-system lookups only).

    Args:
        dataset (dict): The dataloader's ``dataset`` config (wrappers are looked through).
        where (str): Its config path, e.g. 'train_dataloader.dataset', for the messages.

    Raises:
        DatasetError: Every missing or empty file or folder, in one line.
    """
    raise_problems(config_problems(dataset, where))


def config_problems(dataset: Dict[str, Any], where: str) -> List[str]:
    """The missing or empty files and folders of a dataset config, one message each.

    Args:
        dataset (dict): A dataset config (wrappers are looked through).
        where (str): Its config path, for the messages.

    Returns:
        list[str]: The problems, in config order (empty when there are none).
    """
    problems = []
    for leaf_where, leaf in leaf_configs(dataset, where):
        if leaf.get('backend_args'):
            continue  # remote storage
        root = leaf.get('data_root') or ''
        if root and is_local(root) and not osp.isdir(root):
            problems.append(f'dataset folder not found: {root} ({leaf_where}.data_root); '
                            'download the data there or point data_root at it, e.g. '
                            f'--cfg-options {leaf_where}.data_root=/path/to/data')
            continue  # what lies under it is missing too
        ann_file = join(root, leaf.get('ann_file') or '')
        if ann_file and ann_file != root and is_local(ann_file) and not osp.exists(ann_file):
            problems.append(f'annotation file not found: {ann_file} ({leaf_where}.ann_file)')
        for key, value in (leaf.get('data_prefix') or {}).items():
            folder = join(root, value) if isinstance(value, str) else ''
            if not folder or not is_local(folder) or folder == root:
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
