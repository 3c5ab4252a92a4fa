"""setuptools shim: everything is declared in pyproject.toml; this file adds one build step.

Non-editable builds (``pip install .``, ``pip install git+URL``, ``pip wheel .``, an sdist) copy
the repository's ``configs/`` and ``tools/`` into the package as ``convnext_backbone/.mim/configs``
and ``convnext_backbone/.mim/tools``, where OpenMMLab packages keep them (mmdet's ``setup.py``:
``add_mim_extension``), so that an installed package carries its recipes and tools
(:mod:`convnext_backbone.mim`). Editable installs copy nothing: the package uses the checkout's
folders. MANIFEST.in puts both folders into the sdist, so a wheel built from it has them too.
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
SHIPPED = ('configs', 'tools')


class BuildPyWithRecipes(build_py):
    """``build_py`` that also copies :data:`SHIPPED` into ``convnext_backbone/.mim``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        mim = os.path.join(self.build_lib, 'convnext_backbone', '.mim')
        for kind in SHIPPED:
            target = os.path.join(mim, kind)
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(os.path.join(ROOT, kind), target,
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))


setup(cmdclass={'build_py': BuildPyWithRecipes})
