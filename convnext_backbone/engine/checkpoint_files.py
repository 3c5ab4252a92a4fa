"""The checkpoint files of a run: written atomically, and the one to resume from found reliably.

- :func:`atomic_target` is how every checkpoint is written: to a hidden ``.NAME.partial`` file
  beside the target, flushed to disk (fsync) and renamed over the target with ``os.replace``
  (atomic on POSIX and Windows). A crash while saving leaves the previous checkpoint intact and
  never a partial file under a checkpoint name.
- :func:`find_resumable_checkpoint` is what ``--resume`` without a path continues from: the
  newest complete checkpoint, which is the file named in ``last_checkpoint`` unless that one is
  missing or cut off, or a kill came between a checkpoint's rename and the pointer's update.
"""
import contextlib
import logging
import os
import re
from typing import Iterator, Optional

from mmengine.logging import print_log

from ..checkpoint import is_complete_checkpoint

PARTIAL_SUFFIX = '.partial'
_CKPT_NAME = re.compile(r'^(epoch|iter)_(\d+)\.pth$')


@contextlib.contextmanager
def atomic_target(target: str) -> Iterator[str]:
    """Write ``target`` atomically: yields the path to write to instead.

    On leaving the context without an error, the written file is fsynced and renamed over
    ``target``, then the folder is fsynced. The partial file never survives the context.

    Args:
        target (str): The final file path.

    Yields:
        str: ``<folder>/.<name>.partial``, the path to write.
    """
    folder, name = os.path.split(target)
    partial = os.path.join(folder, f'.{name}{PARTIAL_SUFFIX}')
    try:
        yield partial
        with open(partial, 'rb') as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
        _fsync_dir(folder)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def _fsync_dir(folder: str) -> None:
    if os.name != 'posix':  # directories cannot be opened for fsync on Windows
        return
    try:
        fd = os.open(folder or '.', os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some network file systems refuse fsync on folders: the rename stands
        pass
    finally:
        os.close(fd)


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint that ``--resume`` (without a path) should continue from.

    The newest complete one (by modification time, then iteration) among the file named in
    ``WORK_DIR/last_checkpoint`` and the ``epoch_N.pth`` / ``iter_N.pth`` files in its folder and
    the work dir. That is the named file unless it is missing or cut off, or a process was killed
    after a checkpoint's atomic rename and before ``CheckpointHook`` updated the pointer; either
    case is logged as a warning.

    Args:
        work_dir (str): The run's work dir.

    Returns:
        str | None: A checkpoint path, or None when there is nothing to resume from.
    """
    pointer = os.path.join(work_dir, 'last_checkpoint')
    named = ''
    if os.path.isfile(pointer):
        with open(pointer, encoding='utf-8') as f:
            named = f.read().strip()
    folders = [work_dir]
    if named and os.path.dirname(named) not in folders:
        folders.insert(0, os.path.dirname(named))
    # (mtime, is the named file, step, path): the newest wins, the named file on a tie
    candidates = []
    named_complete = bool(named) and is_complete_checkpoint(named)
    if named_complete:
        candidates.append((os.path.getmtime(named), True, 0, named))
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            match = _CKPT_NAME.match(name)
            path = os.path.join(folder, name)
            if match and not _same_file(path, named) and is_complete_checkpoint(path):
                candidates.append((os.path.getmtime(path), False, int(match.group(2)), path))
    if not candidates:
        if named:
            print_log(f'last_checkpoint names {named}, which is missing or incomplete, and no '
                      f'other complete checkpoint is in {work_dir}', logger='current',
                      level=logging.WARNING)
        return None
    found = max(candidates)[3]
    if found == named:
        return found
    if named_complete:
        why = (f'{found} is newer than {named}, which last_checkpoint names (the run was stopped '
               'between writing the checkpoint and updating the pointer)')
    elif named:
        why = f'last_checkpoint names {named}, which is missing or incomplete'
    else:
        why = f'{pointer} is missing or empty'
    print_log(f'{why}; resuming from the newest complete checkpoint {found}', logger='current',
              level=logging.WARNING)
    return found


def _same_file(path: str, other: str) -> bool:
    return bool(other) and os.path.abspath(path) == os.path.abspath(other)
