#!/usr/bin/env bash
# Installs convnext-backbone and everything it needs, idempotently, from pyproject.toml.
#
# Uses the active Python environment ($VIRTUAL_ENV or $CONDA_PREFIX) when there is one, otherwise
# creates ./.venv. Then:
#   1. torch: kept when installed, else torch==$TORCH_VERSION (default 2.13.0: a CPU build);
#   2. mmcv: PyPI has no wheel of mmcv 2.x for recent torch, so the newest release that
#      pyproject.toml's `mmcv` requirement admits is built once from source with its C++ ops
#      (MAX_JOBS parallel compiles, default: the number of cores; about 30 min on 2 cores) and
#      the wheel is cached in ./.wheels and ${XDG_CACHE_HOME:-~/.cache}/convnext-backbone/wheels;
#      later runs install the cached wheel;
#   3. the package itself, editable, with the extras in $EXTRAS (default: dev = all + test + deploy).
# A second run with nothing to do finishes in seconds (stamp keyed on this script and
# pyproject.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

TORCH_VERSION=${TORCH_VERSION:-2.13.0}
EXTRAS=${EXTRAS:-dev}
MAX_JOBS=${MAX_JOBS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN || echo 2)}
USER_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/convnext-backbone/wheels"
LOCAL_CACHE="$ROOT/.wheels"

log() { printf '[install] %s\n' "$*"; }

if [ -n "${VIRTUAL_ENV:-}" ]; then
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
STAMP="$PREFIX/.convnext-backbone-installed"
KEY=$(cat "$ROOT/tools/install.sh" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] \
        && "$PY" -c 'import mmcv.ops, mmdet, mmseg, convnext_backbone' 2>/dev/null; then
    log "up to date ($PREFIX)"
    exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check)
# What pyproject.toml declares: the build requirement of setuptools and the mmcv requirement.
"${PIP[@]}" install -q 'pip>=23' 'tomli; python_version < "3.11"' packaging
read_pyproject() {  # read_pyproject build|mmcv
    "$PY" - "$1" <<'EOF'
import sys
try:
    import tomllib
except ImportError:  # Python < 3.11
    import tomli as tomllib
with open('pyproject.toml', 'rb') as f:
    project = tomllib.load(f)
if sys.argv[1] == 'build':
    print(' '.join(project['build-system']['requires']))
else:
    from packaging.requirements import Requirement
    print(next(r for r in project['project']['dependencies'] if Requirement(r).name == 'mmcv'))
EOF
}
SETUPTOOLS=$(read_pyproject build)
MMCV_SPEC=$(read_pyproject mmcv)
"${PIP[@]}" install -q wheel ninja "$SETUPTOOLS"

if "$PY" -c 'import torch' 2>/dev/null; then
    log "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    log "installing torch==$TORCH_VERSION"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
fi

satisfies() {  # satisfies VERSION: whether VERSION meets $MMCV_SPEC
    "$PY" -c 'import sys; from packaging.requirements import Requirement
sys.exit(0 if Requirement(sys.argv[1]).specifier.contains(sys.argv[2], prereleases=True) else 1)' \
        "$MMCV_SPEC" "$1"
}
INSTALLED=$("$PY" -c 'import mmcv.ops, mmcv; print(mmcv.__version__)' 2>/dev/null || true)
if [ -n "$INSTALLED" ] && satisfies "$INSTALLED"; then
    log "mmcv $INSTALLED with ops already installed"
else
    TORCH_TAG=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
    PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    WHEEL=""
    for dir in "$LOCAL_CACHE/torch-$TORCH_TAG" "$USER_CACHE/torch-$TORCH_TAG"; do
        for cand in "$dir"/mmcv-*-"$PYTAG"-*.whl; do
            [ -f "$cand" ] || continue
            version=$(basename "$cand" | cut -d- -f2)
            if satisfies "$version"; then WHEEL="$cand"; break 2; fi
        done
    done
    if [ -z "$WHEEL" ]; then
        BUILD_DIR="$LOCAL_CACHE/torch-$TORCH_TAG"
        log "building mmcv ($MMCV_SPEC) with C++ ops against torch $TORCH_TAG, $MAX_JOBS parallel" \
            "jobs (about 30 min on 2 cores; once: the wheel is cached)"
        mkdir -p "$BUILD_DIR"
        BUILD_LOG="$BUILD_DIR/build.log"
        # mmcv's setup.py imports pkg_resources in a way setuptools >= 70 breaks: the older one is
        # used for this build only and pyproject.toml's is restored right after.
        "${PIP[@]}" install -q 'setuptools<70'
        set +e
        # ninja prints "[k/n] ..." per compiled file: shown as progress, the rest kept in a log.
        MMCV_WITH_OPS=1 MAX_JOBS=$MAX_JOBS FORCE_CUDA=0 "${PIP[@]}" wheel -v --no-build-isolation \
            --no-deps "$MMCV_SPEC" -w "$BUILD_DIR" 2>&1 | tee "$BUILD_LOG" \
            | grep --line-buffered -oE "^\s*\[[0-9]+/[0-9]+\]" | sed -u 's/^/[install] mmcv compile /'
        status=${PIPESTATUS[0]}
        set -e
        "${PIP[@]}" install -q "$SETUPTOOLS"
        if [ "$status" -ne 0 ]; then
            log "mmcv build failed; last lines of $BUILD_LOG:"; tail -n 30 "$BUILD_LOG"; exit 1
        fi
        WHEEL=$(ls -t "$BUILD_DIR"/mmcv-*-"$PYTAG"-*.whl | head -n1)
        mkdir -p "$USER_CACHE/torch-$TORCH_TAG" && cp -f "$WHEEL" "$USER_CACHE/torch-$TORCH_TAG/" || true
    fi
    log "installing $WHEEL"
    "${PIP[@]}" install -q --force-reinstall --no-deps "$WHEEL"
fi

log "installing convnext_backbone[$EXTRAS] (editable) and its dependencies"
"${PIP[@]}" install -q --no-build-isolation -e "$ROOT[$EXTRAS]"
"$PY" -c 'import mmcv.ops, mmdet, mmseg, convnext_backbone'
echo "$KEY" > "$STAMP"
log "done: $("$PY" -c 'import torch, mmcv, mmdet, mmseg, mmengine, numpy; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, numpy {numpy.__version__}")')"
