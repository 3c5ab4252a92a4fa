"""Two OpenMMLab stacks, one package: upstream OpenMMLab or the OneDL fork, never both.

Run in whichever environment the suite runs in (``.venv``: upstream; ``.venv-onedl``: OneDL), so
each test checks the stack at hand; the mixed-stack tests put a real distribution of the other
stack in front of this environment.
"""
import glob
import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
import torch
from helpers import ROOT, layered_venv, needs_ops
from packaging.requirements import Requirement

from convnext_backbone import STACK, stack

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib

pytestmark = pytest.mark.onedl_core

#: one small pure-Python distribution of each stack, to put in front of this environment
OTHER_ENGINE = {stack.UPSTREAM: 'onedl-mmengine==0.10.12', stack.ONEDL: 'mmengine==0.10.7'}


def _pyproject():
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)['project']


def _names(requirements):
    return {Requirement(r).name for r in requirements}


def _extra(project, name):
    """The distributions an extra installs, self-references expanded."""
    found = set()
    for req in project['optional-dependencies'][name]:
        r = Requirement(req)
        if r.name == project['name']:
            for sub in r.extras:
                found |= _extra(project, sub)
        else:
            found.add(r.name)
    return found


# -- packaging ------------------------------------------------------------------------------------
def test_core_requirements_name_no_distribution_of_either_stack():
    project = _pyproject()
    every = set(stack.STACKS[stack.UPSTREAM]) | set(stack.STACKS[stack.ONEDL])
    assert not _names(project['dependencies']) & every
    for extra in ('all', 'dev', 'det', 'seg', 'test', 'deploy', 'safetensors'):
        assert not _extra(project, extra) & every, extra


@pytest.mark.parametrize('name', [stack.UPSTREAM, stack.ONEDL])
def test_each_stack_extra_installs_only_that_stacks_distributions(name):
    project = _pyproject()
    other = stack.ONEDL if name == stack.UPSTREAM else stack.UPSTREAM
    for extra in (name, f'{name}-core'):
        dists = _extra(project, extra)
        assert dists & set(stack.STACKS[name]), extra
        assert not dists & set(stack.STACKS[other]), extra
    assert {'mmdet', 'mmsegmentation'} <= {d.replace('onedl-', '').replace('mmdetection', 'mmdet')
                                          for d in _extra(project, name)}


def test_installing_the_package_here_would_replace_nothing_of_this_stack(tmp_path):
    """pip's own resolver, offline (--no-index): whatever it would install or replace for
    ``.[<this stack's extra>]`` is in its report; only our package may be in it."""
    extra = STACK if _has('mmdet') else f'{STACK}-core'
    proc = subprocess.run(
        [sys.executable, '-m', 'pip', 'install', '--dry-run', '--no-index', '--no-build-isolation',
         '--quiet', '--report', str(tmp_path / 'report.json'), f'{ROOT}[{extra}]'],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((tmp_path / 'report.json').read_text())
    names = {item['metadata']['name'] for item in report['install']}
    assert names == {'convnext-backbone'}, names


def _has(module):
    import importlib.util
    return importlib.util.find_spec(module) is not None


# -- which stack ----------------------------------------------------------------------------------
def test_the_environment_holds_exactly_the_stack_the_package_reports():
    found = stack.installed()
    assert list(found) == [STACK]
    engine = 'mmengine' if STACK == stack.UPSTREAM else 'onedl-mmengine'
    assert found[STACK][engine] == metadata.version(engine)


def test_a_mixed_stack_is_one_line_naming_both_stacks_distributions():
    found = stack.installed([('mmengine', '0.10.7'), ('mmcv', '2.1.0'),
                             ('onedl_mmdetection', '3.5.1'), ('numpy', '2.0')])
    with pytest.raises(stack.StackError) as err:
        stack.stack_of(found)
    message = str(err.value)
    assert '\n' not in message
    for part in ('mmengine 0.10.7', 'mmcv 2.1.0', 'onedl-mmdetection 3.5.1', 'pip uninstall',
                 'convnext-backbone[openmmlab]', 'convnext-backbone[onedl]'):
        assert part in message, part
    assert 'numpy' not in message


def test_no_stack_is_one_line_naming_both_extras():
    with pytest.raises(stack.StackError, match=r'no OpenMMLab stack .*\[openmmlab\].*\[onedl\]'):
        stack.stack_of(stack.installed([('torch', '2.13.0')]))


@pytest.fixture(scope='module')
def mixed_python(tmp_path_factory):
    """A venv that sees this environment behind a real mmengine of the other stack."""
    python, site = layered_venv(
        tmp_path_factory.mktemp('mixed') / 'venv',
        os.path.dirname(os.path.dirname(stack.__file__)),  # the checkout (editable install)
        os.path.dirname(os.path.dirname(metadata.distribution('torch').locate_file(
            'torch/__init__.py'))))
    proc = subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', '--target',
                           site, OTHER_ENGINE[STACK]], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f'cannot fetch {OTHER_ENGINE[STACK]} from the package index: '
                    f'{proc.stderr.strip().splitlines()[-1:]}')
    return python


