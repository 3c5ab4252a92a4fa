"""Installing the package: the wheel carries the recipes and tools and works from another folder;
tools/install.sh never mixes mmcv builds and never breaks the environment's torch.

The venvs made here are small: they see an existing venv's packages through a ``.pth`` file (a
path line, so that venv's own ``.pth`` files, the editable install among them, are not read)
and get only what the test installs into them.
"""
import glob
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from helpers import ROOT, layered_venv
from test_tools import check, needs_ops, write_config, write_tiny_coco

from convnext_backbone import native

RECIPE = 'mask-rcnn_convnext-t_fpn_amp-ms-crop-3x_coco.py'
#: what a copy of the checkout leaves out: venvs, caches, build outputs, data
SKIP = shutil.ignore_patterns('.git', '.venv*', '.wheels', 'work_dirs', 'data', 'build', 'dist',
                              '*.egg-info', '__pycache__', '.pytest_cache', '.ruff_cache')
OLD_VENV = os.environ.get('CONVNEXT_OLD_VENV', os.path.join(ROOT, '.venv-torch21'))


def _run(args, cwd, timeout=600, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'VIRTUAL_ENV')}
    environ.update(OMP_NUM_THREADS='1', **env)
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=environ)


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    """sdist of a copy of the checkout, then a wheel built from that sdist (as from PyPI)."""
    tmp = tmp_path_factory.mktemp('build')
    src = tmp / 'src'
    shutil.copytree(ROOT, src, ignore=SKIP)
    check(_run([sys.executable, 'setup.py', '-q', 'sdist', '-d', str(tmp / 'dist')], cwd=src))
    sdist, = glob.glob(str(tmp / 'dist' / '*.tar.gz'))
    check(_run([sys.executable, '-m', 'pip', 'wheel', '-q', '--no-deps', '--no-build-isolation',
                '-w', str(tmp / 'dist'), sdist], cwd=tmp))
    built, = glob.glob(str(tmp / 'dist' / '*.whl'))
    return built


def test_the_wheel_carries_recipes_and_tools_under_mim(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    base = 'configs/_base_/coco-instance_ms-crop-3x_adamw-layer-decay.py'
    for name in ('configs/' + RECIPE, base,
                 'tools/train.py', 'tools/test.py', 'tools/dist_train.sh'):
        assert f'convnext_backbone/.mim/{name}' in names, name
    configs = {os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, 'configs', '**',
                                                                         '*.py'), recursive=True)}
    assert {f'convnext_backbone/.mim/{c}' for c in configs} <= names  # every recipe
    assert not any(n.startswith(('tests/', 'configs/', 'tools/')) for n in names)
    # every source and header of our kernels: they are built where the wheel is installed
    for path in native.SOURCES + native.HEADERS:
        name = 'convnext_backbone/native/' + os.path.basename(path)
        assert name in names, name
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith('entry_points.txt'))).decode()
    for name in _scripts():
        assert f'{name} = convnext_backbone.console:main' in entry_points, name


def _scripts():
    """``[project.scripts]`` of pyproject.toml: the one list of the console scripts."""
    tomllib = pytest.importorskip('tomllib')  # Python >= 3.11
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        return tomllib.load(f)['project']['scripts']


def test_every_console_script_names_a_tool_by_the_rule():
    from convnext_backbone.console import SCRIPT_PREFIX, tool_file
    scripts = _scripts()
    assert set(scripts.values()) == {'convnext_backbone.console:main'}
    assert tool_file('convnext-export-onnx') == tool_file('export-onnx') == 'export_onnx.py'
    for name in scripts:
        assert name.startswith(SCRIPT_PREFIX), name
        assert os.path.isfile(os.path.join(ROOT, 'tools', tool_file(name))), name


