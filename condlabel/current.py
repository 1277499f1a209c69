"""What is current: which rows of an output a reader gets. One rule, applied by `read_tagged`,
by the done check of every run, and by readers outside condlabel (DuckDB, polars, Spark):

    a document's current version is the `doc_hash` of its row with the highest (`seq`, `run_id`)
    (`seq` null, in rows written before runs had one, counts as 0), and a chunk of it is served
    once: its row with the highest (`seq`, `run_id`).

`seq` is the run's sequence number, 1 + the largest any earlier run recorded, taken under the
writer lease (`condlabel.runs.sequence`): it orders runs without any clock, so a driver whose
clock is slow or a file restored to an earlier version cannot make old text current. `run_id`
only breaks ties between rows written before `seq` existed (run ids sort by start time).
No Ray here; imports only pyarrow.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SEQ_DIGITS = 12
"""Width of `seq` in an order key (10^12 runs)."""

ORDER = "_order"

_SPACE = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """What two chunks must share to be one text: NFC, whitespace runs as one space, the ends
    stripped; case and punctuation count."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def text_keys(texts: Iterable[str]) -> list[str]:
    """The `text_key` column: 128-bit hash (hex) of each normalised text. Rows that share one
    are copies of one text: keeping one row per `text_key` never drops a paragraph."""
    return [
        hashlib.blake2b(
            normalise_text(t).encode("utf-8", "surrogatepass"), digest_size=16
        ).hexdigest()
        for t in texts
    ]


def order_keys(
    seq: pa.Array | pa.ChunkedArray | None, run_id: pa.Array | pa.ChunkedArray
) -> pa.Array:
    """One sortable string per row: zero-padded `seq` (null -> 0), `|`, `run_id`."""
    if seq is None:
        seq = pa.nulls(len(run_id), pa.int64())
    seq_text = pc.utf8_lpad(
        pc.cast(pc.fill_null(pc.cast(seq, pa.int64()), 0), pa.string()), SEQ_DIGITS, "0"
    )
    return pc.binary_join_element_wise(
        seq_text, pc.fill_null(pc.cast(run_id, pa.string()), ""), "|"
    )


def with_order(table: pa.Table) -> pa.Table:
    """`table` with the order key column (from its `seq`, when present, and `run_id`)."""
    seq = table.column("seq") if "seq" in table.column_names else None
    return table.append_column(ORDER, order_keys(seq, table.column("run_id")))


def current_versions(table: pa.Table, id_col: str, version_col: str) -> pa.Table:
    """(id, version) of each document's current version, from a table holding `id_col`,
    `version_col` and the order key (`with_order`)."""
    versions = table.group_by([id_col, version_col]).aggregate([(ORDER, "max")])
    newest = versions.group_by(id_col).aggregate([(f"{ORDER}_max", "max")])
    latest = versions.join(
        newest,
        keys=[id_col, f"{ORDER}_max"],
        right_keys=[id_col, f"{ORDER}_max_max"],
        join_type="inner",
    )
    # One run reads each document once, so ties cannot happen; break them deterministically.
    latest = latest.group_by(id_col).aggregate([(version_col, "max")])
    return pa.table(
        {id_col: latest.column(id_col), version_col: latest.column(f"{version_col}_max")}
    )


def current_rows(table: pa.Table, latest: pa.Table, keys: list[str]) -> np.ndarray:
    """Row positions of `table` (which holds `keys` and the order key) that a reader gets: rows
    of a current version (`latest`: `current_versions`, joined on its two columns), one per
    chunk (`keys`), the highest-ordered; in their original order."""
    if table.num_rows == 0:
        return np.empty(0, np.int64)
    with_pos = table.select([*keys, ORDER]).append_column(
        "_row", pa.array(np.arange(table.num_rows))
    )
    kept = with_pos.join(latest, keys=latest.column_names, join_type="inner")
    best = kept.group_by(keys).aggregate([(ORDER, "max")])
    kept = kept.join(
        best, keys=[*keys, ORDER], right_keys=[*keys, f"{ORDER}_max"], join_type="inner"
    )
    first = kept.group_by(keys).aggregate([("_row", "min")])
    return np.sort(first.column("_row_min").to_numpy())
