"""Reading a config: the one function that every tool and :mod:`.inference` use.

:func:`read_config` reads a config file with mmengine's ``Config.fromfile``, resolving
``convnext_backbone::``, ``mmdet::`` and ``mmseg::`` bases on either OpenMMLab stack
(:func:`enable_config_prefix`), applies ``--cfg-options``, and turns a missing file (the config
or one of its bases) into one :class:`ConfigError` line.

A user's config inherits a recipe with ``_base_ = 'convnext_backbone::<path under configs/>'``,
e.g. ``'convnext_backbone::mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'``.
``import convnext_backbone`` runs :func:`enable_config_prefix`, so a script of one's own may also
call ``Config.fromfile`` after that import.

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
from typing import TYPE_CHECKING, Optional, Tuple

from .errors import UserError
from .mim import PREFIX, config_path

if TYPE_CHECKING:
    from mmengine.config import Config

__all__ = ['ConfigError', 'enable_config_prefix', 'package_config', 'read_config']


class ConfigError(UserError, FileNotFoundError):
    """A config file, or one of its ``_base_`` files, that is not there."""


def read_config(path: str, cfg_options: Optional[dict] = None) -> 'Config':
    """Read a config, resolving the config prefixes, and apply ``--cfg-options``.

    Args:
        path (str): The config file.
        cfg_options (dict, optional): Overrides (``--cfg-options``), merged with
            ``Config.merge_from_dict``. Defaults to None.

    Returns:
        Config: The config (mmengine's).

    Raises:
        ConfigError: ``config file not found: PATH``, or ``PATH: <what is missing>`` for a
            ``_base_`` that is not there (an unknown ``convnext_backbone::`` recipe among them).
    """
    from mmengine.config import Config
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    enable_config_prefix()
    try:
        cfg = Config.fromfile(path)
    except FileNotFoundError as err:  # a _base_ that is not there
        raise ConfigError(f'{path}: {err}') from err
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


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
