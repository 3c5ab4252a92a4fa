# All targets install what they need first (idempotent: seconds when up to date).
SHELL := /bin/bash
PY := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,$(if $(CONDA_PREFIX),$(CONDA_PREFIX)/bin/python,$(CURDIR)/.venv/bin/python))

.PHONY: install test lint demo bench
install:
	bash tools/install.sh

test: install
	$(PY) -m ruff check convnext_backbone tools tests configs
	$(PY) -m pytest -q tests

lint: install
	$(PY) -m ruff check convnext_backbone tools tests configs

bench: install
	$(PY) tools/benchmark.py --train --memory
	@if [ -x .venv-bench/bin/python ]; then .venv-bench/bin/python tools/benchmark.py --compare --train; \
	else echo "no .venv-bench: see the README's performance section to time timm/mmpretrain (--compare)"; fi

demo: install
	bash tools/demo.sh
