"""Plot loss, learning rate and mAP/mIoU curves of a training run to a PNG.

Usage:
    python tools/plot_logs.py WORK_DIR [--out PNG]

Reads mmengine's ``WORK_DIR/<timestamp>/vis_data/scalars.json``. The latest run is plotted; when
it was resumed (its first logged iteration is past the start), the earlier runs it continues are
read too, and for iterations logged by several runs the latest run wins. Without ``--out`` the
picture goes to ``WORK_DIR/curves.png``.
"""
import argparse
import json
import os
import os.path as osp
import re
from typing import Dict, List, Optional, Sequence, Tuple

from convnext_backbone import errors

# The metrics plotted: mmdet's COCO mAPs, mmseg's mIoU, any other '*mAP'.
_METRIC = re.compile(r'(^|/)(bbox_mAP|segm_mAP|mAP|mIoU)$')

Record = Dict[str, float]


def find_runs(work_dir: str) -> List[str]:
    """``scalars.json`` files of the runs in ``work_dir``, oldest first.

    Raises:
        ToolExit: When ``work_dir`` is missing or has no ``*/vis_data/scalars.json`` (one line,
            exit status 1).
    """
    if not osp.isdir(work_dir):
        errors.fail(f'work dir not found: {work_dir}', code=1)
    runs = []
    for name in sorted(os.listdir(work_dir)):
        path = osp.join(work_dir, name, 'vis_data', 'scalars.json')
        if osp.isfile(path) and osp.getsize(path) > 0:
            runs.append(path)
    if not runs:
        errors.fail(f'no */vis_data/scalars.json in {work_dir}: has training logged anything '
                    'yet? (mmengine writes it every log_interval iterations)', code=1)
    return runs


def read_scalars(path: str) -> Tuple[List[Record], List[Record]]:
    """Split one ``scalars.json`` into training records (with 'iter') and validation records.

    Lines that are not JSON (e.g. cut off by a crash) are skipped.
    """
    train, val = [], []
    with open(path, encoding='utf-8') as f:
        for line in f:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(record, dict):
                continue
            (train if 'iter' in record else val).append(record)
    return train, val


def load_history(work_dir: str) -> Tuple[List[Record], List[Record], List[str]]:
    """Records of the latest run and of the runs it resumed from.

    Returns:
        tuple: (train records sorted by iteration, validation records sorted by step,
        the scalars.json files used, oldest first).
    """
    runs = find_runs(work_dir)
    chain: List[Tuple[str, List[Record], List[Record]]] = []
    for path in reversed(runs):
        train, val = read_scalars(path)
        first = min((r['iter'] for r in train), default=None)
        started_fresh = first is None or first <= _log_interval(train)
        if chain:
            start = min((r['iter'] for r in chain[-1][1]), default=None)
            # keep only what the later run had not redone
            train = [r for r in train if start is None or r['iter'] < start]
            val_start = min((r['step'] for r in chain[-1][2]), default=None)
            val = [r for r in val if val_start is None or r['step'] < val_start]
        chain.append((path, train, val))
        if started_fresh:
            break
    used = [path for path, _, _ in reversed(chain)]
    train = sorted((r for _, t, _ in chain for r in t), key=lambda r: r['iter'])
    val = sorted((r for _, _, v in chain for r in v), key=lambda r: r['step'])
    return train, val, used


def _log_interval(train: List[Record]) -> float:
    iters = sorted(r['iter'] for r in train)
    gaps = [b - a for a, b in zip(iters, iters[1:]) if b > a]
    return min(gaps) if gaps else (iters[0] if iters else 1)


def plot(train: List[Record], val: List[Record], out: str, title: str = '') -> List[str]:
    """Draw loss, lr and validation metric panels to ``out``.

    Returns:
        list[str]: The metric names drawn.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    loss_keys = sorted({k for r in train for k in r if 'loss' in k},
                       key=lambda k: (k != 'loss', k))
    metric_keys = sorted({k for r in val for k in r if _METRIC.search(k)})
    # mmengine logs validation at step=epoch (log_metric_by_epoch, the default for epoch-based
    # loops) or step=iteration: call it epochs when the steps do not pass the last epoch.
    last_epoch = max((r['epoch'] for r in train if 'epoch' in r), default=0)
    by_epoch = bool(val) and max(r['step'] for r in val) <= last_epoch
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    for key in loss_keys:
        xs = [r['iter'] for r in train if key in r]
        ys = [r[key] for r in train if key in r]
        ax.plot(xs, ys, label=key, linewidth=2 if key == 'loss' else 0.8)
    ax.set(title='training loss', xlabel='iteration')
    if loss_keys:
        ax.legend(fontsize=7)
    ax = axes[1]
    lr = [(r['iter'], r['lr']) for r in train if 'lr' in r]
    if lr:
        ax.plot(*zip(*lr))
    ax.set(title='learning rate', xlabel='iteration')
    ax.ticklabel_format(axis='y', style='sci', scilimits=(-3, 3))
    ax = axes[2]
    for key in metric_keys:
        points = [(r['step'], r[key]) for r in val if key in r]
        ax.plot(*zip(*points), marker='o', label=key)
    ax.set(title='validation', xlabel='epoch' if by_epoch else 'iteration')
    if metric_keys:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, 'no validation results yet', ha='center', va='center',
                transform=ax.transAxes)
    for ax in axes:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return metric_keys


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('work_dir', help='the training work dir (holds <timestamp>/vis_data)')
    parser.add_argument('--out', help='output PNG (default WORK_DIR/curves.png)')
    args = parser.parse_args(argv)
    train, val, used = load_history(args.work_dir)
    if not train and not val:
        errors.fail(f'{used[-1]} holds no scalars yet', code=1)
    out = args.out or osp.join(args.work_dir, 'curves.png')
    metrics = plot(train, val, out, title=osp.basename(osp.normpath(args.work_dir)))
    last = train[-1] if train else {}
    summary = [f'{len(used)} run(s)', f'{len(train)} training points']
    if 'loss' in last:
        summary.append(f'last loss {last["loss"]:.4f} at iteration {int(last["iter"])}')
    for key in metrics:
        best = max((r for r in val if key in r), key=lambda r: r[key])
        summary.append(f'best {key} {best[key]:.4g} at step {int(best["step"])}')
    print(f'{out}: ' + ', '.join(summary))


if __name__ == '__main__':
    main()
