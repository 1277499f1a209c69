"""`constrain_format`: labels generated as capped slots always parse, on `hf` (seq2seq and
causal) and `ct2`, even from random untrained models that, left to themselves, parse almost
never; the score sums the model's own tokens only (raw log-probabilities, checked against a
teacher-forced pass); a slot that hits its cap sets `label_truncated` and a cut tag list loses
its partial last tag; the setting is part of the fingerprint. (vLLM: tests/test_vllm_constrained.py.)
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_models import sample_texts  # noqa: E402

from condlabel.config import HFLabelerConfig, LabelerConfig  # noqa: E402
from condlabel.config.labelers import CT2LabelerConfig, CT2Options, HFOptions, VLLMOptions  # noqa: E402
from condlabel.labelers import labeler_fingerprint  # noqa: E402
from condlabel.labelers.constrained import (  # noqa: E402
    constrained_label,
    slot_plan,
    slot_record,
)
from condlabel.labelers.hf import HFLabeler  # noqa: E402
from condlabel.labelers.prompts import parse_label  # noqa: E402

NEW_TOKENS = 32
PLAN_TOKENS = 80  # the unit tests' plan: room for hand-written slots
CHUNKS = 100  # >= 99% parse: at most 1 failure


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(CHUNKS, min_words=10, max_words=60, seed=29)


def _hf(model, **options) -> HFLabeler:
    options = {"max_new_tokens": NEW_TOKENS, "max_batch_size": 25, **options}
    return HFLabeler(HFLabelerConfig(model=str(model), **options))


def _assert_labels_parse(results, texts, prefix: str = "") -> None:
    assert len(results) == len(texts)
    parsed = sum(r.parse_ok for r in results)
    assert parsed >= 0.99 * len(texts), f"{parsed}/{len(texts)} parsed"
    for r in results:
        assert math.isfinite(r.logprob) and r.logprob <= 0
        assert r.num_generated_tokens > 0
        # The row is exactly what the one parser reads from its text, the list closed.
        again = parse_label(prefix + r.raw_output)
        assert (again.synopsis, again.tags, again.truncated) == (r.synopsis, r.tags, False)
        assert r.raw_output.rstrip().endswith("]")


# --------------------------------------------------------------------------- config only


@pytest.mark.parametrize(
    "backend, cfg",
    [
        ("hf", HFOptions()),
        ("vllm", VLLMOptions()),
        ("ct2", CT2Options()),
    ],
)
def test_constrain_format_is_in_the_fingerprint(backend, cfg):
    plain = labeler_fingerprint(LabelerConfig(backend=backend, model="m", **{backend: cfg}))
    on = cfg.model_copy(update={"constrain_format": True})
    constrained = labeler_fingerprint(LabelerConfig(backend=backend, model="m", **{backend: on}))
    assert constrained != plain
    # Off, the field is left out: labelers from before the setting keep their fingerprints.
    dumped = cfg.model_dump()
    assert dumped["constrain_format"] is False


# --------------------------------------------------------------------------- the slot rules


@pytest.fixture(scope="module")
def plan(tiny_t5):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5)
    return slot_plan(
        tokenizer,
        [tokenizer.eos_token_id],
        vocab_size=len(tokenizer),
        max_new_tokens=PLAN_TOKENS,
        prompt_suffix="",
        causal=False,
        section="labeler.hf",
    )


def _ids(plan, text: str) -> list[int]:
    return plan.tokenizer(text, add_special_tokens=False)["input_ids"]


def _label(plan, synopsis, tags):
    record = slot_record(plan, synopsis, tags)
    return record, constrained_label(
        plan, record, -1.0, parse_prefix="", truncated=False, input_tokens=1, padded_tokens=1
    )


def test_the_slots_and_literals_fit_max_new_tokens(plan):
    literals = len(plan.lead) + len(plan.tags_literal) + len(plan.close) + 1
    assert plan.synopsis_cap >= 1 and plan.tags_cap >= 1
    assert plan.synopsis_cap + plan.tags_cap + literals == PLAN_TOKENS
    words = plan.tokenizer.batch_decode([[i] for i in sorted(plan.tags_tokens)])
    assert not any("[" in w or "]" in w for w in words)
    assert all(w.strip() for w in plan.tokenizer.batch_decode([[i] for i in plan.synopsis_tokens]))


def test_a_budget_too_small_for_the_slots_names_the_key(plan):
    with pytest.raises(ValueError, match=r"labeler\.ct2\.max_new_tokens: 6 leaves no room"):
        slot_plan(
            plan.tokenizer,
            plan.eos_ids,
            vocab_size=len(plan.tokenizer),
            max_new_tokens=6,
            prompt_suffix="",
            causal=False,
            section="labeler.ct2",
        )


def test_slots_the_model_ended_keep_its_own_bracket_and_are_not_truncated(plan):
    eos = plan.eos_ids[0]
    bracket = next(iter(plan.synopsis_ends - {eos}))
    closing = next(iter(plan.tags_ends - {eos}))
    synopsis = _ids(plan, " A short text. Tags:") + [bracket]
    record, label = _label(plan, synopsis, _ids(plan, " python, code") + [closing])
    assert (label.synopsis, label.tags) == ("A short text.", ["python", "code"])
    assert not label.label_truncated and label.parse_ok
    # the model's marker, `[` and `]` are its own tokens: everything after the lead counts
    assert record.counted == [False] * len(plan.lead) + [True] * (
        len(record.stream) - len(plan.lead)
    )


def test_an_end_token_the_program_replaces_does_not_count(plan):
    eos = plan.eos_ids[0]
    record, label = _label(plan, _ids(plan, " A short text.") + [eos], [eos])
    assert (label.synopsis, label.tags, label.label_truncated) == ("A short text.", [], False)
    assert sum(record.counted) == len(_ids(plan, " A short text."))
    assert label.raw_output == "Synopsis: A short text. Tags: []"


def test_a_capped_tag_list_drops_its_partial_last_tag(plan):
    eos = plan.eos_ids[0]
    words = " alpha, beta, gam" + " x" * plan.tags_cap
    tags = _ids(plan, words)[: plan.tags_cap]
    record, label = _label(plan, _ids(plan, " Text.") + [eos], tags)
    assert record.tags_capped and label.label_truncated
    assert label.tags == ["alpha", "beta"]
    assert label.raw_output.endswith("Tags: [ alpha, beta]")
    # its tokens were the model's choice: they count, though the label drops them
    assert sum(record.counted) == len(_ids(plan, " Text.")) + plan.tags_cap


def test_a_capped_synopsis_is_truncated_and_still_closes(plan):
    eos = plan.eos_ids[0]
    synopsis = _ids(plan, " word" * plan.synopsis_cap)[: plan.synopsis_cap]
    _record, label = _label(plan, synopsis, [eos])
    assert label.label_truncated and label.parse_ok and label.tags == []


# --------------------------------------------------------------------------- hf and ct2


# The decoder-only case is the slower one (~1-2 min): the slow tier, and vLLM's test, cover it.
@pytest.mark.parametrize("arch", ["t5", pytest.param("llama", marks=pytest.mark.slow)])
def test_hf_random_model_labels_parse_only_when_constrained(arch, texts, request):
    model = request.getfixturevalue("tiny_t5" if arch == "t5" else "tiny_llama")
    # The bare chunk as prompt: a prompt ending with `Synopsis:` would make any continuation a
    # synopsis (test_prompt_ending_with_the_marker covers that path).
    free = _hf(model, do_sample=False).label(texts)
    assert sum(r.parse_ok for r in free) <= 0.1 * len(texts)  # so the test below can fail
    results = _hf(model, do_sample=arch == "llama", constrain_format=True).label(texts)
    _assert_labels_parse(results, texts)
    # the slots really end on the model's own end tokens too, not only at their caps
    assert 0 < sum(r.label_truncated for r in results) < len(texts)


def test_prompt_ending_with_the_marker_is_continued_not_repeated(tiny_llama, texts):
    suffix = "\n\nSynopsis:"
    labeler = _hf(
        tiny_llama, do_sample=False, constrain_format=True, prompt_template="{text}" + suffix
    )
    assert labeler.slots.plan.lead == []  # the prompt wrote the marker
    results = labeler.label(texts[:20])
    _assert_labels_parse(results, texts[:20], suffix)
    assert not any("Synopsis" in r.raw_output for r in results)


def _position_logprobs(model, ids: list[int], generated: list[int]) -> list[float]:
    """The seq2seq model's raw log-probability of each generated id (teacher forcing, float64)."""
    start = model.config.decoder_start_token_id
    with torch.no_grad():
        logits = model(
            input_ids=torch.tensor([ids]), decoder_input_ids=torch.tensor([[start, *generated]])
        ).logits[0, :-1]
    logprobs = torch.log_softmax(logits.double(), -1)
    return logprobs.gather(1, torch.tensor(generated)[:, None]).squeeze(1).tolist()


