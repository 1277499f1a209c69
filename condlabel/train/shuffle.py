"""The order a worker reads its rows in, pass after pass (`data.shuffle`), Ray-free.

    data in the object store (`condlabel.train.dataset.MATERIALIZE_MAX_ROWS`): every worker reads all of it and
        sorts it by a seeded hash of (seed, pass, row content): a full shuffle, new each pass;
        worker r takes positions r, r + W, r + 2W, ... of that one order, so the rows of a step
        are the same whatever the number of workers W
    data streamed from storage: the files come in a new seeded order each pass (at the read,
        `condlabel.train.loop.shuffle_files`), and each worker mixes its stream in a local buffer of
        `data.shuffle_buffer_rows` rows

Why shuffle at all: real corpora are grouped (by topic file, by domain, by crawl segment), and
trained in read order the model is fed one group after another, every pass; a plain training
loop that shuffles learned the control tokens that read order did not (bench/README.md).
The order depends on the rows' content, not on where they sit in the read, so the same seed
gives the same order however Ray Data's parallel read happened to deliver the blocks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa

from condlabel.config import TrainDataConfig

ROWS_PER_BATCH = 64
"""Rows a worker fetches from its dataset shard and tokenizes at a time."""
READ_ROWS = 4096
"""Rows per batch while a worker reads the whole (materialized) dataset to shuffle it."""
IDENTITY_COLUMNS = ("text", "synopsis", "tags", "control_tokens")
"""The columns whose content names a row for the shuffle (missing ones are skipped)."""


def row_ids(table: pa.Table) -> list[bytes]:
    """A content hash per row: rows with equal content get equal ids (and are interchangeable)."""
    columns = [c for c in IDENTITY_COLUMNS if c in table.column_names]
    values = [table.column(c).to_pylist() for c in columns]
    ids = []
    for row in zip(*values, strict=True):
        digest = hashlib.blake2b(digest_size=16)
        for value in row:
            if isinstance(value, list):
                value = "\x1e".join(str(v) for v in value)
            digest.update(("" if value is None else str(value)).encode() + b"\x1f")
        ids.append(digest.digest())
    return ids


def epoch_order(ids: Sequence[bytes], seed: int, epoch: int) -> list[int]:
    """A permutation of `range(len(ids))`: the rows sorted by a hash of (seed, epoch, id).

    A different order each epoch, the same for the same seed; ties (rows of equal content) keep
    their read order, which cannot show since their content is equal."""
    salt = f"{seed}:{epoch}:".encode()
    keys = [hashlib.blake2b(salt + row_id, digest_size=8).digest() for row_id in ids]
    return sorted(range(len(ids)), key=keys.__getitem__)


def worker_rows(table: pa.Table, seed: int, epoch: int, rank: int, world: int) -> pa.Table:
    """Worker `rank`'s rows of one epoch, in order: every `world`-th row of the whole table's
    epoch order, starting at `rank`."""
    order = epoch_order(row_ids(table), seed, epoch)
    return table.take(pa.array(order[rank::world], pa.int64()))


def pass_rows(
    shard: Any, data: TrainDataConfig, seed: int, rank: int, world: int, epoch: int, whole: bool
) -> Iterator[pa.Table]:
    """One pass of a worker's rows as pyarrow batches of `ROWS_PER_BATCH` (`seed`: the run's
    `optimization.seed`).

    `shard` is anything with Ray Data's `iter_batches`: the worker's split of the dataset, or,
    with `whole`, the whole (materialized) dataset, which `worker_rows` shuffles and divides.
    """
    if data.shuffle and whole:
        batches = list(shard.iter_batches(batch_size=READ_ROWS, batch_format="pyarrow"))
        if not batches:
            return
        table = pa.concat_tables(batches, promote_options="default")
        mine = worker_rows(table, seed, epoch, rank, world)
        for start in range(0, mine.num_rows, ROWS_PER_BATCH):
            yield mine.slice(start, ROWS_PER_BATCH)
        return
    kwargs: dict[str, Any] = {"batch_size": ROWS_PER_BATCH, "batch_format": "pyarrow"}
    if data.shuffle and data.shuffle_buffer_rows:
        kwargs.update(
            local_shuffle_buffer_size=data.shuffle_buffer_rows,
            local_shuffle_seed=seed + 1000 * epoch + rank,
        )
    yield from shard.iter_batches(**kwargs)
