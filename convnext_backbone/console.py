"""The console scripts of the installed package: each runs one of the tools it carries.

``[project.scripts]`` in pyproject.toml is the one list of them: every script there points at
:func:`main`, which runs the tool its own name stands for (:func:`tool_file`), from the tools
the package carries (:func:`convnext_backbone.mim.shipped_dir`), as ``python tools/<tool>.py
ARGS`` would, so that they work after a non-editable install, from any folder (the tools read
configs with ``convnext_backbone::`` bases: :func:`convnext_backbone.config.read_config`)::

    convnext-train my_config.py --work-dir work_dirs/mine        # tools/train.py
    python -m convnext_backbone.console train my_config.py        # the same
    convnext-export-onnx CONFIG CKPT --out m.onnx                 # tools/export_onnx.py
"""
import os
import os.path as osp
import runpy
import sys
from typing import List, Optional

from .mim import shipped_dir

__all__ = ['SCRIPT_PREFIX', 'main', 'run', 'tool_file']

#: What every console script's name starts with; the rest names the tool.
SCRIPT_PREFIX = 'convnext-'


def tool_file(name: str) -> str:
    """The tool a console script or tool name stands for: ``convnext-export-onnx`` and
    ``export-onnx`` are ``export_onnx.py``.

    Args:
        name (str): A console script name, with or without :data:`SCRIPT_PREFIX`.

    Returns:
        str: The file name of the tool under ``tools/``.
    """
    name = name[len(SCRIPT_PREFIX):] if name.startswith(SCRIPT_PREFIX) else name
    return name.replace('-', '_') + '.py'


def run(tool: str, argv: List[str]) -> None:
    """Run ``tools/<tool>`` (e.g. 'train.py') with ``argv`` as ``python`` would run it.

    Args:
        tool (str): File name of the tool.
        argv (list[str]): Its arguments.
    """
    path = osp.join(shipped_dir('tools'), tool)
    sys.argv = [path, *argv]
    runpy.run_path(path, run_name='__main__')


def _tools() -> List[str]:
    """The Python tools the package carries, by name (``export-onnx`` ...)."""
    return sorted(n[:-3].replace('_', '-') for n in os.listdir(shipped_dir('tools'))
                  if n.endswith('.py'))


def main(argv: Optional[List[str]] = None) -> None:
    """The entry of every console script, and of ``python -m convnext_backbone.console TOOL ARGS``.

    A console script (``convnext-<tool>``, as pip's launcher names ``sys.argv[0]``) runs its
    tool with its arguments; otherwise the first argument names the tool, any of those the
    package carries (``export-onnx`` for ``tools/export_onnx.py``).

    Args:
        argv (list[str], optional): The command line without the program. Defaults to None
            (``sys.argv[1:]``).
    """
    argv = sys.argv[1:] if argv is None else argv
    script = osp.basename(sys.argv[0])
    if script.startswith(SCRIPT_PREFIX):
        run(tool_file(script), argv)
        return
    tools = _tools()
    if not argv or argv[0] not in tools:
        sys.exit(f'usage: python -m convnext_backbone.console {{{",".join(tools)}}} ARGS')
    run(tool_file(argv[0]), argv[1:])


if __name__ == '__main__':
    main()
