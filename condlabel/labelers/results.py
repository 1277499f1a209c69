"""A label from generated token ids, the same way for every backend that decodes them itself
(`ct2`, `vllm`): the text up to the first EOS, parsed, and scored by `scoring.label_score`
(the one score definition, which `hf` calls too)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from condlabel.labelers.base import LabelResult
from condlabel.labelers.prompts import parse_label
from condlabel.labelers.scoring import label_score


def generated_label(
    tokenizer: Any,
    generated: Sequence[int],
    eos_ids: Collection[int],
    token_logprobs: Sequence[float],
    *,
    truncated: bool,
    input_tokens: int,
    padded_tokens: int | None,
    prefix: str = "",
) -> LabelResult:
    """`generated`: the ids the engine produced (EOS included when the model stopped, else cut
    at `max_new_tokens`: `label_truncated`), `token_logprobs` their raw log-probabilities, one
    per id; `prefix`: what the prompt ended with that the model continues (a causal labeler's
    "Synopsis:")."""
    score = label_score(generated, token_logprobs, eos_ids)
    tokens = score.tokens
    text = tokenizer.decode(tokens[:-1] if score.stopped else tokens, skip_special_tokens=False)
    parsed = parse_label(prefix + text)
    return LabelResult(
        synopsis=parsed.synopsis,
        tags=parsed.tags,
        raw_output=text,
        parse_ok=parsed.ok,
        logprob=score.logprob,
        mean_logprob=score.mean_logprob,
        num_generated_tokens=score.num_tokens,
        truncated=truncated,
        label_truncated=parsed.truncated or not score.stopped,
        input_tokens=input_tokens,
        padded_tokens=padded_tokens,
        extra={"generated_ids": tokens},
    )
