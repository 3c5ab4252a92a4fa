#!/usr/bin/env bash
# Installs everything convnext-backbone needs, idempotently.
#
# Uses the active Python environment ($VIRTUAL_ENV or $CONDA_PREFIX) when there is one, otherwise
# creates ./.venv. mmcv 2.1.0 has no wheel for recent torch, so it is built once from source with
# its C++ ops (~12 min on 2 cores) and the wheel is cached in ./.wheels and in
# ${XDG_CACHE_HOME:-~/.cache}/convnext-backbone/wheels; later runs reuse it.
# A second run with nothing to do finishes in seconds (stamp file keyed on this script + setup.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

MMCV_VERSION=2.1.0
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
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
KEY=$(cat "$ROOT/tools/install.sh" "$ROOT/setup.py" | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$KEY" ] && "$PY" -c 'import mmcv.ops, mmdet, mmseg, convnext_backbone' 2>/dev/null; then
    log "up to date ($PREFIX)"
    exit 0
fi

PIP=("$PY" -m pip --disable-pip-version-check)
# torch asks for setuptools >= 77; mmengine resolves 'mmdet::' config paths with pkg_resources,
# which setuptools 81 removed.
SETUPTOOLS='setuptools>=77.0.3,<81'
"${PIP[@]}" install -q --upgrade 'pip>=23' wheel ninja "$SETUPTOOLS"

if "$PY" -c 'import torch' 2>/dev/null; then
    log "keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
    log "installing torch==$TORCH_VERSION"
    "${PIP[@]}" install -q "torch==$TORCH_VERSION"
fi

# mmcv's build and runtime requirements (installed first so that the source build needs nothing more).
"${PIP[@]}" install -q 'mmengine==0.10.7' 'numpy>=1.24' opencv-python-headless addict yapf pyyaml \
    packaging Pillow termcolor

if "$PY" -c 'import mmcv.ops; assert mmcv.__version__ == "'$MMCV_VERSION'"' 2>/dev/null; then
    log "mmcv $MMCV_VERSION with ops already installed"
else
    TORCH_TAG=$("$PY" -c 'import torch; print(torch.__version__.replace("+", "_"))')
    PYTAG=$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
    TAGGED_DIR="$USER_CACHE/torch-$TORCH_TAG"
    LOCAL_DIR="$LOCAL_CACHE/torch-$TORCH_TAG"
    WHEEL=""
    for d in "$LOCAL_DIR" "$TAGGED_DIR"; do
        cand=$(ls "$d"/mmcv-$MMCV_VERSION-$PYTAG-*.whl 2>/dev/null | head -n1 || true)
        if [ -n "$cand" ]; then WHEEL="$cand"; break; fi
    done
    if [ -z "$WHEEL" ]; then
        log "building mmcv $MMCV_VERSION with C++ ops against torch $TORCH_TAG (about 12 min on 2 cores, once)"
        mkdir -p "$LOCAL_DIR"
        BUILD_LOG="$LOCAL_DIR/build.log"
        # ninja prints "[k/n] ..." per compiled file: show those as progress, keep the rest in a log.
        # mmcv 2.1.0's setup.py needs setuptools < 70 for the build only; restored right after.
        "${PIP[@]}" install -q 'setuptools<70' 2>/dev/null
        set +e
        MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} FORCE_CUDA=0 "${PIP[@]}" wheel -v --no-build-isolation \
            --no-deps "mmcv==$MMCV_VERSION" -w "$LOCAL_DIR" 2>&1 | tee "$BUILD_LOG" \
            | grep --line-buffered -oE "^\s*\[[0-9]+/[0-9]+\]" | sed -u 's/^/[install] mmcv compile /'
        status=${PIPESTATUS[0]}
        set -e
        "${PIP[@]}" install -q "$SETUPTOOLS"
        if [ "$status" -ne 0 ]; then
            log "mmcv build failed; last lines of $BUILD_LOG:"; tail -n 30 "$BUILD_LOG"; exit 1
        fi
        WHEEL=$(ls "$LOCAL_DIR"/mmcv-$MMCV_VERSION-*.whl | head -n1)
        mkdir -p "$TAGGED_DIR" && cp -f "$WHEEL" "$TAGGED_DIR/" || true
    fi
    log "installing $WHEEL"
    "${PIP[@]}" install -q --no-deps --force-reinstall "$WHEEL"
fi

log "installing mmdet, mmseg, test tools and convnext_backbone (editable)"
"${PIP[@]}" install -q 'mmdet==3.3.0' 'mmsegmentation==1.2.2' pycocotools ftfy regex \
    'pytest>=7' ruff safetensors matplotlib scipy shapely terminaltables
"${PIP[@]}" install -q --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c 'import mmcv.ops, mmdet, mmseg, convnext_backbone'
echo "$KEY" > "$STAMP"
log "done: $("$PY" -c 'import torch, mmcv, mmdet, mmseg, mmengine, numpy; print(f"torch {torch.__version__}, mmcv {mmcv.__version__}, mmengine {mmengine.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, numpy {numpy.__version__}")')"
