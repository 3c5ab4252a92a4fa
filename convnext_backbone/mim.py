"""The recipes and tools that the package carries, and the ``convnext_backbone::`` config prefix.

A wheel (or a non-editable ``pip install``) holds them the way OpenMMLab packages do
(mmdet's ``setup.py``: ``add_mim_extension``): ``convnext_backbone/.mim/configs`` and
``convnext_backbone/.mim/tools``, copied there by ``setup.py`` at build time. A source checkout
(an editable install) uses the repository's ``configs/`` and ``tools/`` instead.

A user's config inherits a recipe with ``_base_ = 'convnext_backbone::<path under configs/>'``,
e.g. ``'convnext_backbone::mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'``, once
:func:`enable_config_prefix` has run: the tools and console scripts run it before they read
a config (``convnext_backbone.cli.read_config``); a script of one's own calls it before
``Config.fromfile``.

Note:
    mmengine 0.10.7 has no public way to add a config package: ``Config._get_cfg_path``
    (mmengine/config/config.py) resolves ``pkg::path`` through ``_get_package_and_cfg_path``
    (mmengine/config/utils.py), which accepts only the packages of its ``MODULE2PACKAGE`` table
    and only paths matching ``\\w*::\\w*/`` (a folder of word characters, so none of our top-level
    recipes, nor ``convnext-v2/...``), and then tags every type of such a base with
    ``_scope_=<package>``, which would send our mmdet / mmseg types to the wrong registry. So
    :func:`enable_config_prefix` wraps that one static method for paths starting with
    ``convnext_backbone::``; every other path goes to mmengine's own resolution unchanged.
"""
import functools
import os.path as osp

__all__ = ['PREFIX', 'config_path', 'enable_config_prefix', 'shipped_dir']

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


def enable_config_prefix() -> None:
    """Let mmengine's ``Config`` resolve ``convnext_backbone::<path>`` to :func:`config_path`.

    The base is read as a local file without a ``_scope_`` of its own: our recipes name
    ``default_scope`` ('mmdet' or 'mmseg') themselves. Idempotent.
    """
    from mmengine.config import Config
    resolve = Config._get_cfg_path
    if getattr(resolve, 'convnext_backbone_prefix', False):
        return

    @functools.wraps(resolve)
    def _get_cfg_path(cfg_path: str, filename: str):
        if cfg_path.startswith(PREFIX):
            return config_path(cfg_path), None
        return resolve(cfg_path, filename)

    _get_cfg_path.convnext_backbone_prefix = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)
