# All targets install what they need first (idempotent: seconds when up to date).
SHELL := /bin/bash
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(if $(CONDA_PREFIX),$(CONDA_PREFIX)/bin/python,$(CURDIR)/.venv/bin/python))

.PHONY: install test lint demo smoke
install:
	bash tools/install.sh

test: install
	$(PY) -m ruff check convnext_backbone tools tests configs
	$(PY) -m pytest -q tests

lint: install
	$(PY) -m ruff check convnext_backbone tools tests configs

smoke: install
	$(PY) tools/smoke.py

demo: install
	bash tools/demo.sh
