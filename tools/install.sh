#!/usr/bin/env bash
# Installs convnext-backbone and everything it needs, idempotently, from pyproject.toml, without
# ever mixing builds or stacks: mmcv is built for (or checked against) the torch of the target
# environment, every pip call is constrained so that it cannot replace that torch or break it, and
# only one OpenMMLab stack is installed (STACK=openmmlab: upstream, or STACK=onedl: the OneDL fork;
# default: the one the environment holds, else openmmlab; an environment that holds the other
# stack, or both, is refused).
#
# Target environment: $VENV (a virtualenv, created when missing), else the active one
# ($VIRTUAL_ENV or $CONDA_PREFIX), else ./.venv (created when missing). Then:
#   1. torch: kept when installed, else $TORCH_PACKAGES (default torch==$TORCH_VERSION, 2.13.0:
#      a CPU build);
#   2. constraints that follow the installed torch ([tool.convnext-backbone] torch-constraints in
#      pyproject.toml, e.g. numpy<2 below torch 2.3) plus torch==<installed>, written to
#      $PREFIX/.convnext-backbone-constraints.txt and given to every pip install below;
#   3. mmcv (STACK=onedl: onedl-mmcv), the newest release that the stack's extra admits:
#      MMCV_OPS=1 (default): with its C++ ops, built from source with pip's cache off
#        (--no-cache-dir: pip's cache is not keyed by torch) against this torch, MAX_JOBS
#        parallel compiles (default: the number of cores; 13-31 min on 2 cores); the wheel is
#        cached in $MMCV_WHEELS (default ./.wheels) and ${XDG_CACHE_HOME:-~/.cache}/convnext-backbone/wheels
#        under torch-<version>; a cached wheel is used only if `import mmcv.ops` then works
#        against this torch, otherwise it is deleted and mmcv is built;
#      MMCV_OPS=0: mmcv-lite (the same release without ops, a pure-Python wheel from PyPI;
#        OneDL has none: its sdist built in an isolated environment without torch, which skips
#        the ops, cached under onedl-lite): for the core test suites, no detector or segmentor
#        runs without the ops;
#   4. the package itself, editable, with the extras in $EXTRAS (default: dev = all + test +
#      deploy, and the stack's extra; EXTRAS must name exactly one of openmmlab[-core] and
#      onedl[-core]);
#   5. our kernels (convnext_backbone/native: a C++ compiler and ninja), cached
#      by torch, Python and source; where they do not build, a warning and the modules run.
# It checks by importing mmcv(.ops) and the package and converting a numpy array with torch.
# A second run with nothing to do finishes in seconds (stamp keyed on this script, pyproject.toml,
# EXTRAS and MMCV_OPS).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_PACKAGES=${TORCH_PACKAGES:-torch==$TORCH_VERSION}
MMCV_OPS=${MMCV_OPS:-1}
MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN || echo 2)}
USER_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/convnext-backbone/wheels"
LOCAL_CACHE=${MMCV_WHEELS:-$ROOT/.wheels}

log() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }
case "$MMCV_OPS" in 0|1) ;; *) die "MMCV_OPS=$MMCV_OPS: use 1 (mmcv with ops) or 0 (mmcv-lite)";; esac

if [ -n "${VENV:-}" ]; then
    case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV";; esac
    if [ ! -x "$VENV/bin/python" ]; then
        log "creating $VENV"
        python3 -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
elif [ -n "${VIRTUAL_ENV:-}" ]; then
    PY="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ]; then
    PY="$CONDA_PREFIX/bin/python"
else
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        log "creating $ROOT/.venv"
        python3 -m venv "$ROOT/.venv"
    fi
    PY="$ROOT/.venv/bin/python"
fi
PREFIX=$("$PY" -c 'import sys; print(sys.prefix)')

# the stack: the one the environment holds (convnext_backbone/stack.py, run as a script: it
# needs nothing but the standard library)
HELD=$("$PY" "$ROOT/convnext_backbone/stack.py")
HELD_STACKS=$(for item in $HELD; do echo "${item%%:*}"; done | sort -u | paste -sd' ')
case "$HELD_STACKS" in
    *' '*) die "$PREFIX holds a mixed OpenMMLab stack (${HELD//:/ }): uninstall one of them" \
        "(docs/install.md#two-stacks)";;