@pytest.mark.parametrize('how', ['script', 'module'])
def test_the_console_entry_runs_the_tool_a_script_name_or_argument_names(how, tmp_path):
    """What pip's launcher of ``convnext-convert-checkpoint`` runs, and ``python -m``."""
    if how == 'script':
        args = [sys.executable, '-c', 'import sys; sys.argv[0] = "/venv/bin/convnext-convert-'
                'checkpoint"; from convnext_backbone.console import main; main()']
    else:
        args = [sys.executable, '-m', 'convnext_backbone.console', 'convert-checkpoint']
    proc = _run(args + [str(tmp_path / 'missing.pth'), str(tmp_path / 'out.pth')], cwd=ROOT)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        f'convert_checkpoint.py: error: checkpoint not found: {tmp_path / "missing.pth"}']


def test_the_console_module_names_the_tools_it_runs():
    proc = _run([sys.executable, '-m', 'convnext_backbone.console', 'no-such-tool'], cwd=ROOT)
    assert proc.returncode == 1
    usage = proc.stderr.strip()
    assert usage.startswith('usage: python -m convnext_backbone.console {'), usage
    for name in _scripts():
        assert name[len('convnext-'):] in usage, name


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory):
    """The wheel installed (no dependencies) into a venv outside the checkout that sees this
    interpreter's packages."""
    venv = tmp_path_factory.mktemp('installed') / 'venv'
    python, site = layered_venv(venv, sysconfig.get_paths()['purelib'])
    check(_run([sys.executable, '-m', 'pip', '--python', python, 'install', '-q', '--no-deps',
                wheel], cwd=venv))
    return venv, python, site


def test_the_installed_package_uses_its_own_recipes_and_tools(installed, tmp_path):
    venv, python, site = installed
    proc = check(_run([python, '-c', 'import convnext_backbone, convnext_backbone.mim as m; '
                       'print(convnext_backbone.__file__); print(m.shipped_dir("configs")); '
                       'print(m.config_path("convnext_backbone::' + RECIPE + '"))'],
                      cwd=tmp_path))
    package, configs, recipe = proc.stdout.split()
    assert package.startswith(site) and not package.startswith(ROOT)
    assert configs == os.path.join(site, 'convnext_backbone', '.mim', 'configs')
    assert recipe == os.path.join(configs, RECIPE)


@needs_ops
def test_a_config_inheriting_a_shipped_recipe_trains_one_iteration_from_another_folder(
        installed, tmp_path):
    venv, python, site = installed
    data = tmp_path / 'coco'
    write_tiny_coco(str(data), num_train=2, num_val=1)
    config = write_config(tmp_path / 'my_mask_rcnn.py', str(data), base='convnext_backbone::' +
                          RECIPE)
    proc = check(_run([str(venv / 'bin' / 'convnext-train'), 'my_mask_rcnn.py', '--work-dir',
                       'work', '--cfg-options', 'train_cfg.val_interval=2'], cwd=tmp_path))
    log = proc.stdout + proc.stderr
    assert 'Epoch(train) [1][1/1]' in log, log[-3000:]
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
    # the run used the installed package and the recipe it carries
    dumped = (tmp_path / 'work' / 'my_mask_rcnn.py').read_text()
    assert "type='convnext_backbone.ConvNeXt'" in dumped and "arch='tiny'" in dumped
    assert os.path.dirname(config) == str(tmp_path)


def test_an_unknown_recipe_is_one_line_naming_it(installed, tmp_path):
    venv, python, site = installed
    (tmp_path / 'bad.py').write_text("_base_ = 'convnext_backbone::no-such-recipe.py'\n")
    proc = _run([str(venv / 'bin' / 'convnext-train'), 'bad.py'], cwd=tmp_path)
    assert proc.returncode != 0
    assert 'convnext_backbone::no-such-recipe.py: no such recipe in ' in proc.stderr, proc.stderr
    assert 'Traceback' not in proc.stderr


# -- tools/install.sh ------------------------------------------------------------------------------
def _mmcv_wheels(torch_tag):
    """The cached mmcv wheels built against torch ``torch_tag`` (e.g. '2.1.2_cu121')."""
    cache = os.path.join(os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
                         'convnext-backbone', 'wheels')
    return sorted(glob.glob(os.path.join(ROOT, '.wheels', f'torch-{torch_tag}', 'mmcv-*.whl'))
                  + glob.glob(os.path.join(cache, f'torch-{torch_tag}', 'mmcv-*.whl')))


