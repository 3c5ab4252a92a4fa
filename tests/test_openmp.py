"""OpenMP's spin: set by ``import convnext_backbone`` before torch loads, never over a user's."""
import os
import subprocess
import sys

import pytest

from convnext_backbone import openmp

pytestmark = [pytest.mark.core, pytest.mark.onedl_core]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Records GOMP_SPINCOUNT and OMP_WAIT_POLICY as they are when torch is first imported, then runs
# the code given after it; prints the record as 'at torch: <spin> <policy>'.
WATCH = '''
import importlib.abc, os, sys
seen = []
class Watch(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' and not seen:
            seen.append((os.environ.get('GOMP_SPINCOUNT'), os.environ.get('OMP_WAIT_POLICY')))
        return None
sys.meta_path.insert(0, Watch())
try:
{code}
finally:
    print('at torch:', *(seen[0] if seen else ('not imported', '')))
'''


def _at_torch(code, **env):
    environ = {k: v for k, v in os.environ.items() if k not in openmp.USER_SETTINGS}
    # tools/ too: run_path does not put a tool's folder first on the path, as python TOOL does
    environ.update(env, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, 'tools')]))
    body = '\n'.join('    ' + line for line in code.strip().splitlines())
    out = subprocess.run([sys.executable, '-c', WATCH.format(code=body)], cwd=ROOT, env=environ,
                         capture_output=True, text=True, timeout=300)
    lines = [line for line in out.stdout.splitlines() if line.startswith('at torch:')]
    assert lines, out.stderr[-2000:]
    return lines[-1].split()[2:], out.stdout


def test_importing_the_package_first_sets_the_spin_before_torch_loads():
    seen, out = _at_torch('import convnext_backbone\n'
                          'from convnext_backbone import openmp\n'
                          'print(openmp.describe())')
    assert seen == [str(openmp.SPIN_COUNT), 'None']
    assert f'GOMP_SPINCOUNT={openmp.SPIN_COUNT} (set by convnext_backbone' in out


@pytest.mark.parametrize('name,value', [('GOMP_SPINCOUNT', '300000'),
                                        ('OMP_WAIT_POLICY', 'ACTIVE')])
def test_a_users_own_setting_is_left_as_it_is(name, value):
    seen, out = _at_torch('import convnext_backbone\n'
                          'from convnext_backbone import openmp\n'
                          'print(openmp.describe())', **{name: value})
    assert seen == ([value, 'None'] if name == 'GOMP_SPINCOUNT' else ['None', value])
    assert f'{name}={value} (from the environment)' in out


def test_after_torch_nothing_is_set_and_the_line_says_how_to_set_it():
    seen, out = _at_torch('import torch\n'
                          'import os, convnext_backbone\n'
                          'from convnext_backbone import openmp\n'
                          "print('spin now', os.environ.get('GOMP_SPINCOUNT'))\n"
                          'print(openmp.describe())')
    assert seen == ['None', 'None'] and 'spin now None' in out
    assert f'torch was imported before convnext_backbone; on a shared machine set ' \
           f'GOMP_SPINCOUNT={openmp.SPIN_COUNT}' in out


@pytest.mark.parametrize('tool', ['train', 'test', 'infer', 'benchmark', 'test_onnx',
                                  'pretrain_demo'])
def test_each_tool_that_runs_a_model_imports_the_package_before_torch(tool):
    seen, _ = _at_torch('import runpy\n'
                        f"sys.argv = ['tools/{tool}.py', '--help']\n"
                        'try:\n'
                        f"    runpy.run_path('tools/{tool}.py', run_name='__main__')\n"
                        'except SystemExit:\n'
                        '    pass')
    assert seen == [str(openmp.SPIN_COUNT), 'None']
