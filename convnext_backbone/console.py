"""The console scripts of the installed package (``[project.scripts]`` in pyproject.toml).

Each runs one of the tools the package carries (:func:`convnext_backbone.mim.shipped_dir`) as
``python tools/<tool>.py ARGS`` would, so that they work after a non-editable install, from any
folder (the tools read configs with ``convnext_backbone::`` bases: ``cli.read_config``)::

    convnext-train my_config.py --work-dir work_dirs/mine     # tools/train.py
    python -m convnext_backbone.console train my_config.py     # the same
"""
import os.path as osp
import runpy
import sys
from typing import Callable, List, Optional

from .mim import shipped_dir

__all__ = ['TOOLS', 'main', 'run']

#: console script name (without ``convnext-``) -> the tool it runs.
TOOLS = {
    'train': 'train.py',
    'test': 'test.py',
    'infer': 'infer.py',
    'export-onnx': 'export_onnx.py',
    'test-onnx': 'test_onnx.py',
    'convert-checkpoint': 'convert_checkpoint.py',
    'convert-mmdet2-checkpoint': 'convert_mmdet2_checkpoint.py',
    'get-flops': 'get_flops.py',
    'plot-logs': 'plot_logs.py',
}


def run(tool: str, argv: List[str]) -> None:
    """Run ``tools/<tool>`` (e.g. 'train.py') with ``argv`` as ``python`` would run it.

    Args:
        tool (str): File name of the tool.
        argv (list[str]): Its arguments.
    """
    path = osp.join(shipped_dir('tools'), tool)
    sys.argv = [path, *argv]
    runpy.run_path(path, run_name='__main__')


def _script(name: str) -> Callable[[], None]:
    def entry() -> None:
        run(TOOLS[name], sys.argv[1:])
    entry.__name__ = entry.__qualname__ = name.replace('-', '_')
    entry.__doc__ = f'``convnext-{name}``: ``tools/{TOOLS[name]}``.'
    return entry


train = _script('train')
test = _script('test')
infer = _script('infer')
export_onnx = _script('export-onnx')
test_onnx = _script('test-onnx')
convert_checkpoint = _script('convert-checkpoint')
convert_mmdet2_checkpoint = _script('convert-mmdet2-checkpoint')
get_flops = _script('get-flops')
plot_logs = _script('plot-logs')


def main(argv: Optional[List[str]] = None) -> None:
    """``python -m convnext_backbone.console TOOL ARGS``: TOOL is a key of :data:`TOOLS`."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in TOOLS:
        sys.exit(f'usage: python -m convnext_backbone.console {{{",".join(TOOLS)}}} ARGS')
    run(TOOLS[argv[0]], argv[1:])


if __name__ == '__main__':
    main()
