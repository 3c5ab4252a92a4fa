"""The shape of the project: one home per rule, no import cycles, thin tools, docs that link."""
import ast
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT, TOOLS

pytestmark = pytest.mark.core

PACKAGE = os.path.join(ROOT, 'convnext_backbone')


def _module_name(path):
    rel = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
    return rel[:-len('.__init__')] if rel.endswith('.__init__') else rel


def _package_imports():
    """module -> set of package modules it imports anywhere (top level or in functions)."""
    modules = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith('.py'):
                path = os.path.join(folder, name)
                modules[_module_name(path)] = path
    graph = {}
    for module, path in modules.items():
        is_package = path.endswith('__init__.py')
        base = module.split('.') if is_package else module.split('.')[:-1]
        found = set()
        for node in ast.walk(ast.parse(open(path, encoding='utf-8').read())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                parent = base[:len(base) - node.level + 1] if node.level else []
                prefix = '.'.join(parent + ([node.module] if node.module else []))
                # `from pkg import module` imports the module; `from module import name` it
                targets = [f'{prefix}.{alias.name}' if f'{prefix}.{alias.name}' in modules
                           else prefix for alias in node.names]
            else:
                continue
            found.update(t for t in targets if t in modules and t != module)
        graph[module] = found
    return graph


def _reachable(graph, start):
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_package_has_no_import_cycles():
    graph = _package_imports()
    cycles = sorted(m for m in graph if m in _reachable(graph, m))
    assert not cycles, cycles


@pytest.mark.parametrize('module, forbidden', [
    ('convnext_backbone.layer_decay', 'convnext_backbone.convnext'),
    ('convnext_backbone.checkpoint.layouts', 'convnext_backbone.convnext'),
    ('convnext_backbone.checkpoint.load', 'convnext_backbone.convnext'),
    ('convnext_backbone.checkpoint.io', 'convnext_backbone.engine'),
    ('convnext_backbone.checkpoint.unpickler', 'convnext_backbone.engine'),
])
def test_lower_layers_do_not_import_higher_ones(module, forbidden):
    assert forbidden not in _reachable(_package_imports(), module)


def test_errors_and_stack_import_nothing_else_of_the_package():
    """stack.py raises its error at ``import convnext_backbone``, before mmengine is imported."""
    graph = _package_imports()
    assert graph['convnext_backbone.errors'] == set()
    assert _reachable(graph, 'convnext_backbone.stack') == {'convnext_backbone.errors'}


def test_compat_holds_torch_shims_not_the_checkpoint_unpickler():
    tree = ast.parse(open(os.path.join(PACKAGE, 'compat.py'), encoding='utf-8').read())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {'pickle', '_compat_pickle', 'zipfile'}, imported


def _code_strings(path):
    """The string constants of a module's code (its docstrings left out)."""
    tree = ast.parse(open(path, encoding='utf-8').read())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize('path', sorted(
    os.path.join(folder, n) for root in (PACKAGE, TOOLS) for folder, _, names in os.walk(root)
    for n in names if n.endswith('.py')
    and os.path.join(folder, n) != os.path.join(PACKAGE, 'errors.py')),
    ids=lambda p: os.path.relpath(p, ROOT))
def test_only_the_errors_module_formats_error_lines_and_reads_the_debug_switch(path):
    found = [s for s in _code_strings(path)
             if s == 'CONVNEXT_DEBUG' or s.startswith('error: ') or ': error: ' in s]
    assert not found, f'{path}: use convnext_backbone.errors (fail, report, debug_enabled)'


@pytest.mark.needs_full_stack  # not in make test-oldest
def test_a_fresh_interpreter_imports_every_module():
    modules = sorted(_package_imports())
    code = 'import importlib\n' + ''.join(f'importlib.import_module({m!r})\n' for m in modules)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize('name', sorted(n for n in os.listdir(TOOLS) if n.endswith('.py')))
def test_tools_import_the_package_not_each_other(name):
    tools = {n[:-3] for n in os.listdir(TOOLS) if n.endswith('.py')}
    tree = ast.parse(open(os.path.join(TOOLS, name), encoding='utf-8').read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split('.')[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split('.')[0])
    assert not imported & tools, f'{name} imports tools {imported & tools}'
    assert 'sys.path' not in ast.unparse(tree), f'{name} edits sys.path'


# An edit of sys.path, in a test's code or in a script it runs: pytest's pythonpath (pyproject)
# finds tests/ and tools/, and a subprocess is given PYTHONPATH.
_EDITS_SYS_PATH = re.compile(r'sys\.path\s*(\.\s*(insert|append|extend|remove)\b|\+?=|\[)'
                             r'|monkeypatch\.syspath_prepend')


def test_tests_leave_sys_path_to_pytests_pythonpath():
    tests = os.path.join(ROOT, 'tests')
    found = [f'{name}:{i}: {line.strip()}' for name in sorted(os.listdir(tests))
             if name.endswith('.py')
             for i, line in enumerate(open(os.path.join(tests, name), encoding='utf-8'), 1)
             if _EDITS_SYS_PATH.search(line)]
    assert not found, found


def test_install_script_installs_from_pyproject_without_pins_of_its_own():
    script = open(os.path.join(TOOLS, 'install.sh'), encoding='utf-8').read()
    for package in ('mmdet', 'mmsegmentation', 'mmengine', 'pycocotools', 'safetensors',
                    'pytest', 'ruff'):
        assert not re.search(rf"['\" ]{package}[=<>]", script), package
    assert '-e "$ROOT[$EXTRAS]"' in script
    assert 'MAX_JOBS=${MAX_JOBS:-$(nproc' in script


# -- docs ------------------------------------------------------------------------------------------
def _markdown_files():
    docs = os.path.join(ROOT, 'docs')
    return [os.path.join(ROOT, 'README.md')] + sorted(
        os.path.join(docs, n) for n in os.listdir(docs) if n.endswith('.md'))


def _anchors(path):
    """GitHub's heading anchors of a Markdown file."""
    anchors, fenced = set(), False
    for line in open(path, encoding='utf-8'):
        if line.startswith('```'):
            fenced = not fenced
        match = None if fenced else re.match(r'^#{1,6}\s+(.*?)\s*$', line)
        if match:
            text = re.sub(r'[`*_]', '', match.group(1)).strip().lower()
            anchors.add(re.sub(r'\s', '-', re.sub(r'[^\w\- ]', '', text)))
    return anchors


def test_readme_is_an_entry_point_of_at_most_200_lines():
    lines = open(os.path.join(ROOT, 'README.md'), encoding='utf-8').read().splitlines()
    assert len(lines) <= 200, len(lines)


@pytest.mark.parametrize('path', _markdown_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_resolves(path):
    text = open(path, encoding='utf-8').read()
    text = re.sub(r'```.*?```', '', text, flags=re.S)
    broken = []
    for target in re.findall(r'\]\(([^)\s]+)\)', text):
        if re.match(r'^[a-z]+://|^mailto:', target):
            continue
        file_part, _, anchor = target.partition('#')
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), file_part)) \
            if file_part else path
        if not os.path.exists(resolved):
            broken.append(target)
        elif anchor and resolved.endswith('.md') and anchor not in _anchors(resolved):
            broken.append(target)
    assert not broken, broken
