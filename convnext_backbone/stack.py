"""Which OpenMMLab stack this environment holds: upstream OpenMMLab or the OneDL fork.

Both stacks install the same import names (``mmengine``, ``mmcv``, ``mmdet``, ``mmseg``,
``mmpretrain``) under different distribution names, so an environment with distributions of both
holds files of one overwritten by the other: a broken stack whose failures show up far from
their cause (upstream mmdet 3.3 asserting ``mmcv<2.2.0`` against the fork's mmcv 2.3, say).
:func:`check_stack` tells which stack is installed and refuses a mixed or missing one in one
line; ``import convnext_backbone`` runs it before anything of either stack is imported.

The distribution names come from the stacks' own packaging: upstream ``mmengine/setup.py``,
``mmcv/setup.py`` (``mmcv`` or ``mmcv-lite``), ``mmdet/setup.py``, ``mmsegmentation/setup.py``;
OneDL's ``pyproject.toml`` / ``PKG-INFO`` (``onedl-mmengine``, ``onedl-mmcv``,
``onedl-mmdetection``, ``onedl-mmsegmentation``, ``onedl-mmpretrain``).
"""
from importlib import metadata
from typing import Dict, Iterable, Mapping, Optional, Tuple

if __package__:
    from .errors import UserError
else:  # run as a script by tools/install.sh (see the end): its own folder is on sys.path
    from errors import UserError

__all__ = ['ONEDL', 'STACKS', 'UPSTREAM', 'StackError', 'check_stack', 'installed', 'stack_of']

UPSTREAM = 'openmmlab'
ONEDL = 'onedl'
#: Each stack's distributions (normalised names), its mmengine first.
STACKS: Dict[str, Tuple[str, ...]] = {
    UPSTREAM: ('mmengine', 'mmengine-lite', 'mmcv', 'mmcv-lite', 'mmdet', 'mmsegmentation',
               'mmpretrain'),
    ONEDL: ('onedl-mmengine', 'onedl-mmcv', 'onedl-mmdetection', 'onedl-mmsegmentation',
            'onedl-mmpretrain'),
}
#: What a user installs for each stack (the extras of pyproject.toml).
_EXTRA = {UPSTREAM: 'convnext-backbone[openmmlab]', ONEDL: 'convnext-backbone[onedl]'}


class StackError(UserError, ImportError):
    """The environment holds no OpenMMLab stack, or distributions of both."""


def _normalise(name: str) -> str:
    return name.lower().replace('_', '-').replace('.', '-')


def _version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def installed(dists: Optional[Iterable[Tuple[str, str]]] = None) -> Dict[str, Dict[str, str]]:
    """The distributions of each stack present in the environment.

    Args:
        dists (Iterable[tuple[str, str]], optional): (name, version) pairs to read instead of the
            environment's. Defaults to None (the installed distributions of :data:`STACKS`).

    Returns:
        dict[str, dict[str, str]]: stack name -> {distribution: version}, only stacks with at
        least one distribution present.
    """
    if dists is None:
        # each known name looked up (about 3 ms) rather than every distribution's metadata read
        # (about 65 ms with 80 installed): this runs at every import of the package
        dists = [(name, _version(name)) for names in STACKS.values() for name in names]
        dists = [(name, version) for name, version in dists if version is not None]
    found: Dict[str, Dict[str, str]] = {}
    for name, version in dists:
        name = _normalise(name)
        for stack, names in STACKS.items():
            if name in names:
                found.setdefault(stack, {})[name] = version
    return found


def stack_of(found: Mapping[str, Mapping[str, str]]) -> str:
    """The one stack of :func:`installed`'s result.

    Args:
        found (Mapping): What :func:`installed` returned.

    Returns:
        str: :data:`UPSTREAM` or :data:`ONEDL`.

    Raises:
        StackError: None or both, in one line naming the distributions and what to do.
    """
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise StackError('no OpenMMLab stack is installed (neither mmengine nor onedl-mmengine): '
                         f'pip install {_EXTRA[UPSTREAM]} (upstream OpenMMLab) or '
                         f'{_EXTRA[ONEDL]} (the OneDL fork); docs/install.md#two-stacks')
    listed = '; '.join(
        f'{stack}: ' + ', '.join(f'{name} {version}' for name, version in sorted(dists.items()))
        for stack, dists in sorted(found.items()))
    upstream = ' '.join(sorted(found[UPSTREAM]))
    onedl = ' '.join(sorted(found[ONEDL]))
    raise StackError(
        f'mixed OpenMMLab stack ({listed}): upstream and OneDL install the same modules (mmcv, '
        f'mmengine, mmdet, mmseg) over each other; keep one: pip uninstall -y {upstream} {onedl} '
        f'and then pip install {_EXTRA[UPSTREAM]} or {_EXTRA[ONEDL]} (docs/install.md#two-stacks)')


def check_stack() -> str:
    """The stack this environment holds (:func:`stack_of` of :func:`installed`).

    Raises:
        StackError: None or a mixed stack, in one line.
    """
    return stack_of(installed())


if __name__ == '__main__':
    # tools/install.sh asks which stack an environment holds before the package is installed
    # there: `python convnext_backbone/stack.py` prints 'stack:distribution' for each one found
    print(' '.join(f'{name}:{dist}' for name, dists in sorted(installed().items())
                   for dist in sorted(dists)))
