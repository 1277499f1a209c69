"""Labels that always parse (`constrain_format: true` on the `hf`, `ct2` and `vllm` backends).

The label is generated as two capped slots; the program writes the literal parts:

    Synopsis:            literal (a causal prompt that already ends with `Synopsis:` skips it)
    <synopsis slot>      at most S model tokens, no `[`/`]`, never empty
     Tags: [             literal (kept as the model wrote it when the model wrote the marker)
    <tag-list slot>      at most T model tokens, no `[`/`]`
    ]                    literal (the model's own `]` when it closed the list itself)

A slot ends when the model picks one of its end tokens (EOS, or a lone `[` after the synopsis /
a lone `]` after the tags), or when it has had its S (T) tokens: then it hit its cap, the row is
`label_truncated`, and a tag list cut at its cap loses its partial last tag. S + T + the
literals + EOS fit `max_new_tokens` (`slot_plan` checks), so every label closes. The split: S
takes 60% of what the literals leave, T the rest.

What the model may write in a slot is a fixed set of tokens per slot (tokens whose text holds
no bracket; no special tokens; the synopsis slot no whitespace-only token, so it is never
empty): a vocabulary mask computed once per labeler (`SlotPlan`). Every backend uses the same
sets: `hf` masks logits in its decode loop (`condlabel.labelers.constrained_hf`), `ct2` passes
the banned ones as `suppress_sequences` with `target_prefix`, `end_token` and
`max_decoding_length` per slot, `vllm` passes `allowed_token_ids` and `stop_token_ids` in two
requests per chunk (the second shares the first's prompt: the prefix cache serves it). Why no
grammar library: bench/README.md (structured output).

Score: `logprob` is the sum of the model's raw log-probabilities (before the slot mask and the
sampling warpers) of the tokens the model chose that stand in the label: the slot tokens, the
model's own `[` / `]` when kept. The literals the program wrote are not the model's choice and
do not count, nor does an end token the program replaced by its literal (EOS or a `[` without
`Tags:` before it), nor the final EOS, which the program writes. The tokens of a partial last tag
count (the model chose them; the label drops them). `num_generated_tokens` counts the same
tokens and `mean_logprob` is their mean. Each backend computes this over the same token stream
(`SlotRecord.stream`): `hf` from its step scores, `ct2` by `score_batch` over the stream, `vllm`
from the two requests' log-probabilities.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from condlabel.labelers.base import LabelResult
from condlabel.labelers.prompts import parse_label

LEAD = "Synopsis:"
TAGS_LITERAL = " Tags: ["
CLOSE = "]"
SYNOPSIS_SHARE = 0.6
"""Share of the slot budget the synopsis slot gets; the tag list gets the rest."""

_MARKER_AT_END = re.compile(r"\btags?\s*:\s*$", re.I)
_PROMPT_LEADS = re.compile(r"synopsis\s*:\s*$", re.I)


@dataclass(frozen=True)
class SlotPlan:
    """The token sets and caps of one labeler's slot program (see the module docstring)."""

    tokenizer: Any
    eos_ids: list[int]
    lead: list[int]
    """`Synopsis:` as tokens, or empty when the prompt ends with it."""
    tags_literal: list[int]
    close: list[int]
    synopsis_cap: int
    tags_cap: int
    synopsis_tokens: frozenset[int]
    """What the synopsis slot may hold."""
    synopsis_ends: frozenset[int]
    """EOS and the lone `[` tokens: the model ends the synopsis."""
    tags_tokens: frozenset[int]
    tags_ends: frozenset[int]
    """EOS and the lone `]` tokens: the model closes the list."""
    vocab_size: int

    def banned(self, allowed: Collection[int]) -> list[int]:
        """Every id of the model's vocabulary outside `allowed` (what ct2 suppresses)."""
        return [i for i in range(self.vocab_size) if i not in allowed]


def slot_plan(
    tokenizer: Any,
    eos_ids: Sequence[int],
    *,
    vocab_size: int,
    max_new_tokens: int,
    prompt_suffix: str,
    causal: bool,
    section: str,
) -> SlotPlan:
    """The plan of one labeler: literals tokenized once, the slot vocabularies from each token's
    text, the caps from `max_new_tokens` (an error names `<section>.max_new_tokens` when the
    literals leave no room for both slots)."""
    words = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    special = set(tokenizer.all_special_ids) | set(eos_ids)
    regular: set[int] = set()
    syn_ends, tag_ends = set(eos_ids), set(eos_ids)
    for i, word in enumerate(words):
        if i in special or i >= vocab_size:
            continue
        if word.strip() == "[":
            syn_ends.add(i)
        elif word.strip() == "]":
            tag_ends.add(i)
        elif "[" not in word and "]" not in word:
            regular.add(i)
    # Whitespace-only tokens would let a synopsis be empty (then nothing parses).
    synopsis_tokens = frozenset(i for i in regular if words[i].strip())

    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    lead = [] if causal and _PROMPT_LEADS.search(prompt_suffix) else encode(LEAD)
    tags_literal, close = encode(TAGS_LITERAL), encode(CLOSE)
    budget = max_new_tokens - len(lead) - len(tags_literal) - len(close) - 1  # 1: the EOS
    if budget < 2:
        raise ValueError(
            f"{section}.max_new_tokens: {max_new_tokens} leaves no room for the label's slots "
            f"with constrain_format (its literals take {max_new_tokens - budget} tokens); "
            f"raise it to at least {max_new_tokens - budget + 2}"
        )
    synopsis_cap = min(budget - 1, max(1, round(budget * SYNOPSIS_SHARE)))
    return SlotPlan(
        tokenizer=tokenizer,
        eos_ids=list(eos_ids),
        lead=lead,
        tags_literal=tags_literal,
        close=close,
        synopsis_cap=synopsis_cap,
        tags_cap=budget - synopsis_cap,
        synopsis_tokens=synopsis_tokens,
        synopsis_ends=frozenset(syn_ends),
        tags_tokens=frozenset(regular),
        tags_ends=frozenset(tag_ends),
        vocab_size=vocab_size,
    )