def _torch_tag(python):
    return subprocess.run([python, '-c', 'import torch; print(torch.__version__)'],
                          capture_output=True, text=True, check=True).stdout.strip().replace(
                              '+', '_')


def test_install_into_a_venv_with_another_torch_replaces_a_foreign_mmcv_build(tmp_path):
    """A venv with torch 2.1 holding the mmcv built against this torch (undefined symbols there),
    and a cache whose first wheel for torch 2.1 is that foreign build too: install.sh installs
    the mmcv built for torch 2.1, drops the foreign one from the cache, and leaves torch 2.1 with
    a numpy it works with."""
    old_python = os.path.join(OLD_VENV, 'bin', 'python')
    if not os.path.exists(old_python):
        pytest.skip(f'no torch 2.1 venv at {OLD_VENV} (make install-oldest makes it)')
    old_tag, new_tag = _torch_tag(old_python), _torch_tag(sys.executable)
    if old_tag == new_tag:
        pytest.skip(f'{OLD_VENV} has the torch of this interpreter ({new_tag}): nothing foreign')
    right, foreign = _mmcv_wheels(old_tag), _mmcv_wheels(new_tag)
    if not right or not foreign:
        pytest.skip(f'needs mmcv wheels built for torch {old_tag} and {new_tag} in the caches '
                    f'(found {len(right)} and {len(foreign)}): VENV={OLD_VENV} bash '
                    'tools/install.sh builds the first (13-31 min on 2 cores)')
    old_site = subprocess.run([old_python, '-c', 'import sysconfig; print(sysconfig.get_paths()'
                               '["purelib"])'], capture_output=True, text=True,
                              check=True).stdout.strip()
    venv = tmp_path / 'venv'
    python, site = layered_venv(venv, old_site)
    # the foreign build, installed in the venv, shadows whatever mmcv the base venv has
    check(_run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--ignore-installed',
                foreign[0]], cwd=tmp_path))
    broken = _run([python, '-c', 'import mmcv.ops'], cwd=tmp_path)
    assert broken.returncode != 0 and 'undefined symbol' in broken.stderr, broken.stderr[-2000:]
    local = tmp_path / 'wheels' / f'torch-{old_tag}'
    user = tmp_path / 'cache' / 'convnext-backbone' / 'wheels' / f'torch-{old_tag}'
    local.mkdir(parents=True)
    user.mkdir(parents=True)
    mis_keyed = local / os.path.basename(foreign[0])
    shutil.copy(foreign[0], mis_keyed)
    shutil.copy(right[0], user / os.path.basename(right[0]))

    proc = _run(['bash', os.path.join(ROOT, 'tools', 'install.sh')], cwd=tmp_path,
                VENV=str(venv), MMCV_OPS='1', EXTRAS='safetensors,openmmlab-core',
                MMCV_WHEELS=str(tmp_path / 'wheels'),
                XDG_CACHE_HOME=str(tmp_path / 'cache'))
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-4000:]
    assert 'does not import with torch' in log  # the installed foreign build was noticed
    assert f'cached {mis_keyed} does not import' in log and not mis_keyed.exists()
    assert f'mmcv from {user / os.path.basename(right[0])}: mmcv.ops imports' in log
    assert 'building mmcv' not in log
    works = check(_run([python, '-c', 'import mmcv, mmcv.ops, numpy, torch; '
                        'torch.from_numpy(numpy.zeros(2)); '
                        'print(torch.__version__, numpy.__version__, mmcv.__file__)'],
                       cwd=tmp_path))
    torch_version, numpy_version, mmcv_file = works.stdout.split()
    assert torch_version.replace('+', '_') == old_tag
    assert int(numpy_version.split('.')[0]) < 2  # torch 2.1 is built against numpy 1
    assert mmcv_file.startswith(site)  # the right build, installed into this venv
