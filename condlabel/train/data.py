"""Training data, Ray-free: tagged rows -> training text -> tokens -> packed fixed-length blocks.

row -> prefix (a seeded fraction untagged; tags shuffled/dropped; synopsis dropped; none in
       the cooldown) + text
    -> (prefix ids, text ids) -> `prefix text EOS prefix text EOS ...` cut into `seq_len`
    blocks (prefix optionally masked out of the loss) -> micro-batches

`render_conditional` and `prompt_ids` are shared with evaluation, so a conditional reaches the
model exactly as training presented it. Only the latest version of each document is trained on
(`latest_row_keys` / `keep_rows`, with `condlabel.readback`'s version rules).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import FormatConfig, TrainConfig, TrainDataConfig
from condlabel.prefix import RAW_TAGS, metadata_fields, render_prefix, row_tags, vocabulary_for
from condlabel.readback import latest_versions, shard_schema
from condlabel.tags.vocabulary import Vocabulary
from condlabel.train.shuffle import ROWS_PER_BATCH as ROWS_PER_BATCH  # where it was
from condlabel.train.shuffle import pass_rows

IGNORE_INDEX = -100
"""Label value that PyTorch's cross-entropy (and every HF causal LM) leaves out of the loss."""
DATA_COLUMNS = ["text", "synopsis", "tags", "control_tokens", "parse_ok"]
"""The columns of the tagged output that training reads (and `raw_tags`, with a vocabulary)."""
VERSION_COLUMNS = ["doc_id", "doc_hash", "chunk_index", "run_id"]
"""The columns that name a row: its chunk and the run that wrote it."""


def version_keys(
    dataset: Any, extra: Sequence[str] = (), schema: pa.Schema | None = None
) -> pa.Table:
    """`VERSION_COLUMNS` (+ `extra`) of every row of a pyarrow dataset, with `seq` where the
    shards have it: what decides a document's current version (`condlabel.current`). The
    columns are those of every shard (a shard written before runs had a seq sorts first):
    `schema`, when the caller has read them (`readback.shard_schema`), else read here."""
    import pyarrow.dataset as pads

    schema = schema or shard_schema(dataset)
    if schema != dataset.schema:
        dataset = pads.dataset(
            dataset.files, format="parquet", filesystem=dataset.filesystem, schema=schema
        )
    seq = ["seq"] if "seq" in schema.names else []
    return dataset.to_table(columns=[*VERSION_COLUMNS, *extra, *seq])


# --------------------------------------------------------------------------- training text


def render_conditional(
    mode: str,
    fmt: FormatConfig,
    synopsis: str,
    tags: list[str],
    control_tokens: list[str],
    parse_ok: bool = True,
    meta: Mapping[str, str] | None = None,
) -> str:
    """The prefix for a set of labels and metadata fields (`condlabel.prefix.metadata_fields`);
    training renders every row through it and evaluation every conditional, so both present a
    conditional the same way.

    `mode` is `prefix` of the training data config: `control_tokens` keeps only the control
    tokens; `template` renders `fmt` as conversion does (only the control tokens and metadata
    lines for a row whose label did not parse, or that has no synopsis and no tags).
    """
    if mode == "control_tokens":
        return "".join(control_tokens)
    return render_prefix(fmt, synopsis, tags, control_tokens, parse_ok, meta)


def training_prefix(
    row: dict[str, Any],
    cfg: TrainDataConfig,
    rng: random.Random,
    vocabulary: Vocabulary | None = None,
) -> str:
    """The prefix of one row, drawn with `rng` (one untagged draw, then tag shuffling/dropping,
    synopsis dropping and control-token dropping); its tags mapped through `vocabulary`
    (`data.format.tag_vocabulary`)."""
    # Always draw, so whether a row is untagged does not shift the draws of later rows.
    untagged = rng.random() < cfg.untagged_fraction
    tags = row_tags(row, cfg.format, vocabulary)
    if cfg.shuffle_tags:
        rng.shuffle(tags)
    if cfg.tag_drop_probability > 0:
        tags = [t for t in tags if rng.random() >= cfg.tag_drop_probability]
    synopsis = row.get("synopsis") or ""
    if cfg.synopsis_drop_probability > 0 and rng.random() < cfg.synopsis_drop_probability:
        synopsis = ""
    control = list(row.get("control_tokens") or [])
    if cfg.control_token_drop_probability > 0:
        control = [t for t in control if rng.random() >= cfg.control_token_drop_probability]
    if untagged:
        return ""
    meta = metadata_fields(row, cfg.format.prefix_template, cfg.url_field)
    return render_conditional(
        cfg.prefix, cfg.format, synopsis, tags, control, bool(row.get("parse_ok", True)), meta
    )


def build_examples(
    rows: Sequence[dict[str, Any]],
    cfg: TrainDataConfig,
    rng: random.Random,
    plain: bool = False,
    vocabulary: Vocabulary | None = None,
) -> list[tuple[str, str]]:
    """(prefix, text) per row, in order; `plain` (the cooldown) leaves every prefix out."""
    examples = [(training_prefix(row, cfg, rng, vocabulary), row["text"] or "") for row in rows]
    return [("", text) for _, text in examples] if plain else examples


