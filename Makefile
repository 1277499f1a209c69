# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv and installs what it needs (torch first, pinned, so pip never pulls a
# multi-GB CUDA build on a CPU machine).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test test-slow test-all lint bench install-core install-dev clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[hf,train,classify,report,dev]"
	touch $@ $(VENV)/.core

install-core: $(VENV)/.core
install-dev: $(VENV)/.dev

## demo: install the core package and run the main job on the embedded defaults
demo: $(VENV)/.core
	$(VENV)/bin/condlabel demo --output .demo

## test: install the dev extras and run the default (fast) test tier
test: $(VENV)/.dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

## test-slow: the heavy tier (ray start head + ray job submit, Ray Train)
test-slow: $(VENV)/.dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m slow $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check condlabel ray_jobs tests bench
	$(VENV)/bin/ruff format --check condlabel ray_jobs tests bench
	$(VENV)/bin/mypy condlabel

bench: $(VENV)/.dev
	$(PY) bench/pipeline_efficiency.py

clean:
	rm -rf $(VENV) .demo condlabel-output .pytest_cache
