"""Scoring definitions shared by the generative backends.

- `logprob`: the sum of the model's raw (unwarped) log-probabilities of the generated tokens,
  up to and including the first EOS. Positions after a sequence's EOS (padding, while a batch
  mate is still generating) never count, so a chunk's score does not depend on its batch mates.
  A label cut at `max_new_tokens` has no EOS and none is scored: its sum is over the tokens it
  holds, nothing else. One function computes it for every backend (`label_score`), from the
  per-token raw log-probabilities each engine reports (hf: the `StepScorer` below; ct2: its
  step callback; vllm: its per-token logprobs): scores are compared across backends (the
  cascade routes on `mean_logprob`), so they have one definition in code, not one per engine.
- `mean_logprob`: `logprob / num_generated_tokens`.

The tensors here hold one value per (sequence, step): the chosen token's log-probability is
gathered at every step, never the full-vocabulary distribution of the whole generation.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where used: the ct2 backend scores without it
    import torch


@dataclass(frozen=True)
class LabelScore:
    tokens: list[int]
    """The generated ids up to and including the first EOS (all of them when there is none)."""
    logprob: float
    mean_logprob: float
    num_tokens: int
    stopped: bool
    """Whether the label ended at EOS (else it was cut at `max_new_tokens`)."""


def label_score(
    generated: Sequence[int], token_logprobs: Sequence[float], eos_ids: Collection[int]
) -> LabelScore:
    """The score of one label, for every backend: `generated` are the ids the engine produced
    (it may run past EOS, as a padded batch row does), `token_logprobs[k]` the raw
    log-probability of `generated[k]`. Counted: the tokens up to and including the first EOS,
    each once; a label without EOS is scored over exactly its tokens (an EOS it never
    generated adds nothing). Summed in float64."""
    tokens = list(generated)
    for k, token in enumerate(tokens):
        if token in eos_ids:
            tokens = tokens[: k + 1]
            break
    n = len(tokens)
    if len(token_logprobs) < n:
        raise RuntimeError(
            f"{len(token_logprobs)} log-probabilities for {n} generated tokens: the engine "
            "did not report a score for every token it generated"
        )
    total = math.fsum(float(token_logprobs[k]) for k in range(n))
    stopped = bool(tokens) and tokens[-1] in eos_ids
    return LabelScore(tokens, total, total / n if n else 0.0, n, stopped)


def generated_lengths(generated: torch.Tensor, eos_ids: Sequence[int]) -> torch.Tensor:
    """Per row of `generated` [B, T]: tokens up to and including the first EOS, or T (the
    reference score's masks; `label_score` is the raw score's definition)."""
    import torch

    is_eos = torch.isin(generated, torch.tensor(list(eos_ids), device=generated.device))
    first = is_eos.int().argmax(dim=1)  # argmax returns the first maximal index
    return torch.where(is_eos.any(dim=1), first + 1, generated.shape[1]).long()


def step_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """[B, T] True at the positions that count (before and at each row's first EOS)."""
    import torch

    return torch.arange(steps, device=lengths.device)[None, :] < lengths[:, None]


def chunk_seed(text: str, seed: int) -> int:
    """A 63-bit sampling seed from the chunk text and the configured seed: the same chunk with
    the same config draws the same random numbers whatever else is in its batch."""
    digest = hashlib.blake2b(f"{seed}\x00{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def sample_rows(probs: torch.Tensor, generators: list[torch.Generator]) -> torch.Tensor:
    """One token per row of `probs` [B, V] by inverse-CDF sampling, row b with one uniform
    draw from `generators[b]` per step: a row's sample depends on its own distribution and
    random stream only, never on its batch mates (one random number per row and step)."""
    import torch

    u = torch.stack([torch.rand((), generator=g, device=probs.device) for g in generators])
    cdf = probs.cumsum(dim=-1)
    # Scale by the row total (not exactly 1 in float) so the draw always lands on a token
    # of non-zero probability: the CDF only rises at those.
    target = (u * cdf[:, -1])[:, None]
    return torch.searchsorted(cdf, target, right=True).squeeze(1).clamp_(max=probs.shape[-1] - 1)


class StepScorer:
    """Scores one batched `generate` call step by step, and picks its tokens.

    It contributes two logits processors: `first()` goes before every other processor and sees
    the raw logits (it keeps them and their log-normaliser for the current step only); `last()`
    goes after the warpers, picks the next token of every row (argmax, or a sample drawn with
    the row's own generator), records the chosen token's raw log-probability and, when sampling, returns scores in which only the chosen token is finite, so `generate`'s greedy argmax
    takes exactly it. The warpers never modify their input in place, so the raw logits kept
    by `first()` are intact when `last()` reads them (the teacher-forcing test checks this).
    A decode loop that drops finished rows sets `rows` before each step (see there); it reads
    the picked tokens from `choice`.
    Memory: [B, V] tensors of the current step in flight, [B, T] values kept.
    """

    def __init__(self, generators: list[torch.Generator] | None):
        self.generators = generators
        self._raw: torch.Tensor | None = None
        self._raw_norm: torch.Tensor | None = None
        self.raw_chosen: list[torch.Tensor] = []
        self.rows: torch.Tensor | None = None
        """Set by a decode loop that drops finished rows: the call's rows (indices into
        `generators` and into the recorded [B, T] values) still generating at this step; the
        scores it passes hold these rows only. None: every row of the call."""
        self.size = 0
        """Rows of the call (with `rows` set): recorded values are scattered back to this size,
        zero at the rows no longer computed (they are past their EOS, so masked anyway)."""
        self.choice: torch.Tensor | None = None
        """The tokens picked at the last step, one per scored row."""

    def first(self) -> _RawStep:
        return _RawStep(self)

    def last(self) -> _ChooseStep:
        return _ChooseStep(self)

    def _keep_raw(self, scores: torch.Tensor) -> None:
        import torch

        self._raw = scores
        self._raw_norm = torch.logsumexp(scores.float(), dim=-1)

    def _choose(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if self.generators is None:
            choice = scores.argmax(dim=-1)
        else:
            warped = torch.softmax(scores, dim=-1)
            generators = self.generators
            if self.rows is not None:
                generators = [generators[i] for i in self.rows.tolist()]
            choice = sample_rows(warped, generators)
        self.choice = choice
        index = choice[:, None]
        if self._raw is None or self._raw_norm is None:
            raise RuntimeError("StepScorer: the raw-logits processor did not run before the choice")
        raw = self._raw.gather(1, index).squeeze(1).float() - self._raw_norm
        if self.rows is not None:
            raw = raw.new_zeros(self.size).index_copy_(0, self.rows.to(raw.device), raw)
        self.raw_chosen.append(raw)
        self._raw = self._raw_norm = None
        if self.generators is None:
            return scores  # generate's argmax picks the same token (first maximal index)
        only = torch.full_like(scores, -torch.inf)
        return only.scatter_(1, index, 0.0)

    def step_logprobs(self, steps: int) -> torch.Tensor:
        """[B, steps] raw log-probabilities of the chosen tokens (a backend that overlaps steps
        may have run one more step than it returned; it is dropped)."""
        import torch

        return torch.stack(self.raw_chosen[:steps], dim=1)


class _RawStep:
    def __init__(self, scorer: StepScorer):
        self.scorer = scorer

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.scorer._keep_raw(scores)
        return scores


class _ChooseStep:
    def __init__(self, scorer: StepScorer):
        self.scorer = scorer

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.scorer._choose(scores)
