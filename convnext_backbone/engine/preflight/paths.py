"""When a run starts: the files and folders of every dataloader and evaluator it will use, all
problems in one line (so a wrong ``val_evaluator.ann_file`` is named before training, not after
the first epoch), and a warning where an evaluator reads another annotation file than its
dataset."""
import logging
import os.path as osp
from typing import Any, Dict, Iterator, List, Sequence, Tuple

from mmengine.logging import print_log

from .config import config_problems
from .problems import raise_problems
from .walk import is_local, join, leaf_configs


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
    raise_problems(problems)
    _warn_other_ann_file(entries)


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
        if metric.get('backend_args') or not isinstance(ann_file, str) or not is_local(ann_file):
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
        leaves = list(leaf_configs(dataset, '')) if dataset else []
        if len(leaves) != 1 or not leaves[0][1].get('ann_file'):
            continue
        leaf = leaves[0][1]
        ds_file = join(leaf.get('data_root') or '', leaf['ann_file'])
        for metric_where, metric in _metrics(config, where):
            ann_file = metric.get('ann_file')
            if (isinstance(ann_file, str) and osp.isfile(ann_file) and osp.isfile(ds_file)
                    and osp.realpath(ann_file) != osp.realpath(ds_file)):
                print_log(f'{metric_where}.ann_file is {ann_file}, but the dataset of the same '
                          f'split reads {ds_file}: the metric compares the predictions with the '
                          f'annotations of {ann_file}; set {metric_where}.ann_file={ds_file} '
                          'unless that is meant', logger='current', level=logging.WARNING)
