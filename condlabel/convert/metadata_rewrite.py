"""Labels depend on the text alone: when only a document's kept input fields changed (a new
value, or a new `input.keep_fields` list), its rows are written again with the labels they
already have, never relabeled.

    chunks read now (text unchanged: same doc_id, doc_hash, chunk_index; kept fields new)
      + their rows in the output (labels)  --`stale_rows`-->  the chunks whose fields differ
      --`rewrite_rows`-->  rows with the old labels, the new fields, the prefix rendered anew

Plain functions over tables, free of Ray. The run bookkeeping decides when they run: its done
check must tell a chunk whose text is labeled but whose kept fields are not current (compare
`kept_fields_key` of the row it holds with the chunk's), hand those chunks and their rows here
instead of to the labeler, and write the result under a higher sequence, so the new rows are
the current ones. The ledger's fingerprint must cover `input.keep_fields` and
`input.url_field`, so a changed list makes every file read again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from condlabel.config import ConvertConfig
from condlabel.convert.stages import POSITION, format_table
from condlabel.prefix import vocabulary_for
from condlabel.schema import LABEL_FIELDS

KEY = ("doc_id", "doc_hash", "chunk_index")
# What a rewritten row takes from the row already written: its labels and where they came from.
KEPT_LABELS = [name for name, _ in LABEL_FIELDS] + ["raw_tags", "copied_from"]


def kept_fields_key(row: Mapping[str, Any], kept: Mapping[str, str]) -> str:
    """A hash of a row's kept fields: names, declared types and values (null included), so a
    changed value, type or list gives another key."""
    values = [[name, typ, row.get(name)] for name, typ in sorted(kept.items())]
    text = json.dumps(values, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _keys(table: pa.Table) -> list[tuple]:
    return list(zip(*(table.column(k).to_pylist() for k in KEY), strict=True))


def stale_rows(chunks: pa.Table, written: pa.Table, kept: Mapping[str, str]) -> pa.Table:
    """The chunks whose text is labeled in `written` (the same key) but whose kept fields
    differ from that row's (a field the row lacks counts as null)."""
    held = {
        key: kept_fields_key(row, kept)
        for key, row in zip(_keys(written), written.to_pylist(), strict=True)
    }
    mask = [
        key in held and held[key] != kept_fields_key(row, kept)
        for key, row in zip(_keys(chunks), chunks.to_pylist(), strict=True)
    ]
    return chunks.filter(pa.array(mask, pa.bool_()))


def rewrite_rows(chunks: pa.Table, written: pa.Table, cfg: ConvertConfig, run_id: str) -> pa.Table:
    """Output rows for `chunks` (read now, with their kept fields) carrying the labels of their
    rows in `written`, formatted as the write step formats a labeled chunk: the prefix shows
    the new fields. Chunks without a row in `written` are left out (they need labeling)."""
    index = {key: i for i, key in enumerate(_keys(written))}
    found = [index.get(key) for key in _keys(chunks)]
    chunks = chunks.filter(pa.array([i is not None for i in found], pa.bool_()))
    labels = written.take(pa.array([i for i in found if i is not None], pa.int64()))
    table = chunks.drop_columns([c for c in (POSITION,) if c in chunks.column_names])
    for name in KEPT_LABELS:
        if name in labels.column_names and name not in table.column_names:
            table = table.append_column(labels.schema.field(name), labels.column(name))
    # `tags` are already canonical where a vocabulary mapped them: map the labeler's own again.
    return format_table(
        cfg.format, table, run_id, vocabulary_for(cfg.format, cfg.storage), cfg.input
    )
