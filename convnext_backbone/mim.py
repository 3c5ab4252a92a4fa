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
    ``convnext_backbone::``.

    The same method cannot find ``mmseg::`` bases on the OneDL fork: it asks whether the
    *distribution* ``mmsegmentation`` (``MODULE2PACKAGE['mmseg']``) is installed
    (``mmengine/utils/package_utils.py``: ``is_installed``), and OneDL's is called
    ``onedl-mmsegmentation`` ("mmsegmentation is not installed"; ``mmdet::`` works there only
    because the module and the distribution share the name ``mmdet``). Where mmengine's own
    resolution cannot find the package, the wrapper looks for the base where mmengine would have
    (``<module folder>/.mim/configs/<path>``, ``_get_external_cfg_base_path``) by the *module*,
    on either stack, and gives it the same scope (``mmseg``). Every other path, and every path
    mmengine resolves, goes to mmengine's own resolution unchanged.
"""
import functools
import importlib.util
import os.path as osp
from typing import Optional, Tuple

__all__ = ['PREFIX', 'config_path', 'enable_config_prefix', 'package_config', 'shipped_dir']

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


def package_config(cfg_path: str) -> Optional[Tuple[str, str]]:
    """Where an OpenMMLab package's ``scope::path`` base lies, found by its module.

    Args:
        cfg_path (str): e.g. ``'mmseg::_base_/models/upernet_r50.py'``.

    Returns:
        tuple[str, str] | None: (file, scope) when ``scope`` is an importable module that ships
        the file under ``.mim/configs``; None otherwise.
    """
    scope, sep, path = cfg_path.partition('::')
    if not sep or not scope.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(scope)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    found = osp.join(osp.dirname(spec.origin), '.mim', 'configs', path)
    return (found, scope) if osp.isfile(found) else None


def enable_config_prefix() -> None:
    """Let mmengine's ``Config`` resolve ``convnext_backbone::<path>`` to :func:`config_path`,
    and ``mmdet::`` / ``mmseg::`` bases on either OpenMMLab stack (see the module's Note).

    A ``convnext_backbone::`` base is read as a local file without a ``_scope_`` of its own: our
    recipes name ``default_scope`` ('mmdet' or 'mmseg') themselves. ``import convnext_backbone``
    runs this. Idempotent.
    """
    from mmengine.config import Config
    resolve = Config._get_cfg_path
    if getattr(resolve, 'convnext_backbone_prefix', False):
        return

    @functools.wraps(resolve)
    def _get_cfg_path(cfg_path: str, filename: str):
        if cfg_path.startswith(PREFIX):
            return config_path(cfg_path), None
        try:
            return resolve(cfg_path, filename)
        except ImportError:  # ModuleNotFoundError included
            # OneDL: the distribution is not called what MODULE2PACKAGE says
            found = package_config(cfg_path)
            if found is None:
                raise
            return found

    _get_cfg_path.convnext_backbone_prefix = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)
