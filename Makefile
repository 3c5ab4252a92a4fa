# All targets install what they need first (idempotent: seconds when up to date).
SHELL := /bin/bash
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(if $(CONDA_PREFIX),$(CONDA_PREFIX)/bin/python,$(CURDIR)/.venv/bin/python))

# The oldest supported torch (docs/install.md#supported-torch): a venv of its own with mmcv-lite
# (no ops to build), for the core suite: the tests that need neither mmcv's ops nor mmdet/mmseg.
OLD_TORCH := 2.1.2
OLD_VENV := $(CURDIR)/.venv-torch21
# The OneDL fork (docs/install.md#two-stacks): a venv of its own, torch 2.14.1 with torchvision
# (both on this machine's disk), onedl-mmcv built with its ops (make install-onedl) or without
# them (make install-onedl-core, what CI runs: no second mmcv build).
ONEDL_VENV := $(CURDIR)/.venv-onedl
ONEDL_TORCH := torch==2.14.1 torchvision==0.29.1
ONEDL_INSTALL := VENV=$(ONEDL_VENV) STACK=onedl TORCH_PACKAGES="$(ONEDL_TORCH)"
# The suites that run without the whole stack are selected by pytest markers (pyproject.toml's
# [tool.pytest.ini_options] markers, set per file or per test): `core` (test-oldest: the tests that
# need neither mmdet/mmseg nor mmcv's ops, or skip without them; `needs_full_stack` marks the few of
# a core file that it leaves out) and `onedl_core` (test-onedl-core: stacks and packaging, every
# recipe loads, config prefixes, model-zoo names, torchvision's layout, checkpoint reading and
# layouts, the backbone, layer decay's argument check).
CORE_MARKERS := core and not needs_full_stack
ONEDL_CORE_MARKERS := onedl_core

.PHONY: install install-oldest install-onedl install-onedl-core test test-oldest test-onedl \
	test-onedl-core lint demo demo-onedl bench
install:
	bash tools/install.sh

install-oldest:
	VENV=$(OLD_VENV) TORCH_VERSION=$(OLD_TORCH) MMCV_OPS=0 STACK=openmmlab \
		EXTRAS=test,safetensors,openmmlab-core bash tools/install.sh

install-onedl:
	$(ONEDL_INSTALL) bash tools/install.sh

install-onedl-core:
	$(ONEDL_INSTALL) MMCV_OPS=0 bash tools/install.sh

test: install install-oldest
	$(PY) -m ruff check convnext_backbone tools tests configs setup.py
	$(PY) -m pytest -q tests
	$(MAKE) --no-print-directory test-oldest
	$(MAKE) --no-print-directory test-onedl-core

test-oldest: install-oldest
	$(OLD_VENV)/bin/python -m pytest -q -m "$(CORE_MARKERS)"

test-onedl-core: install-onedl-core
	$(ONEDL_VENV)/bin/python -m pytest -q -m "$(ONEDL_CORE_MARKERS)"

# the whole suite on the OneDL stack (onedl-mmcv with ops: built once, 15-30 min on 2 cores)
test-onedl: install-onedl
	$(ONEDL_VENV)/bin/python -m ruff check convnext_backbone tools tests configs setup.py
	$(ONEDL_VENV)/bin/python -m pytest -q tests

lint: install
	$(PY) -m ruff check convnext_backbone tools tests configs setup.py

bench: install
	$(PY) tools/benchmark.py --train --memory
	@if [ -x .venv-bench/bin/python ]; then .venv-bench/bin/python tools/benchmark.py --compare --train; \
	else echo "no .venv-bench: see the README's performance section to time timm/mmpretrain (--compare)"; fi

demo: install
	bash tools/demo.sh

demo-onedl: install-onedl
	PYTHON=$(ONEDL_VENV)/bin/python bash tools/demo.sh