def cooldown_start(cfg: TrainConfig) -> int:
    """The first optimizer step (0-based) of the cooldown: from it on, no example has a prefix."""
    steps = cfg.optimization.max_steps
    return steps - round(cfg.data.cooldown_fraction * steps)


# --------------------------------------------------------------------------- latest versions


def latest_row_keys(keys: pa.Table) -> pa.Array | None:
    """The keys (`row_keys`) of the rows `condlabel.readback.read_tagged` keeps: the latest
    version of each document, each chunk once. None when every row is kept.

    `keys` holds `VERSION_COLUMNS` for every row of the training data.
    """
    return latest_row_keys_by_output([keys])


def latest_row_keys_by_output(outputs: Sequence[pa.Table]) -> pa.Array | None:
    """`latest_row_keys` over several outputs (`data.paths`), each with its own versions.

    A version belongs to one output: two conversions of one corpus (VADER tokens in one, tags
    in another) share doc ids, and neither supersedes the other. Across them, the later run's
    rows would win and the other conversion's would silently never be trained on.
    """
    kept = [latest_versions(keys) for keys in outputs]
    if sum(k.num_rows for k in kept) == sum(keys.num_rows for keys in outputs):
        return None
    return pa.concat_arrays([row_keys(k) for k in kept])


def row_keys(table: pa.Table) -> pa.Array:
    """One string per row that names its chunk and the run that wrote it."""
    parts = [pc.cast(table.column(c), pa.string()) for c in VERSION_COLUMNS]
    joined = pc.binary_join_element_wise(
        *parts, "\x1f", null_handling="replace", null_replacement=""
    )
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def keep_rows(batch: pa.Table, kept: pa.Array, columns: Sequence[str] = ()) -> pa.Table:
    """The rows of `batch` whose key is in `kept` (from `latest_row_keys`), in order, with the
    training columns (`columns`, default: `DATA_COLUMNS` and `raw_tags`)."""
    wanted = columns or [*DATA_COLUMNS, RAW_TAGS]
    kept_columns = [c for c in wanted if c in batch.column_names]
    return batch.filter(pc.is_in(row_keys(batch), value_set=kept)).select(kept_columns)


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


def prompt_ids(tokenizer, prefix: str, text: str) -> list[int]:
    """`EOS prefix text` as token ids: an example as it sits in the packed training stream,
    after the EOS that ends the one before it (the start of a generation under a conditional).
    """
    [(prefix_ids, text_ids)] = tokenize_examples(tokenizer, [(prefix, text)])
    return [tokenizer.eos_token_id, *prefix_ids, *text_ids]


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


def document_positions(ids: Sequence[int], eos_id: int) -> list[int]:
    """Position ids of a packed block for `optimization.packing: documents`: 0 at every EOS (the
    start of the next example, as generation starts from `EOS prefix`) and at the block's start
    (an example continued from the block before), counting up in between.

    transformers reads a reset of the position ids as the start of a new sequence and builds a
    block-diagonal causal mask from them, so no example attends to another.
    """
    positions, at = [], 0
    for token in ids:
        if token == eos_id:
            at = 0
        positions.append(at)
        at += 1
    return positions


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
    shard,
    tokenizer,
    cfg: TrainConfig,
    rank: int,
    epoch: int,
    in_cooldown: Callable[[], bool] = lambda: False,
    world: int = 1,
    whole: bool = False,
) -> Generator[tuple[list[list[int]], list[list[int]]], None, None]:
    """One pass of a worker's data as (input ids, labels) micro-batches.

    `shard` is anything with Ray Data's `iter_batches`: a worker's dataset shard, or with
    `whole` the whole dataset, of which this worker (`rank` of `world`) takes its share of each
    pass's order (`condlabel.train.shuffle.pass_rows`). Each worker and pass draws prefixes
    from its own seed, so workers do not repeat each other. Once `in_cooldown()` turns true,
    blocks packed with prefixes are dropped and every later example is plain text.
    """
    data, opt = cfg.data, cfg.optimization
    seed = opt.seed
    rng = random.Random(f"{seed}:{rank}:{epoch}")
    packer = SequencePacker(opt.seq_len, tokenizer.eos_token_id, opt.loss_on == "text")
    pending: list[tuple[list[int], list[int]]] = []
    cooling = False
    vocabulary = vocabulary_for(data.format, cfg.storage, "data.format.tag_vocabulary")
    for batch in pass_rows(shard, data, seed, rank, world, epoch, whole):
        if in_cooldown() and not cooling:
            cooling, pending = True, []
            packer = SequencePacker(opt.seq_len, tokenizer.eos_token_id, opt.loss_on == "text")
        rows = batch.to_pylist()
        examples = build_examples(rows, data, rng, cooling, vocabulary)
        for prefix_ids, text_ids in tokenize_examples(tokenizer, examples):
            pending.extend(packer.add(prefix_ids, text_ids))
        # Blocks packed before the cooldown began wait for the next batch, which drops them.
        while len(pending) >= opt.micro_batch_size and cooling == in_cooldown():
            micro, pending = pending[: opt.micro_batch_size], pending[opt.micro_batch_size :]
            yield [ids for ids, _ in micro], [labels for _, labels in micro]
