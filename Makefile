# The virtual environment is created on first use; every target below installs what it needs.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
DATA_DIR ?= ../shared/data

.PHONY: help install demo test test-slow bench clean clean-outputs

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch and torchvision come from the package index as a matching pair (CUDA-enabled builds)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the package with its dev extra

demo: $(STAMP)  ## quickstart: train natural, pgd_at and ig_norm on the embedded digits set, attack predictions and explanations, print NA, AA, IN, CO
	OMP_NUM_THREADS=1 $(PY) src/train.py -m experiment=quickstart

test: $(STAMP)  ## the default (fast) test suite
	$(PY) -m pytest

test-slow: $(STAMP)  ## real-data runs (needs DATA_DIR, default ../shared/data)
	DATA_DIR=$(DATA_DIR) $(PY) -m pytest -m slow

bench: $(STAMP)  ## benchmarks against peer libraries and the plain-PyTorch limit
	DATA_DIR=$(DATA_DIR) $(PY) bench/run_all.py

clean-outputs:  ## delete run directories
	rm -rf outputs/*/

clean:  ## delete the virtual environment and caches
	rm -rf $(VENV) .cache .pytest_cache .hypothesis
