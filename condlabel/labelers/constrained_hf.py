"""The `hf` backend's slot program (`constrain_format: true`; the slots and the score are
defined in `condlabel.labelers.constrained`).

It runs inside the backend's one decode pass as two logits processors around the `StepScorer`:
`mask()` goes right after the scorer's raw-logits keeper (so the recorded log-probabilities are
the raw ones) and lets each row choose only what its slot allows (one token while the program
writes a literal); `advance()` goes after the scorer's choice, moves each row through its
slots and, where the model ended a slot with a token the program replaces (EOS, or a `[` not
preceded by `Tags:`), puts the literal's first token in its place, so the next step reads the
label as the program wrote it. When the decode ends, `outputs()` rebuilds each row's stream from
the slots (`slot_record`, the same function the other backends use), checks it against the ids
generated, and sums the raw log-probabilities at the counted positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from condlabel.labelers.constrained import (
    SlotPlan,
    after_synopsis,
    after_tags,
    constrained_label,
    counted_sum,
    slot_record,
)

if TYPE_CHECKING:
    import torch

    from condlabel.labelers.scoring import StepScorer

# Rows of the mask table.
_SYNOPSIS_FIRST, _SYNOPSIS, _TAGS, _ANY, _FORCED = range(5)


class HFSlots:
    """A labeler's slot plan and its vocabulary masks on the model's device (built once)."""

    def __init__(self, plan: SlotPlan, device: Any):
        import torch

        self.plan = plan
        table = torch.zeros((5, plan.vocab_size), dtype=torch.bool)
        for row, ids in (
            (_SYNOPSIS_FIRST, plan.synopsis_tokens),
            (_SYNOPSIS, plan.synopsis_tokens | plan.synopsis_ends),
            (_TAGS, plan.tags_tokens | plan.tags_ends),
        ):
            table[row, sorted(ids)] = True
        table[_ANY] = True
        self.table = table.to(device)

    def program(self, rows: int, scorer: StepScorer) -> HFSlotProgram:
        return HFSlotProgram(self, rows, scorer)


class _Row:
    __slots__ = ("done", "queue", "slot", "synopsis", "tags")

    def __init__(self, lead: list[int]):
        self.queue = list(lead)
        """Tokens the program writes next, one per step."""
        self.slot = "synopsis"
        """The slot the model fills once the queue is empty (`end`: none left)."""
        self.synopsis: list[int] = []
        self.tags: list[int] = []
        self.done = False


class HFSlotProgram:
    """The slot program of one decode call (`rows` rows)."""

    def __init__(self, slots: HFSlots, rows: int, scorer: StepScorer):
        self.slots, self.plan, self.scorer = slots, slots.plan, scorer
        self.rows = [_Row(self.plan.lead) for _ in range(rows)]

    def mask(self) -> _Mask:
        return _Mask(self)

    def advance(self) -> _Advance:
        return _Advance(self)

    def _live(self, size: int) -> list[int]:
        """The call's rows these scores hold (a decode loop that drops finished rows says
        which through the scorer)."""
        live = self.scorer.rows
        return list(range(size)) if live is None else live.tolist()

    def _mask(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        kinds, forced_at, forced = [], [], []
        for pos, r in enumerate(self._live(scores.shape[0])):
            row = self.rows[r]
            if row.done:
                kinds.append(_ANY)  # past its EOS: `generate` pads it whatever is chosen
            elif row.queue:
                kinds.append(_FORCED)
                forced_at.append(pos)
                forced.append(row.queue[0])
            elif row.slot == "synopsis":
                kinds.append(_SYNOPSIS if row.synopsis else _SYNOPSIS_FIRST)
            else:
                kinds.append(_TAGS)
        allowed = self.slots.table[torch.tensor(kinds, device=scores.device)]
        if forced:
            allowed[torch.tensor(forced_at), torch.tensor(forced)] = True
        return scores.masked_fill(~allowed, -torch.inf)

    def _advance(self, scores: torch.Tensor) -> torch.Tensor:
        import torch

        choice = self.scorer.choice
        if choice is None:
            raise RuntimeError("slot program: the scorer did not choose before advance()")
        picks = choice.tolist()
        for pos, r in enumerate(self._live(scores.shape[0])):
            written = self._step(self.rows[r], picks[pos])
            if written is not None:
                choice[pos] = written
        # Only the (possibly replaced) choice is finite: `generate`'s argmax takes exactly it.
        return torch.full_like(scores, -torch.inf).scatter_(1, choice[:, None], 0.0)

    def _step(self, row: _Row, token: int) -> int | None:
        """Move `row` past the token chosen at this step; returns the token written in its
        place when the program replaces it, else None."""
        plan = self.plan
        if row.done:
            return None
        if row.queue:
            row.queue.pop(0)
            row.done = row.slot == "end" and not row.queue
            return None
        if row.slot == "synopsis":
            row.synopsis.append(token)
            ended = token in plan.synopsis_ends
            if ended or len(row.synopsis) == plan.synopsis_cap:
                after, _own = after_synopsis(plan, row.synopsis)
                row.slot = "tags"
                return self._queue(row, after, ended, token)
            return None
        row.tags.append(token)
        ended = token in plan.tags_ends
        if ended or len(row.tags) == plan.tags_cap:
            after, _own = after_tags(plan, row.tags)
            row.slot = "end"
            return self._queue(row, [*after, plan.eos_ids[0]], ended, token)
        return None

    @staticmethod
    def _queue(row: _Row, after: list[int], ended: bool, token: int) -> int | None:
        """A slot closed: an end token's step writes the first token after it (the model's own
        end token when it stays), a cap queues all of it for the next steps."""
        if not ended:
            row.queue = list(after)
            return None
        row.queue = list(after[1:])
        row.done = row.slot == "end" and not row.queue
        return None if after[0] == token else after[0]

    def outputs(
        self, generated: torch.Tensor, step_logprobs: torch.Tensor, padded: list[int]
    ) -> list[dict]:
        """One output per row, in the shape the `hf` backend's own rows have: the label's text,
        score and token count (the counted positions only), `stopped` false when a slot hit
        its cap."""
        plan = self.plan
        ids = generated.cpu().tolist()
        values = step_logprobs.double().cpu().tolist()
        out = []
        for i, row in enumerate(self.rows):
            record = slot_record(plan, row.synopsis, row.tags)
            n = len(record.stream)
            if ids[i][:n] != record.stream or ids[i][n : n + 1] != plan.eos_ids[:1]:
                raise RuntimeError(
                    "constrain_format: the generated ids differ from the slot program's stream "
                    f"(row {i}); please report this with the labeler config"
                )
            result = constrained_label(
                plan,
                record,
                counted_sum(values[i], record.counted),
                parse_prefix="",
                truncated=False,
                input_tokens=0,
                padded_tokens=padded[i],
            )
            out.append(
                {
                    "text": result.raw_output,
                    "logprob": result.logprob,
                    "mean_logprob": result.mean_logprob,
                    "num_generated_tokens": result.num_generated_tokens,
                    "stopped": not result.label_truncated,
                    "padded_tokens": padded[i],
                    "extra": result.extra,
                }
            )
        return out


class _Mask:
    def __init__(self, program: HFSlotProgram):
        self.program = program

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.program._mask(scores)


class _Advance:
    def __init__(self, program: HFSlotProgram):
        self.program = program

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.program._advance(scores)