def after_synopsis(plan: SlotPlan, chosen: Sequence[int]) -> tuple[list[int], bool]:
    """What follows the synopsis slot `chosen` (the model's tokens, its end token last when it
    ended the slot): (the tokens that stand after the slot's content, whether the first of them
    is the model's own). The model's `[` stays when the model wrote the `Tags:` marker before
    it; otherwise the program writes ` Tags: [` (in place of EOS or a bare `[`)."""
    if len(chosen) == 0 or chosen[-1] not in plan.synopsis_ends:
        return plan.tags_literal, False  # the slot hit its cap
    end = chosen[-1]
    if end not in plan.eos_ids:
        content = plan.tokenizer.decode(list(chosen[:-1]), skip_special_tokens=False)
        if _MARKER_AT_END.search(content):
            return [end], True
    return plan.tags_literal, False


def after_tags(plan: SlotPlan, chosen: Sequence[int]) -> tuple[list[int], bool]:
    """The closing after the tag-list slot: the model's own `]`, else the literal."""
    if chosen and chosen[-1] in plan.tags_ends and chosen[-1] not in plan.eos_ids:
        return [chosen[-1]], True
    return plan.close, False


def slot_ended(chosen: Sequence[int], ends: Collection[int], cap: int) -> bool:
    """The model ended the slot (its last token is an end token) rather than hitting `cap`."""
    return bool(chosen) and chosen[-1] in ends and len(chosen) <= cap


@dataclass(frozen=True)
class SlotRecord:
    """One label's token stream (the generated ids, final EOS excluded) and, per position,
    whether it counts in the score (the model's own token that stands in the label)."""

    stream: list[int]
    counted: list[bool]
    synopsis_kept: int
    """Tokens of the synopsis slot's output that stand in the stream (its end token dropped
    when the program replaced it)."""
    tags_kept: int
    synopsis_capped: bool
    tags_capped: bool
    tags_start: int
    """Where the tag-list slot's content starts in the stream."""
    tags_content: int
    """Its content tokens (the end token excluded)."""

    @property
    def capped(self) -> bool:
        """A slot hit its cap: the row's `label_truncated`."""
        return self.synopsis_capped or self.tags_capped


def slot_record(plan: SlotPlan, synopsis: Sequence[int], tags: Sequence[int]) -> SlotRecord:
    """The stream of a label from what the model chose in each slot (end token last when the
    model ended the slot; exactly the cap's length when it did not)."""
    syn_ended = slot_ended(synopsis, plan.synopsis_ends, plan.synopsis_cap)
    tags_ended = slot_ended(tags, plan.tags_ends, plan.tags_cap)
    syn_content = list(synopsis[:-1] if syn_ended else synopsis)
    tag_content = list(tags[:-1] if tags_ended else tags)
    middle, middle_own = after_synopsis(plan, synopsis)
    closing, closing_own = after_tags(plan, tags)
    stream = [*plan.lead, *syn_content, *middle, *tag_content, *closing]
    counted = (
        [False] * len(plan.lead)
        + [True] * len(syn_content)
        + [middle_own] * len(middle)
        + [True] * len(tag_content)
        + [closing_own] * len(closing)
    )
    return SlotRecord(
        stream=stream,
        counted=counted,
        synopsis_kept=len(syn_content) + int(middle_own),
        tags_kept=len(tag_content) + int(closing_own),
        synopsis_capped=not syn_ended,
        tags_capped=not tags_ended,
        tags_start=len(plan.lead) + len(syn_content) + len(middle),
        tags_content=len(tag_content),
    )


def constrained_label(
    plan: SlotPlan,
    record: SlotRecord,
    logprob: float,
    *,
    parse_prefix: str,
    truncated: bool,
    input_tokens: int,
    padded_tokens: int | None,
) -> LabelResult:
    """The row of one constrained label: the text of its stream (a tag list cut at its cap
    without its partial last tag), parsed with the one parser, scored by `logprob` (the sum over
    the counted positions)."""
    tokenizer = plan.tokenizer
    text = tokenizer.decode(record.stream, skip_special_tokens=False)
    if record.tags_capped:
        head = tokenizer.decode(record.stream[: record.tags_start], skip_special_tokens=False)
        content = tokenizer.decode(
            record.stream[record.tags_start : record.tags_start + record.tags_content],
            skip_special_tokens=False,
        )
        kept, comma, _partial = content.rpartition(",")
        text = head + (kept if comma else "") + tokenizer.decode(plan.close)
    parsed = parse_label(parse_prefix + text)
    n = sum(record.counted)
    return LabelResult(
        synopsis=parsed.synopsis,
        tags=parsed.tags,
        raw_output=text,
        parse_ok=parsed.ok,
        logprob=logprob,
        mean_logprob=logprob / n if n else 0.0,
        num_generated_tokens=n,
        truncated=truncated,
        label_truncated=record.capped,
        input_tokens=input_tokens,
        padded_tokens=padded_tokens,
        # per generated id, whether it counts in the score (the final EOS never does)
        extra={
            "generated_ids": [*record.stream, plan.eos_ids[0]],
            "counted": [*record.counted, False],
        },
    )


def counted_sum(values: Sequence[float], counted: Sequence[bool]) -> float:
    """The score over a stream: `values` per position (log-probabilities), summed where counted."""
    return float(sum(v for v, c in zip(values, counted, strict=False) if c))
