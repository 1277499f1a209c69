"""The slot program on the engines that decode by themselves (`constrain_format: true` on `ct2`
and `vllm`; the slots and the score are defined in `condlabel.labelers.constrained`).

Neither engine takes a per-step hook from us, so each slot is one engine call over the batch,
with the slot's vocabulary, end tokens and cap given as the engine's own options; between the
two calls the program decides, per chunk, what it writes after the synopsis (`after_synopsis`).

- `ct2`: `translate_batch` with `target_prefix` (what stands before the slot), `end_token`,
  `max_decoding_length` (prefix + cap: CTranslate2 counts the prefix and the end token) and the
  tokens outside the slot as `suppress_sequences`; the synopsis slot also gets
  `min_decoding_length` (prefix + 1: never empty). The scores of a constrained call are not the
  raw ones (suppression renormalises), so one `score_batch` over the finished streams gives the
  raw log-probability of every position; the counted ones are summed.
- `vllm`: two requests per chunk, as token ids; `allowed_token_ids` is the slot's vocabulary,
  `stop_token_ids` its end tokens, `max_tokens` its cap (`min_tokens=1` for the synopsis). The
  second request's prompt is the first's plus the synopsis: the prefix cache serves the shared
  part. Its log-probabilities are raw (`logprobs_mode=raw_logprobs`, before the mask).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from condlabel.labelers.base import LabelResult
from condlabel.labelers.constrained import (
    SlotPlan,
    after_synopsis,
    constrained_label,
    counted_sum,
    slot_ended,
    slot_plan,
)

if TYPE_CHECKING:
    from condlabel.labelers.ct2 import CT2Labeler
    from condlabel.labelers.vllm import VLLMLabeler


def engine_plan(labeler: Any, vocab_size: int, section: str, causal: bool) -> SlotPlan:
    """The plan of a `ct2` or `vllm` labeler (after its encoding is set up)."""
    return slot_plan(
        labeler.tokenizer,
        labeler.eos_ids,
        vocab_size=vocab_size,
        max_new_tokens=labeler.cfg.max_new_tokens,
        prompt_suffix=labeler.encoding.suffix,
        causal=causal,
        section=section,
    )


def _plan(labeler: Any) -> SlotPlan:
    if labeler.slot_plan is None:
        raise RuntimeError("constrained labels asked of a labeler without constrain_format")
    return labeler.slot_plan


def _tags_prefix(plan: SlotPlan, synopsis: list[int]) -> list[int]:
    """What stands before the tag-list slot: the lead, the synopsis' content, what follows it."""
    after, _own = after_synopsis(plan, synopsis)
    content = (
        synopsis[:-1] if slot_ended(synopsis, plan.synopsis_ends, plan.synopsis_cap) else synopsis
    )
    return [*plan.lead, *content, *after]


# --------------------------------------------------------------------------- ct2


def ct2_label(labeler: CT2Labeler, texts: list[str]) -> list[LabelResult]:
    """Constrained labels on CTranslate2: two decoding calls and one scoring pass."""
    from condlabel.labelers.constrained import slot_record

    plan = _plan(labeler)
    tokenizer = labeler.tokenizer
    encoded = labeler.encoding.encode(texts)
    sources = [tokenizer.convert_ids_to_tokens(ids) for ids, _ in encoded]
    options = {**labeler._options(), "return_scores": False, "return_end_token": True}

    def tokens(ids: list[int]) -> list[str]:
        return tokenizer.convert_ids_to_tokens(ids)

    def decode_slot(prefixes: list[list[int]], cap: int, slot: str, ends, min_new: int):
        outputs = labeler.translator.translate_batch(
            sources,
            [tokens(p) for p in prefixes],
            **{
                **options,
                "end_token": sorted(ends),
                "max_decoding_length": max(len(p) for p in prefixes) + cap,
                "min_decoding_length": min(len(p) for p in prefixes) + min_new,
                "suppress_sequences": labeler.slot_banned[slot],
            },
        )
        chosen = []
        for prefix, output in zip(prefixes, outputs, strict=True):
            ids = tokenizer.convert_tokens_to_ids(output.hypotheses[0])[len(prefix) :]
            chosen.append(_cut_slot(ids, ends, cap))
        return chosen

    synopses = decode_slot(
        [plan.lead] * len(texts), plan.synopsis_cap, "synopsis", plan.synopsis_ends, 1
    )
    tag_prefixes = [_tags_prefix(plan, s) for s in synopses]
    tags = decode_slot(tag_prefixes, plan.tags_cap, "tags", plan.tags_ends, 0)
    records = [slot_record(plan, s, t) for s, t in zip(synopses, tags, strict=True)]
    scored = labeler.translator.score_batch(
        sources,
        [tokens(r.stream) for r in records],
        max_batch_size=labeler.cfg.max_batch_size,
        batch_type=labeler.cfg.batch_type,
        max_input_length=0,
    )
    return [
        constrained_label(
            plan,
            record,
            counted_sum(score.log_probs, record.counted),
            parse_prefix="",
            truncated=truncated,
            input_tokens=len(ids),
            padded_tokens=None,
        )
        for (ids, truncated), record, score in zip(encoded, records, scored, strict=True)
    ]


