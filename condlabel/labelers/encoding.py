"""The tokens a generative labeler feeds its model, computed one way for every backend.

`prompt_encoding(...)` settles, once per labeler, what the `hf` and `vllm` backends must agree
on: the prompt template split around `{text}`, the EOS ids (generation config, then model
config, then tokenizer), and the input limit; its `encode(texts)` renders each chunk, cuts a
chunk whose prompt is over the limit (the chunk text is shortened, never the template nor the
special tokens) and flags it `truncated`. Both backends call this, so they feed a model the
same ids by construction, not by keeping two copies equal.

Pure Python over a tokenizer object: no torch import here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from condlabel.models import eos_token_ids as eos_token_ids  # shared with the merge

DEFAULT_INPUT_LIMIT = 2048
"""For models that declare no hard limit (T5/UL2 have relative positions)."""
_TOKENIZER_LIMIT_SENTINEL = 1_000_000  # tokenizers without a limit say ~1e30


@dataclass(frozen=True)
class PromptEncoding:
    """How one labeler turns chunk texts into model inputs; see the module docstring."""

    tokenizer: Any
    prefix: str
    """The template before `{text}`."""
    suffix: str
    """The template after `{text}` (a causal model continues after it)."""
    input_limit: int
    """Most tokens of one prompt, template and special tokens included."""
    eos_ids: list[int]
    """Every token id that ends a generation."""

    def encode_one(self, text: str) -> list[int]:
        return self.tokenizer(self.prefix + text + self.suffix, verbose=False)["input_ids"]

    def encode(self, texts: Sequence[str]) -> list[tuple[list[int], bool]]:
        """Token ids fed to the model for each chunk, and whether the chunk was cut."""
        if not texts:
            return []
        prompts = [self.prefix + t + self.suffix for t in texts]
        # verbose=False: over-long inputs are expected here and cut below, not an error.
        encoded = self.tokenizer(prompts, verbose=False)["input_ids"]
        return [
            (self._truncate(text, ids), True) if len(ids) > self.input_limit else (ids, False)
            for text, ids in zip(texts, encoded, strict=True)
        ]

    def _truncate(self, text: str, ids: list[int]) -> list[int]:
        """Shorten the chunk (not the template, not the special tokens) until the input fits."""
        tokenizer, limit = self.tokenizer, self.input_limit
        pieces = tokenizer(
            text, add_special_tokens=False, verbose=False, return_offsets_mapping=tokenizer.is_fast
        )
        text_ids = pieces["input_ids"]
        keep = len(text_ids) - (len(ids) - limit)
        for _ in range(8):  # merges across the cut can change the count by a token or two
            keep = max(0, keep)
            if tokenizer.is_fast:
                cut = text[: pieces["offset_mapping"][keep - 1][1]] if keep else ""
            else:
                cut = tokenizer.decode(text_ids[:keep])
            ids = self.encode_one(cut)
            if len(ids) <= limit:
                return ids
            keep -= len(ids) - limit
        return ids[:limit]  # pragma: no cover - pathological tokenizers


def prompt_encoding(
    tokenizer: Any,
    template: str,
    *,
    configured_eos: Iterable[Any],
    positions: int | None,
    causal: bool,
    max_new_tokens: int,
    max_input_tokens: int | None,
    model: str,
    section: str,
    context_key: str | None = None,
) -> PromptEncoding:
    """The encoding of one labeler. `positions` is the model's context (None when it declares
    none); a causal model's prompt and generation share it, so its prompt gets `positions -
    max_new_tokens` at most. `max_input_tokens`, when set, replaces the tokenizer's own limit.
    `section` and `context_key` (the config key that sets the context, if any) name what to
    change when the limit leaves no room for a chunk."""
    prefix, suffix = template.split("{text}")
    if max_input_tokens:
        limit = max_input_tokens
    else:
        known = [positions] if positions else []
        tokenizer_limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, int) and 0 < tokenizer_limit < _TOKENIZER_LIMIT_SENTINEL:
            known.append(tokenizer_limit)
        limit = min(known) if known else DEFAULT_INPUT_LIMIT
    if causal and positions:
        limit = min(limit, positions - max_new_tokens)
    encoding = PromptEncoding(
        tokenizer, prefix, suffix, limit, eos_token_ids(configured_eos, tokenizer, model)
    )
    overhead = len(encoding.encode_one(""))
    if limit <= overhead:
        keys = f"{context_key} or max_input_tokens," if context_key else "max_input_tokens"
        raise ValueError(
            f"{section}: input limit {limit} tokens leaves no room for the chunk (template and "
            f"special tokens take {overhead}); raise {keys} or lower max_new_tokens"
        )
    return encoding
