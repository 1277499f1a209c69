"""The output contract: the columns and types of every row condlabel writes, and the names of its
bookkeeping paths. The writer, the readers, the resume logic and the README test import it from here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

# v2: `label_truncated` added; v3: `seq` and `text_key` added (older shards read back with
# them null: `condlabel.current` counts a null `seq` as 0)
SCHEMA_VERSION = "condlabel-v3"

# Bookkeeping under an output prefix: never data (readers skip names starting with `_` or `.`).
REJECTS_DIR = "_rejects"
MANIFEST_DIR = "_manifest"
LEASE_NAME = "_lease.json"
# A run's duplicate chunks wait here for their labeled chunk (removed when the run ends).
COPIES_DIR = "_copies"
# Input files whose every chunk is in the output (condlabel.runs.ledger): reruns skip them.
LEDGER_DIR = "_ledger"

CHUNK_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("chunk_index", pa.int32()),
        ("num_chunks", pa.int32()),
        ("source", pa.string()),
        ("doc_hash", pa.string()),
        ("num_words", pa.int32()),
        ("text", pa.string()),
    ]
)
# Scores as a list of (name, score) pairs rather than a map: every reader the output contract
# names (HF datasets included, which cannot load parquet maps) reads a list of structs.
SCORES_TYPE = pa.list_(pa.struct([("name", pa.string()), ("score", pa.float64())]))


def scores_as_dict(value: list[dict] | None) -> dict[str, float]:
    """A row's `scores` cell -> {"vader.compound": 0.93, ...}."""
    return {item["name"]: item["score"] for item in value or []}


def scores_cell(scores: dict[str, float]) -> list[dict]:
    return [{"name": k, "score": v} for k, v in scores.items()]


LABEL_FIELDS = [
    ("synopsis", pa.string()),
    ("tags", pa.list_(pa.string())),
    ("control_tokens", pa.list_(pa.string())),
    ("scores", SCORES_TYPE),
    ("logprob", pa.float64()),
    ("mean_logprob", pa.float64()),
    ("num_generated_tokens", pa.int32()),
    ("parse_ok", pa.bool_()),
    ("truncated", pa.bool_()),
    ("label_truncated", pa.bool_()),
    ("input_tokens", pa.int32()),
    ("raw_output", pa.string()),
    ("labeler", pa.string()),
]
OUTPUT_SCHEMA = pa.schema(
    list(CHUNK_SCHEMA)
    + [pa.field(n, t) for n, t in LABEL_FIELDS]
    + [
        # `raw_tags`: the labeler's tags when `format.tag_vocabulary` mapped `tags` (else null);
        # `copied_from`: `doc_id#chunk_index@doc_hash`, the row whose labels a copy got (else
        # null); `text_key`: hash of the chunk's normalised text, what duplicates share.
        pa.field("raw_tags", pa.list_(pa.string())),
        pa.field("copied_from", pa.string()),
        pa.field("text_key", pa.string()),
        pa.field("conditional_text", pa.string()),
        pa.field("run_id", pa.string()),
        # The run's sequence number: a document's current version is that of its highest-seq
        # row (`condlabel.current`).
        pa.field("seq", pa.int64()),
        pa.field("schema_version", pa.string()),
    ]
)
REJECT_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("position", pa.int64()),
        ("field", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw", pa.binary()),
        ("run_id", pa.string()),
    ]
)

# Kept input fields (`input.keep_fields`): input fields carried into every row as columns of the
# same name, after the columns above, each with its declared type (null where a record lacks
# the field). Their names may not be any of the contract's.
KEPT_FIELD_TYPES = {
    "string": pa.string(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
}
# Names the run bookkeeping adds to rows (a run's sequence, the normalised text's hash): taken
# too, so a kept field never shadows them.
RESERVED_COLUMNS = ("seq", "text_key")


def kept_fields(types: Mapping[str, str]) -> list[pa.Field]:
    """The output columns of the kept input fields (name -> declared type name)."""
    return [pa.field(name, KEPT_FIELD_TYPES[typ]) for name, typ in types.items()]


def output_schema(kept: Mapping[str, str]) -> pa.Schema:
    """The output contract plus the kept input fields of a run."""
    return pa.schema(list(OUTPUT_SCHEMA) + kept_fields(kept))


def kept_field_collisions(names: Iterable[str]) -> list[str]:
    """The kept field names that are already columns of the output contract."""
    taken = {*OUTPUT_SCHEMA.names, *RESERVED_COLUMNS}
    return [name for name in names if name in taken]


# The columns a run scans to know what is done (resume) and which labelers wrote the prefix.
KEY_COLUMNS = ["doc_id", "doc_hash", "chunk_index", "labeler", "run_id", "seq"]
KEY_SCHEMA = pa.schema([OUTPUT_SCHEMA.field(name) for name in KEY_COLUMNS])
"""Read shards' key columns with this schema: a shard older than a column gets it as null."""