def _cut_slot(ids: list[int], ends, cap: int) -> list[int]:
    """A slot's tokens as the engine returned them, up to and including its first end token,
    at most `cap` (the engine's own limits already hold; this makes the rule explicit)."""
    for k, token in enumerate(ids[:cap]):
        if token in ends:
            return ids[: k + 1]
    return ids[:cap]


def ct2_banned(plan: SlotPlan, tokenizer: Any) -> dict[str, list[list[str]]]:
    """Per slot, the tokens CTranslate2 must not pick, as one-token `suppress_sequences`."""
    banned = {}
    for slot, allowed in (
        ("synopsis", plan.synopsis_tokens | plan.synopsis_ends),
        ("tags", plan.tags_tokens | plan.tags_ends),
    ):
        ids = [i for i in plan.banned(allowed) if i < len(tokenizer)]
        banned[slot] = [[t] for t in tokenizer.convert_ids_to_tokens(ids)]
    return banned


# --------------------------------------------------------------------------- vllm


def vllm_label(labeler: VLLMLabeler, texts: list[str]) -> list[LabelResult]:
    """Constrained labels on vLLM: two requests per chunk, the second on the cached prompt."""
    from vllm.inputs import TokensPrompt

    from condlabel.labelers.constrained import slot_record

    plan = _plan(labeler)
    encoded = labeler.encode(texts)

    def run(prompts: list[list[int]], cap: int, allowed, ends, min_new: int, salt: str):
        slot = {
            "max_tokens": cap,
            "min_tokens": min_new,
            "stop_token_ids": sorted(ends),
            "allowed_token_ids": allowed,
        }
        # Per-chunk seeds as unconstrained, the tag slot's salted: one stream per slot.
        params = [labeler._sampling_params(salt + text, **slot) for text in texts]
        outputs = labeler.engine.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids in prompts],
            params,
            lora_request=labeler.lora_request,
            use_tqdm=False,
        )
        chosen, logprobs = [], []
        for output in outputs:
            completion = output.outputs[0]
            ids = _cut_slot(list(completion.token_ids), ends, cap)
            steps = completion.logprobs or []
            if len(steps) < len(ids):
                raise RuntimeError(
                    f"vllm returned {len(steps)} log-probabilities for {len(ids)} tokens"
                )
            chosen.append(ids)
            logprobs.append([float(steps[k][t].logprob) for k, t in enumerate(ids)])
        return chosen, logprobs

    synopses, syn_lp = run(
        [ids + plan.lead for ids, _ in encoded],
        plan.synopsis_cap,
        labeler.slot_allowed["synopsis"],
        plan.synopsis_ends,
        1,
        "",
    )
    tags, tag_lp = run(
        [ids + _tags_prefix(plan, s) for (ids, _), s in zip(encoded, synopses, strict=True)],
        plan.tags_cap,
        labeler.slot_allowed["tags"],
        plan.tags_ends,
        0,
        "\x00tags\x00",
    )
    results = []
    for i, (ids, truncated) in enumerate(encoded):
        record = slot_record(plan, synopses[i], tags[i])
        # The kept tokens of each slot are its first ones (only an end token is ever dropped).
        logprob = counted_sum(syn_lp[i], [True] * record.synopsis_kept) + counted_sum(
            tag_lp[i], [True] * record.tags_kept
        )
        results.append(
            constrained_label(
                plan,
                record,
                logprob,
                parse_prefix=labeler.encoding.suffix,
                truncated=truncated,
                input_tokens=len(ids),
                padded_tokens=len(ids) + len(record.stream) + 1,
            )
        )
    return results


def vllm_allowed(plan: SlotPlan) -> dict[str, list[int]]:
    """Per slot, the token ids vLLM may pick (`allowed_token_ids`), end tokens included."""
    return {
        "synopsis": sorted(plan.synopsis_tokens | plan.synopsis_ends),
        "tags": sorted(plan.tags_tokens | plan.tags_ends),
    }
