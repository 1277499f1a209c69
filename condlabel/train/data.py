"""Training data, Ray-free: tagged rows -> training text -> tokens -> packed fixed-length blocks.

row -> prefix (a seeded fraction untagged; tags shuffled/dropped) + text
    -> (prefix ids, text ids) -> `prefix text EOS prefix text EOS ...` cut into `seq_len`
    blocks (prefix optionally masked out of the loss) -> micro-batches
"""

from __future__ import annotations

import random
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

from condlabel.config import FormatConfig, TrainConfig, TrainDataConfig
from condlabel.convert.format import render_prefix

IGNORE_INDEX = -100
"""Label value that PyTorch's cross-entropy (and every HF causal LM) leaves out of the loss."""
DATA_COLUMNS = ["text", "synopsis", "tags", "control_tokens", "parse_ok"]
"""The columns of the tagged output that training reads."""


# --------------------------------------------------------------------------- training text


def training_prefix(row: dict[str, Any], cfg: TrainDataConfig, rng: random.Random) -> str:
    """The prefix of one row, drawn with `rng` (one untagged draw, then tag shuffling/dropping).

    `prefix: control_tokens` keeps only the control tokens; a row whose label did not parse gets
    only its control tokens (as in conversion).
    """
    # Always draw, so whether a row is untagged does not shift the draws of later rows.
    untagged = rng.random() < cfg.untagged_fraction
    tags = list(row.get("tags") or [])
    if cfg.shuffle_tags:
        rng.shuffle(tags)
    if cfg.tag_drop_probability > 0:
        tags = [t for t in tags if rng.random() >= cfg.tag_drop_probability]
    if untagged:
        return ""
    control = list(row.get("control_tokens") or [])
    if cfg.prefix == "control_tokens":
        return "".join(control)
    return render_prefix(
        cfg.format, row.get("synopsis") or "", tags, control, bool(row.get("parse_ok", True))
    )


def build_examples(
    rows: Sequence[dict[str, Any]], cfg: TrainDataConfig, rng: random.Random
) -> list[tuple[str, str]]:
    """(prefix, text) per row, in order."""
    return [(training_prefix(row, cfg, rng), row["text"] or "") for row in rows]


def conditional_prompt(
    fmt: FormatConfig, mode: str, control_tokens: list[str], tags: list[str], synopsis: str | None
) -> str:
    """The prefix a model trained with `prefix: mode` expects for a conditional (evaluation)."""
    if mode == "control_tokens" or not (tags or synopsis):
        return "".join(control_tokens)
    return render_prefix(fmt, synopsis or "", tags, control_tokens, True)


# --------------------------------------------------------------------------- tokens and packing


def tokenize_examples(
    tokenizer, examples: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """(prefix ids, text ids) per example, tokenized apart.

    Apart, because at generation time the prefix is the whole prompt: the boundary tokens the
    model learns are the ones it will see, and the prefix length in tokens is exact.
    """
    if not examples:
        return []
    prefixes = tokenizer([p for p, _ in examples], add_special_tokens=False)["input_ids"]
    texts = tokenizer([t for _, t in examples], add_special_tokens=False)["input_ids"]
    return list(zip(prefixes, texts, strict=True))


@dataclass
class SequencePacker:
    """Joins examples into one stream (`prefix text EOS prefix text EOS ...`) and cuts it into
    `seq_len` blocks. Labels equal the input ids, except the prefix tokens when `mask_prefix`.

    Attention crosses the EOS separators inside a block (plain packing, as in GPT-2 pretraining);
    the tail shorter than `seq_len` waits for the next examples.
    """

    seq_len: int
    eos_id: int
    mask_prefix: bool = False
    _ids: list[int] = field(default_factory=list)
    _labels: list[int] = field(default_factory=list)

    def add(
        self, prefix_ids: Sequence[int], text_ids: Sequence[int]
    ) -> list[tuple[list[int], list[int]]]:
        """Append one example; returns the blocks it completed."""
        self._ids.extend(prefix_ids)
        self._labels.extend([IGNORE_INDEX] * len(prefix_ids) if self.mask_prefix else prefix_ids)
        self._ids.extend(text_ids)
        self._labels.extend(text_ids)
        self._ids.append(self.eos_id)
        self._labels.append(self.eos_id)
        blocks = []
        while len(self._ids) >= self.seq_len:
            blocks.append((self._ids[: self.seq_len], self._labels[: self.seq_len]))
            del self._ids[: self.seq_len], self._labels[: self.seq_len]
        return blocks

    @property
    def pending_tokens(self) -> int:
        return len(self._ids)


def pack_examples(
    tokenized: Sequence[tuple[Sequence[int], Sequence[int]]],
    seq_len: int,
    eos_id: int,
    mask_prefix: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """Every full block from a list of tokenized examples (the tail is dropped)."""
    packer = SequencePacker(seq_len, eos_id, mask_prefix)
    return [block for prefix, text in tokenized for block in packer.add(prefix, text)]


def micro_batches(
    shard, tokenizer, cfg: TrainConfig, rank: int, epoch: int
) -> Generator[tuple[list[list[int]], list[list[int]]], None, None]:
    """One pass of a worker's data as (input ids, labels) micro-batches.

    `shard` is anything with Ray Data's `iter_batches` (a worker's dataset shard). Each worker
    and pass draws prefixes and shuffles from its own seed, so workers do not repeat each other.
    """
    data, opt = cfg.data, cfg.optimization
    rng = random.Random(f"{data.seed}:{rank}:{epoch}")
    packer = SequencePacker(opt.seq_len, tokenizer.eos_token_id, opt.loss_on == "text")
    pending: list[tuple[list[int], list[int]]] = []
    kwargs: dict[str, Any] = {"batch_size": data.rows_per_batch, "batch_format": "pyarrow"}
    if data.shuffle_buffer_rows:
        kwargs.update(
            local_shuffle_buffer_size=data.shuffle_buffer_rows,
            local_shuffle_seed=data.seed + 1000 * epoch + rank,
        )
    for batch in shard.iter_batches(**kwargs):
        examples = build_examples(batch.to_pylist(), data, rng)
        for prefix_ids, text_ids in tokenize_examples(tokenizer, examples):
            pending.extend(packer.add(prefix_ids, text_ids))
            while len(pending) >= opt.micro_batch_size:
                micro, pending = pending[: opt.micro_batch_size], pending[opt.micro_batch_size :]
                yield [ids for ids, _ in micro], [labels for _, labels in micro]
