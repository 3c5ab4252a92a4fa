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
# The OneDL checks that need no mmcv ops (building a detector or segmentor imports them): stacks
# and packaging, every recipe loads, config prefixes, model-zoo names, torchvision's layout,
# checkpoint reading and layouts, the backbone, layer decay's argument check.
ONEDL_CORE_TESTS := tests/test_stacks.py tests/test_zoo.py tests/test_torchvision.py \
	tests/test_checkpoint.py tests/test_checkpoint_families.py tests/test_compat.py \
	tests/test_backbone.py tests/test_layer_decay.py::test_bad_paramwise_cfg_is_refused_with_what_is_allowed
CORE_TESTS := tests/test_backbone.py tests/test_compat.py tests/test_fast_paths.py \
	tests/test_module_contract.py tests/test_checkpoint.py tests/test_checkpoint_families.py \
	tests/test_backbone_arguments.py tests/test_checkpoint_errors.py tests/test_finite_loss.py \
	tests/test_cli_errors.py tests/test_datasets.py tests/test_infer.py \
	tests/test_resume.py tests/test_perf_choice.py \
	tests/test_perf_compile_hook.py tests/test_structure.py \
	tests/test_layer_decay.py::test_bad_paramwise_cfg_is_refused_with_what_is_allowed \
	tests/test_layer_decay.py::test_model_without_backbone_is_refused \
	tests/test_layer_decay.py::test_num_layers_that_does_not_fit_the_backbone_is_named \
	tests/test_layer_decay.py::test_unknown_decay_type_lists_the_known_ones
# (their other tests build mmdet/mmseg models, import every module (mmdet's users among them) or
# run mmcv's ops)
CORE_DESELECT := \
	--deselect tests/test_cli_errors.py::test_train_py_names_a_missing_dataset_folder_before_training \
	--deselect tests/test_structure.py::test_a_fresh_interpreter_imports_every_module \
	--deselect tests/test_backbone.py::test_outputs_are_contiguous_nchw_as_mmcv_ops_expect

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
	$(OLD_VENV)/bin/python -m pytest -q $(CORE_TESTS) $(CORE_DESELECT)

test-onedl-core: install-onedl-core
	$(ONEDL_VENV)/bin/python -m pytest -q $(ONEDL_CORE_TESTS)

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