def test_hf_score_is_the_raw_logprob_of_the_counted_tokens(tiny_t5, texts):
    labeler = _hf(tiny_t5, do_sample=True, constrain_format=True)
    subset = texts[:8]
    for (ids, _), result in zip(labeler.encode(subset), labeler.label(subset), strict=True):
        generated, counted = result.extra["generated_ids"], result.extra["counted"]
        values = _position_logprobs(labeler.model, ids, generated)
        # literals (the lead at least) are written by the program and never count
        assert not all(counted) and any(counted)
        expected = sum(v for v, c in zip(values, counted, strict=True) if c)
        assert result.logprob == pytest.approx(expected, abs=2e-3)
        assert result.num_generated_tokens == sum(counted)
        # a sum over every generated id would differ: the literals are not the model's choice
        assert sum(values) < expected - 1e-3


@pytest.fixture(scope="module")
def ct2_model(tiny_t5, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    from condlabel.models import merge_model

    out = tmp_path_factory.mktemp("ct2-constrained")
    return merge_model(str(tiny_t5), None, str(out / "m"), format="ct2", quantization="float32")


def test_ct2_random_model_labels_parse_and_agree_with_hf(ct2_model, tiny_t5, texts):
    from condlabel.labelers.ct2 import CT2Labeler

    options = {"max_new_tokens": NEW_TOKENS, "do_sample": False, "intra_threads": 1}
    free = CT2Labeler(CT2LabelerConfig(model=str(ct2_model), compute_type="float32", **options))
    assert sum(r.parse_ok for r in free.label(texts)) <= 0.1 * len(texts)
    labeler = CT2Labeler(
        CT2LabelerConfig(
            model=str(ct2_model), compute_type="float32", constrain_format=True, **options
        )
    )
    results = labeler.label(texts)
    _assert_labels_parse(results, texts)
    # the same slots, the same score definition: greedy labels equal the hf backend's
    hf = _hf(tiny_t5, do_sample=False, constrain_format=True)
    theirs = hf.label(texts)
    same = [a.raw_output == b.raw_output for a, b in zip(results, theirs, strict=True)]
    assert sum(same) >= 0.95 * len(texts)  # float rounding may flip a near-tie
    exact, compared = hf.model.double(), 0
    for (ids, _), a, b, equal in zip(hf.encode(texts), results, theirs, same, strict=True):
        if not equal:
            continue
        assert a.extra == b.extra  # the same ids, the same positions counted
        assert (a.label_truncated, a.num_generated_tokens) == (
            b.label_truncated,
            b.num_generated_tokens,
        )
        # Scores are compared where float32 is exact enough for this ill-conditioned tiny T5
        # (its large init; as in test_ct2_labeler.py): hf's score within 5e-4 of float64.
        values = _position_logprobs(exact, ids, b.extra["generated_ids"])
        counted = sum(v for v, c in zip(values, b.extra["counted"], strict=True) if c)
        if abs(counted - b.logprob) <= 5e-4:
            compared += 1
            # ct2's float32 `score_batch` measured up to 1.6e-3 off on such rows; a position
            # counted wrongly would be off by a token's log-probability (~3e-2 here)
            assert a.logprob == pytest.approx(b.logprob, abs=5e-3)
    # ~30 summed positions: fewer rows are well conditioned than in test_ct2_labeler.py
    assert compared >= 0.5 * len(texts), f"{compared}/{len(texts)} well conditioned"
