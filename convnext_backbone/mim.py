"""The recipes and tools that the package carries.

A wheel (or a non-editable ``pip install``) holds them the way OpenMMLab packages do
(mmdet's ``setup.py``: ``add_mim_extension``): ``convnext_backbone/.mim/configs`` and
``convnext_backbone/.mim/tools``, copied there by ``setup.py`` at build time. A source checkout
(an editable install) uses the repository's ``configs/`` and ``tools/`` instead.
:mod:`convnext_backbone.config` resolves ``convnext_backbone::<recipe>`` bases with
:func:`config_path`; :mod:`convnext_backbone.console` runs the tools from :func:`shipped_dir`.
"""
import os.path as osp

__all__ = ['PREFIX', 'config_path', 'shipped_dir']

#: The config prefix of our recipes.
PREFIX = 'convnext_backbone::'
_PACKAGE = osp.dirname(osp.abspath(__file__))


def shipped_dir(kind: str) -> str:
    """The folder of what the package carries: ``kind`` is 'configs' or 'tools'.

    Args:
        kind (str): 'configs' or 'tools'.

    Returns:
        str: ``convnext_backbone/.mim/<kind>`` in an installed package, ``<checkout>/<kind>`` in
        a source checkout.

    Raises:
        FileNotFoundError: Neither exists (a package built without setup.py's build step).
    """
    installed = osp.join(_PACKAGE, '.mim', kind)
    if osp.isdir(installed):
        return installed
    checkout = osp.dirname(_PACKAGE)
    if osp.isfile(osp.join(checkout, 'pyproject.toml')) and osp.isdir(osp.join(checkout, kind)):
        return osp.join(checkout, kind)
    raise FileNotFoundError(f'convnext_backbone carries no {kind}: neither {installed} nor a '
                            f'source checkout around {_PACKAGE}; reinstall it from a wheel or '
                            'sdist built with its setup.py (pip install <wheel or git URL>)')


def config_path(name: str) -> str:
    """The file of recipe ``name`` (a path under ``configs/``, with or without :data:`PREFIX`).

    Raises:
        FileNotFoundError: One line naming the recipe and the folder searched.
    """
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    folder = shipped_dir('configs')
    path = osp.join(folder, name)
    if not osp.isfile(path):
        raise FileNotFoundError(f'{PREFIX}{name}: no such recipe in {folder}')
    return path
