"""Reading tagged output back: a pyarrow Table (or dataset) over every data shard of a prefix."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads

from condlabel.config import StorageConfig
from condlabel.storage import StorageError, resolve


def tagged_dataset(uri: str, storage: StorageConfig | None = None) -> pads.Dataset:
    """All data shards under an output prefix; bookkeeping (`_*`, `.*`) is skipped."""
    fs, path = resolve(uri, storage)
    if not fs.exists(path):
        raise StorageError(f"{uri}: no such output prefix")
    return pads.dataset(
        path, format="parquet", filesystem=fs, ignore_prefixes=["_", "."], exclude_invalid_files=False
    )


def read_tagged(
    uri: str,
    columns: list[str] | None = None,
    filter: pads.Expression | None = None,  # noqa: A002 - mirrors pyarrow's name
    storage: StorageConfig | None = None,
) -> pa.Table:
    """Read a condlabel output prefix (local or s3://) into a pyarrow Table.

    `columns` selects columns; `filter` is a pyarrow expression, e.g.
    `pyarrow.dataset.field("parse_ok") == True`.
    """
    return tagged_dataset(uri, storage).to_table(columns=columns, filter=filter)


def summarize(table: pa.Table, top_tags: int = 15, samples: int = 2) -> dict[str, Any]:
    tags: Counter[str] = Counter()
    for row_tags in table.column("tags").to_pylist():
        tags.update(row_tags or [])
    labelers = Counter(table.column("labeler").to_pylist())
    parse_ok = table.column("parse_ok").to_pylist()
    sample_rows = table.slice(0, samples).select(
        ["doc_id", "chunk_index", "source", "synopsis", "tags", "conditional_text"]
    ).to_pylist()
    for row in sample_rows:
        if len(row["conditional_text"]) > 400:
            row["conditional_text"] = row["conditional_text"][:400] + "..."
    return {
        "rows": table.num_rows,
        "documents": len(set(table.column("doc_id").to_pylist())),
        "labelers": dict(labelers),
        "parse_failure_rate": (1 - sum(parse_ok) / len(parse_ok)) if parse_ok else 0.0,
        "top_tags": tags.most_common(top_tags),
        "samples": sample_rows,
    }
