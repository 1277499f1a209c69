"""A label from generated token ids, the same way for every backend that decodes them itself
(`ct2`, `vllm`): the text up to the first EOS, parsed; the score's definition is in
`scoring.py`."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from condlabel.labelers.base import LabelResult
from condlabel.labelers.prompts import parse_label


def generated_label(
    tokenizer: Any,
    tokens: Sequence[int],
    eos_ids: Collection[int],
    logprob: float,
    *,
    truncated: bool,
    input_tokens: int,
    padded_tokens: int | None,
    prefix: str = "",
) -> LabelResult:
    """`tokens`: the generated ids (EOS included when the model stopped, else cut at
    `max_new_tokens`: `label_truncated`); `prefix`: what the prompt ended with that the model
    continues (a causal labeler's "Synopsis:")."""
    n = len(tokens)
    stopped = bool(tokens) and tokens[-1] in eos_ids
    text = tokenizer.decode(list(tokens[:-1] if stopped else tokens), skip_special_tokens=False)
    parsed = parse_label(prefix + text)
    return LabelResult(
        synopsis=parsed.synopsis,
        tags=parsed.tags,
        raw_output=text,
        parse_ok=parsed.ok,
        logprob=logprob,
        mean_logprob=logprob / n if n else 0.0,
        num_generated_tokens=n,
        truncated=truncated,
        label_truncated=parsed.truncated or not stopped,
        input_tokens=input_tokens,
        padded_tokens=padded_tokens,
        extra={"generated_ids": list(tokens)},
    )
