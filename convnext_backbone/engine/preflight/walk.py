"""Finding what the checks look at: the leaves of wrapped dataset configs and datasets
(``ConcatDataset``, ``RepeatDataset``, ``ClassBalancedDataset``, ``MultiImageMixDataset``), the
items a dataset parsed, and where a config's relative paths lead."""
import os.path as osp
from typing import Any, Dict, Iterator, List, Tuple

import torch


def leaf_configs(dataset: Dict[str, Any], where: str) -> Iterator[Tuple[str, Dict[str, Any]]]:
    """The dataset configs inside a (possibly wrapped) dataset config.

    Args:
        dataset (dict): A dataset config.
        where (str): Its config path, e.g. 'train_dataloader.dataset'.

    Yields:
        tuple[str, dict]: ``(config path, config)`` of each dataset that wraps none.
    """
    if isinstance(dataset.get('datasets'), (list, tuple)):
        for i, inner in enumerate(dataset['datasets']):
            yield from leaf_configs(inner, f'{where}.datasets[{i}]')
    elif isinstance(dataset.get('dataset'), dict):
        yield from leaf_configs(dataset['dataset'], f'{where}.dataset')
    else:
        yield where, dataset


def leaf_datasets(dataset: Any, where: str) -> Iterator[Tuple[str, Any]]:
    """The datasets inside a (possibly wrapped) built dataset.

    Args:
        dataset (Dataset): A built dataset.
        where (str): Its config path.

    Yields:
        tuple[str, Dataset]: ``(config path, dataset)`` of each dataset that wraps none.
    """
    inner = getattr(dataset, 'datasets', None)
    if isinstance(inner, (list, tuple)):
        for i, item in enumerate(inner):
            yield from leaf_datasets(item, f'{where}.datasets[{i}]')
    elif isinstance(getattr(dataset, 'dataset', None), torch.utils.data.Dataset):
        yield from leaf_datasets(dataset.dataset, f'{where}.dataset')
    else:
        yield where, dataset


def all_infos(dataset: Any) -> List[dict]:
    """Every item a built dataset parsed (``get_data_info``: ``data_list`` itself is emptied once
    mmengine serialises it).

    Args:
        dataset (BaseDataset): A built mmengine dataset.

    Returns:
        list[dict]: One dict per item, with e.g. ``img_path``.
    """
    return [dataset.get_data_info(i) for i in range(len(dataset))]


def is_local(path: str) -> bool:
    """Whether ``path`` is on the local file system (not a URL such as ``s3://...``)."""
    return '://' not in path


def join(root: str, path: str) -> str:
    """``path`` under the config's ``data_root`` as mmengine joins them.

    Args:
        root (str): The ``data_root`` ('' for none).
        path (str): A path of the config, relative to ``root`` unless absolute or remote.

    Returns:
        str: The joined path (``root`` for an empty ``path``).
    """
    if not path:
        return root
    if osp.isabs(path) or not root or not is_local(path):
        return path
    return osp.join(root, path)


def is_instance(obj: Any, module: str, name: str) -> bool:
    """``isinstance(obj, module.name)``, False where that module is not installed.

    Args:
        obj (Any): The object.
        module (str): E.g. 'mmdet.datasets'.
        name (str): A class of it, e.g. 'CocoDataset'.

    Returns:
        bool: Whether ``obj`` is one.
    """
    try:
        cls = getattr(__import__(module, fromlist=[name]), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, cls)
