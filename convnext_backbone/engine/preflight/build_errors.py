"""When building a dataset fails: a JSON or encoding error of the annotation file, an empty
dataset, or an error raised while the dataset parses the file, named with the file."""
import json
import traceback
from typing import Any, Dict, Optional

from .empty import empty_dataset
from .problems import DatasetError
from .walk import join, leaf_configs

_PARSERS = ('load_data_list', 'parse_data_info')  # the frames that parse annotation files


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
    leaves = list(leaf_configs(dataset, where))
    frames = [frame.name for frame in traceback.extract_tb(err.__traceback__)]
    if isinstance(err, ValueError) and '_serialize_data' in frames:
        # mmengine's BaseDataset concatenates the parsed items: nothing to concatenate
        return empty_dataset(*leaves[0]) if len(leaves) == 1 else DatasetError(
            f'a dataset of {where} is empty: {err}')
    files = [(w, join(d.get('data_root') or '', d.get('ann_file') or ''))
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