esac
if [ -z "${STACK:-}" ]; then
    STACK=${HELD_STACKS:-openmmlab}
elif [ -n "$HELD_STACKS" ] && [ "$HELD_STACKS" != "$STACK" ]; then
    die "STACK=$STACK, but $PREFIX holds the $HELD_STACKS stack (${HELD//:/ }): installing" \
        "$STACK there would overwrite its modules; use another environment (VENV=...)"
fi
case "$STACK" in
    openmmlab) MMCV_DIST=mmcv;;
    onedl) MMCV_DIST=onedl-mmcv;;
    *) die "STACK=$STACK: use openmmlab (upstream) or onedl (the OneDL fork)";;
esac
EXTRAS=${EXTRAS:-dev,$STACK}
MMCV_WHEEL_GLOB=${MMCV_DIST//-/_}
STAMP="$PREFIX/.convnext-backbone-installed"
KEY=$( (cat "$ROOT/tools/install.sh" "$ROOT/pyproject.toml"; echo "$STACK $EXTRAS $MMCV_OPS") \
    | sha256sum | cut -c1-16)
if [ "$MMCV_OPS" = 1 ]; then MMCV_MODULE=mmcv.ops; else MMCV_MODULE=mmcv; fi
# torch and numpy must work together: a numpy that torch was not built for fails here
WORKS='import torch, numpy; torch.from_numpy(numpy.zeros(2))'

PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q 'pip>=23' 'tomli; python_version < "3.11"' packaging
pyproject() {  # pyproject build | mmcv | imports EXTRAS | constraints TORCH | excluded TORCH
    #            | requirements EXTRAS MMCV_DIST TORCH
    "$PY" - "$@" <<'EOF'
import re
import sys

try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

with open('pyproject.toml', 'rb') as f:
    pyproject = tomllib.load(f)
project = pyproject['project']
what, args = sys.argv[1], sys.argv[2:]


def extras(names):
    """The requirements of the given extras, self-references (convnext-backbone[...]) expanded."""
    found = []
    for name in filter(None, re.split(r'[,\s]+', names)):
        for req in project['optional-dependencies'][name]:
            r = Requirement(req)
            found += extras(','.join(r.extras)) if r.name == project['name'] else [req]
    return found


def rules(torch):
    """The torch-constraints rules that apply to this torch version."""
    version = Version(torch).public
    return [rule for rule in pyproject['tool']['convnext-backbone']['torch-constraints']
            if SpecifierSet(rule['torch']).contains(version, prereleases=True)]


if what == 'build':
    print(' '.join(pyproject['build-system']['requires']))
elif what == 'mmcv':  # mmcv EXTRAS: the requirement on the stack's mmcv (args[0]) in EXTRAS
    print(next(r for r in extras(args[1]) if Requirement(r).name == args[0]))
elif what == 'stacks':  # the stack extras that EXTRAS names
    stacks = {'openmmlab': 'mmengine', 'onedl': 'onedl-mmengine'}
    names = {Requirement(r).name for r in extras(args[0])}
    print(' '.join(stack for stack, engine in stacks.items() if engine in names))
elif what == 'imports':  # the modules that must import after installing these extras
    modules = {'mmdet': 'mmdet', 'mmsegmentation': 'mmseg', 'onedl-mmdetection': 'mmdet',
               'onedl-mmsegmentation': 'mmseg'}
    names = {Requirement(r).name for r in extras(args[0])}
    print(' '.join(m for name, m in modules.items() if name in names))
elif what == 'constraints':
    print(f'torch=={args[0]}')
    for rule in rules(args[0]):
        for req in rule.get('require', []):
            print(req)
elif what == 'excluded':
    print(' '.join(name for rule in rules(args[0]) for name in rule.get('exclude', [])))
elif what == 'requirements':  # the dependencies and the extras', mmcv as the given distribution (MMCV_REQUIREMENT), less excluded
    extra_names, mmcv, torch = args
    excluded = {name for rule in rules(torch) for name in rule.get('exclude', [])}
    for req in project['dependencies'] + extras(extra_names):
        r = Requirement(req)
        if r.name not in excluded:
            print(f'{mmcv}{r.specifier}' if r.name == 'mmcv' else req)
EOF
}
EXTRA_STACKS=$(pyproject stacks "$EXTRAS")
[ "$EXTRA_STACKS" = "$STACK" ] || die "EXTRAS=$EXTRAS names the stack extras '$EXTRA_STACKS':" \
    "give exactly the one of STACK=$STACK ($STACK or $STACK-core)"
CHECK_MODULES=$(echo $MMCV_MODULE convnext_backbone $(pyproject imports "$EXTRAS"))  # one space each
CHECK="import ${CHECK_MODULES// /, }; $WORKS"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && "$PY" -c "$CHECK" 2>/dev/null; then
    log "up to date ($PREFIX)"
    exit 0
fi

SETUPTOOLS=$(pyproject build)
MMCV_SPEC=$(pyproject mmcv "$MMCV_DIST" "$EXTRAS")
"${PIP[@]}" install -q wheel ninja "$SETUPTOOLS"

if "$PY" -c 'import torch' 2>/dev/null; then
    log "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    log "installing $TORCH_PACKAGES"
    # shellcheck disable=SC2086 # a list of requirements
    "${PIP[@]}" install -q $TORCH_PACKAGES
fi
TORCH=$("$PY" -c 'import torch; print(torch.__version__)')
# the distribution's version: PyPI's CUDA builds say 2.1.2 where torch.__version__ is 2.1.2+cu121
TORCH_DIST=$("$PY" -c 'from importlib.metadata import version; print(version("torch"))')
CONSTRAINTS="$PREFIX/.convnext-backbone-constraints.txt"
pyproject constraints "$TORCH_DIST" > "$CONSTRAINTS"
EXCLUDED=$(pyproject excluded "$TORCH_DIST")
log "constraints for torch $TORCH: $(paste -sd' ' "$CONSTRAINTS")${EXCLUDED:+; left out: $EXCLUDED}"
INSTALL=("${PIP[@]}" install -q -c "$CONSTRAINTS")

satisfies() {  # satisfies VERSION: whether VERSION meets $MMCV_SPEC
    "$PY" -c 'import sys; from packaging.requirements import Requirement
sys.exit(0 if Requirement(sys.argv[1]).specifier.contains(sys.argv[2], prereleases=True) else 1)' \
        "$MMCV_SPEC" "$1"
}
installed() {  # installed DIST: its version, or nothing
    "$PY" -c 'import sys; from importlib.metadata import version
try: print(version(sys.argv[1]))
except Exception: pass' "$1"
}
why_not() {  # why_not MODULE: the last line of the error importing it
    "$PY" -c "import $1" 2>&1 | tail -n 1
}
install_wheel() {  # install_wheel WHEEL: this build of mmcv, then its dependencies
    "${INSTALL[@]}" --force-reinstall --no-deps "$1"
    "${INSTALL[@]}" "$1"
}

# first, so that nothing this torch cannot import breaks the checks below (mmengine imports
# transformers whenever it is installed, and mmcv.ops imports mmengine)
for name in $EXCLUDED; do
    if [ -n "$(installed "$name")" ]; then
        log "removing $name $(installed "$name"): it does not work with torch $TORCH (pyproject.toml)"
        "${PIP[@]}" uninstall -q -y "$name"
    fi
done

MMCV_VERSION=$(installed "$MMCV_DIST")
MMCV_REQUIREMENT=mmcv  # what the `mmcv` requirement of the upstream extras becomes
TORCH_TAG=${TORCH//+/_}
PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
if [ "$MMCV_OPS" = 0 ] && [ -n "$MMCV_VERSION" ] && satisfies "$MMCV_VERSION" \
        && "$PY" -c 'import mmcv.ops' 2>/dev/null; then
    # an ops-less build would overwrite the files of an mmcv with ops that works here
    log "$MMCV_DIST $MMCV_VERSION with ops is installed and works: kept (MMCV_OPS=0 installs" \
        "nothing)"
elif [ "$MMCV_OPS" = 0 ] && [ "$STACK" = openmmlab ]; then
    if [ -n "$MMCV_VERSION" ]; then
        log "removing mmcv $MMCV_VERSION (replaced by mmcv-lite)"; "${PIP[@]}" uninstall -q -y mmcv
    fi
    log "installing mmcv-lite (${MMCV_SPEC#mmcv}): mmcv without ops"
    "${INSTALL[@]}" "mmcv-lite${MMCV_SPEC#mmcv}"
    MMCV_REQUIREMENT=mmcv-lite
elif [ "$MMCV_OPS" = 0 ]; then
    # OneDL publishes no mmcv-lite: its sdist built where torch is absent (pip's isolated build
    # environment) skips the ops (onedl-mmcv's setup.py); the pure-Python wheel fits any torch
    if [ -n "$MMCV_VERSION" ] && satisfies "$MMCV_VERSION" && "$PY" -c 'import mmcv' 2>/dev/null
    then
        log "$MMCV_DIST $MMCV_VERSION (without ops) already installed"
    else
        LITE_DIR="$USER_CACHE/onedl-lite"
        WHEEL=""
        for cand in "$LITE_DIR/$MMCV_WHEEL_GLOB"-*-py3-none-any.whl; do
            [ -f "$cand" ] && satisfies "$(basename "$cand" | cut -d- -f2)" && WHEEL="$cand"
        done
        if [ -z "$WHEEL" ]; then
            log "building $MMCV_SPEC without ops (no torch in pip's build environment)"
            mkdir -p "$LITE_DIR"
            "${PIP[@]}" wheel -q --no-cache-dir --no-deps "$MMCV_SPEC" -w "$LITE_DIR"
            WHEEL=$(ls -t "$LITE_DIR/$MMCV_WHEEL_GLOB"-*-py3-none-any.whl | head -n1)
        fi
        log "installing $WHEEL (without ops)"
        install_wheel "$WHEEL"
    fi
else
    if [ -n "$(installed mmcv-lite)" ]; then  # they share the mmcv/ folder
        log "removing mmcv-lite (replaced by mmcv with ops)"; "${PIP[@]}" uninstall -q -y mmcv-lite
    fi
    if [ -n "$MMCV_VERSION" ] && satisfies "$MMCV_VERSION" \
            && "$PY" -c 'import mmcv.ops' 2>/dev/null; then
        log "$MMCV_DIST $MMCV_VERSION with ops already installed and working with torch $TORCH"
    else
        [ -z "$MMCV_VERSION" ] || log "installed $MMCV_DIST $MMCV_VERSION does not fit or does" \
            "not import with torch $TORCH ($(why_not mmcv.ops)): replacing it"
        WHEEL=""
        for dir in "$LOCAL_CACHE/torch-$TORCH_TAG" "$USER_CACHE/torch-$TORCH_TAG"; do
            for cand in "$dir/$MMCV_WHEEL_GLOB"-*-"$PYTAG"-*.whl; do
                [ -f "$cand" ] && satisfies "$(basename "$cand" | cut -d- -f2)" || continue
                log "trying cached $cand"
                install_wheel "$cand"
                if "$PY" -c 'import mmcv.ops' 2>/dev/null; then WHEEL="$cand"; break 2; fi
                # e.g. built for another build of this torch version (undefined symbol)
                log "cached $cand does not import with torch $TORCH ($(why_not mmcv.ops)):" \
                    "deleted from the cache"
                rm -f "$cand"
            done
        done
        if [ -z "$WHEEL" ]; then
            BUILD_DIR="$LOCAL_CACHE/torch-$TORCH_TAG"
            log "building $MMCV_SPEC with C++ ops against torch $TORCH ($PREFIX)," \
                "$MAX_JOBS parallel jobs (13-31 min on 2 cores; once: the wheel is cached)"
            mkdir -p "$BUILD_DIR"
            BUILD_LOG="$BUILD_DIR/build.log"
            if [ "$STACK" = openmmlab ]; then
                # mmcv's setup.py imports pkg_resources in a way setuptools >= 70 breaks: the
                # older one is used for this build only and pyproject.toml's is restored after.
                "${INSTALL[@]}" 'setuptools<70'
            else
                # onedl-mmcv's build-system wants setuptools >= 80 and packaging >= 24.2
                "${INSTALL[@]}" 'setuptools>=80' 'packaging>=24.2'
            fi
            CXX_ENV=()
            if grep -q '__cplusplus < 202002L' "$("$PY" -c 'import os, torch
print(os.path.join(os.path.dirname(torch.__file__), "include", "ATen", "ATen.h"))')"; then
                # this torch's headers require C++20 (torch >= 2.14: ATen/ATen.h), but mmcv's
                # setup.py (mmcv 2.1.0, onedl-mmcv 2.3.6) puts -std=c++17 after every other flag:
                # the compiles go through a wrapper of the compiler that asks for C++20 instead
                WRAPPER="$BUILD_DIR/cxx20"
                printf '%s\n' '#!/usr/bin/env bash' \
                    '# mmcv asks for -std=c++17; torch >= 2.14 needs C++20 (tools/install.sh)' \
                    'args=(); for a in "$@"; do' \
                    '    if [ "$a" = -std=c++17 ]; then args+=(-std=c++20); else args+=("$a"); fi' \
                    "done; exec ${CXX:-c++} \"\${args[@]}\"" > "$WRAPPER"
                chmod +x "$WRAPPER"
                CXX_ENV=(CXX="$WRAPPER")
                log "torch $TORCH needs C++20 and $MMCV_DIST asks for C++17: compiling with" \
                    "$WRAPPER (-std=c++17 becomes -std=c++20)"
            fi
            set +e
            # pip's wheel cache is keyed by the sdist, not by torch: --no-cache-dir, so that a
            # wheel built against another torch is never taken from it. --no-build-isolation:
            # the build sees this torch (onedl-mmcv declares none and skips its ops without).
            # ninja prints "[k/n] ..." per compiled file: shown as progress, the rest in a log.
            env "${CXX_ENV[@]}" MMCV_WITH_OPS=1 MAX_JOBS=$MAX_JOBS FORCE_CUDA=0 \
                "${PIP[@]}" wheel -v --no-cache-dir \
                --no-build-isolation --no-deps "$MMCV_SPEC" -w "$BUILD_DIR" 2>&1 \
                | tee "$BUILD_LOG" | grep --line-buffered -oE "^\s*\[[0-9]+/[0-9]+\]" \
                | sed -u "s/^/[install] $MMCV_DIST compile /"
            status=${PIPESTATUS[0]}
            set -e
            "${INSTALL[@]}" "$SETUPTOOLS"
            if [ "$status" -ne 0 ]; then
                log "$MMCV_DIST build failed; last lines of $BUILD_LOG:"; tail -n 30 "$BUILD_LOG"
                exit 1
            fi
            WHEEL=$(ls -t "$BUILD_DIR/$MMCV_WHEEL_GLOB"-*-"$PYTAG"-*.whl | head -n1)
            log "installing $WHEEL"
            install_wheel "$WHEEL"
            "$PY" -c 'import mmcv.ops' 2>/dev/null \
                || die "$MMCV_DIST built against torch $TORCH does not import: $(why_not mmcv.ops)"
            mkdir -p "$USER_CACHE/torch-$TORCH_TAG" \
                && cp -f "$WHEEL" "$USER_CACHE/torch-$TORCH_TAG/" || true
        fi
        log "$MMCV_DIST from $WHEEL: mmcv.ops imports with torch $TORCH"
    fi
fi

log "installing convnext_backbone[$EXTRAS] (editable) and its dependencies ($STACK stack)"
# pyproject.toml's requirements resolved together under the constraints, with mmcv as installed
# above (upstream: mmcv or mmcv-lite) and without what this torch excludes
REQUIREMENTS=$(pyproject requirements "$EXTRAS" "$MMCV_REQUIREMENT" "$TORCH_DIST")
mapfile -t REQUIREMENTS <<< "$REQUIREMENTS"
"${INSTALL[@]}" --no-build-isolation --no-deps -e "$ROOT[$EXTRAS]"
"${INSTALL[@]}" "${REQUIREMENTS[@]}"
"$PY" -c "$CHECK" || die "the installed environment fails: $PY -c '$CHECK'"
# our kernels (convnext_backbone/native), cached by torch, Python and source in
# ~/.cache/convnext-backbone/native; without them the blocks and outputs run their modules
log "building convnext_backbone's kernels for torch $TORCH (cached)"
"$PY" -c 'from convnext_backbone import native; print(native.build())' \
    || log "warning: our kernels did not build; the blocks and outputs will run their modules"
echo "$KEY" > "$STAMP"
log "done ($PREFIX): $("$PY" -c 'import importlib.metadata as m
names = ("torch", "torchvision", "numpy", "opencv-python", "mmengine", "mmcv", "mmcv-lite", "mmdet",
         "mmsegmentation", "onedl-mmengine", "onedl-mmcv", "onedl-mmdetection",
         "onedl-mmsegmentation")
def version(name):
    try: return m.version(name)
    except m.PackageNotFoundError: return None
print(", ".join(f"{n} {version(n)}" for n in names if version(n)))')"