def test_importing_the_package_in_a_mixed_environment_is_refused_in_one_line(mixed_python):
    proc = subprocess.run([mixed_python, '-c', 'import convnext_backbone'], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith('convnext_backbone.stack.StackError: mixed OpenMMLab stack'), last
    other = OTHER_ENGINE[STACK].replace('==', ' ')
    assert other in last and f'{"onedl-" if STACK == stack.ONEDL else ""}mmengine ' in last


def test_install_sh_refuses_to_install_the_other_stack_here():
    other = stack.ONEDL if STACK == stack.UPSTREAM else stack.UPSTREAM
    env = {k: v for k, v in os.environ.items() if k not in ('VENV', 'CONDA_PREFIX')}
    env.update(VIRTUAL_ENV=sys.prefix, STACK=other)
    proc = subprocess.run(['bash', os.path.join(ROOT, 'tools', 'install.sh')], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert f'STACK={other}, but {sys.prefix} holds the {STACK} stack' in proc.stderr
    assert 'would overwrite its modules' in proc.stderr


# -- config prefixes ------------------------------------------------------------------------------
@pytest.mark.parametrize('base, scope, model_type', [
    ('mmseg::_base_/models/upernet_r50.py', 'mmseg', 'EncoderDecoder'),
    ('mmdet::_base_/models/mask-rcnn_r50_fpn.py', 'mmdet', 'MaskRCNN'),
])
def test_a_users_config_inherits_mmseg_and_mmdet_bases_after_import(tmp_path, base, scope,
                                                                     model_type):
    """In a fresh interpreter, as a user's script would: import the package, then
    ``Config.fromfile``; on OneDL, mmengine alone fails on the ``mmseg::`` base."""
    config = tmp_path / 'mine.py'
    config.write_text(f'_base_ = [{base!r}]\nmodel = dict(backbone=dict(depth=18))\n')
    code = ('import convnext_backbone\nfrom mmengine.config import Config\n'
            f'cfg = Config.fromfile({str(config)!r})\n'
            'print(cfg.model.type, cfg.model.backbone.depth, cfg.model.get("_scope_"))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [model_type, '18', scope]


def test_mmseg_bases_are_found_by_module_where_mmengine_looks_for_another_distribution():
    """The fallback's answer is the file mmengine itself would read (``.mim/configs``), and on
    OneDL it is the fallback that answers: mmengine's own lookup refuses."""
    import mmseg
    from mmengine.config import Config

    from convnext_backbone.config import package_config
    path, scope = package_config('mmseg::_base_/models/upernet_r50.py')
    assert scope == 'mmseg'
    assert path == os.path.join(os.path.dirname(mmseg.__file__), '.mim', 'configs', '_base_',
                                'models', 'upernet_r50.py')
    unwrapped = Config._get_cfg_path.__wrapped__
    if STACK == stack.ONEDL:
        with pytest.raises(ModuleNotFoundError, match='mmsegmentation is not installed'):
            unwrapped('mmseg::_base_/models/upernet_r50.py', 'x.py')
    else:
        assert unwrapped('mmseg::_base_/models/upernet_r50.py', 'x.py') == (path, 'mmseg')
    assert package_config('mmseg::_base_/models/no_such_file.py') is None
    assert package_config('nosuchpackage::_base_/x.py') is None


RECIPES = sorted(os.path.relpath(p, os.path.join(ROOT, 'configs'))
                 for p in glob.glob(os.path.join(ROOT, 'configs', '**', '*.py'), recursive=True)
                 if '_base_' not in p)


@pytest.mark.parametrize('recipe', RECIPES)
def test_every_shipped_recipe_loads_on_this_stack(recipe):
    """Every base resolves (``mmdet::``, ``mmseg::``, ``convnext_backbone::``) and the model is
    ours; building and training them is the configs' own tests (they need mmcv's ops)."""
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', recipe))
    assert cfg.default_scope in ('mmdet', 'mmseg')
    assert cfg.model.backbone.type == 'convnext_backbone.ConvNeXt'


# -- mmcv's compiled ops on this stack ------------------------------------------------------------
def _greedy_nms(boxes, scores, threshold):
    """The definition: keep the best box, drop those overlapping it by IoU > threshold, repeat."""
    order = scores.argsort(descending=True).tolist()
    keep = []
    while order:
        best = order.pop(0)
        keep.append(best)
        rest = []
        for other in order:
            lt = torch.maximum(boxes[best, :2], boxes[other, :2])
            rb = torch.minimum(boxes[best, 2:], boxes[other, 2:])
            inter = (rb - lt).clamp(min=0).prod()
            areas = (boxes[[best, other], 2:] - boxes[[best, other], :2]).prod(1)
            if inter / (areas.sum() - inter) <= threshold:
                rest.append(other)
        order = rest
    return keep


@needs_ops
def test_mmcv_nms_keeps_the_boxes_of_the_greedy_definition():
    from mmcv.ops import nms
    torch.manual_seed(0)
    xy = torch.rand(60, 2) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(60, 2) * 20], 1)
    scores = torch.rand(60)
    _, keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == _greedy_nms(boxes, scores, 0.5)


@needs_ops
def test_mmcv_roi_align_averages_a_linear_map_to_its_bin_centres():
    """On f(y, x) = x, RoIAlign's bilinear samples average to f at each bin's centre."""
    from mmcv.ops import roi_align
    feature = torch.arange(32.).repeat(1, 1, 32, 1)             # (1, 1, 32, 32), value = x
    x1, y1, x2, y2 = 4.0, 6.0, 20.0, 14.0
    pooled = roi_align(feature, torch.tensor([[0., x1, y1, x2, y2]]), (4, 4), 1.0, 2, 'avg', True)
    centres = x1 - 0.5 + (torch.arange(4) + 0.5) * (x2 - x1) / 4  # aligned: pixel centres at +0.5
    torch.testing.assert_close(pooled[0, 0], centres.repeat(4, 1))
