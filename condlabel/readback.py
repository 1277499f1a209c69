"""Reading tagged output back: a pyarrow Table (or dataset) over every data shard of a prefix."""

from __future__ import annotations

import logging
import posixpath
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from condlabel.config import StorageConfig
from condlabel.current import current_rows, current_versions, with_order
from condlabel.schema import OUTPUT_SCHEMA, REJECTS_DIR
from condlabel.storage import StorageError, is_hidden, resolve
from condlabel.storage_errors import NotAnOutput
from condlabel.tags.figures import applied_vocabulary, figure_lines, tag_figures
from condlabel.tags.vocabulary import Vocabulary

log = logging.getLogger("condlabel")


def tagged_dataset(
    uri: str | list[str], storage: StorageConfig | None = None, strict: bool = False
) -> pads.Dataset:
    """The data shards of an output prefix (its `.parquet` files), of one shard file, or of a
    list of either. Bookkeeping (`_*`, `.*`) is skipped silently; any other file (a `notes.txt`
    someone left there) is summarised in one warning, so it breaks neither a run nor a reader.

    `strict` (the readers: `read_tagged`, `condlabel inspect`): what is not condlabel output is
    refused with `NotAnOutput`, saying what was found: a folder with files but no shard and no
    run record (an input folder, say), a named file that is not parquet, parquet files without
    the key columns `doc_id` and `chunk_index`.
    """
    uris = [uri] if isinstance(uri, str) else list(uri)
    shards: list[str] = []
    skipped: list[str] = []
    fs = None
    for one in uris:
        fs, found, other, bookkeeping = _shards_of(one, storage, strict)
        shards += found
        skipped += other
        if strict and other and not found and not bookkeeping:
            raise NotAnOutput(f"{one}: not a condlabel output: no parquet shard, {_found(other)}")
    if skipped:
        log.warning("%s skipped: not parquet shards", _found(skipped))
    dataset = pads.dataset(shards, format="parquet", filesystem=fs)
    names = dataset.schema.names
    if strict and shards and not {"doc_id", "chunk_index"} <= set(names):
        where = uris[0] if len(uris) == 1 else f"{len(uris)} paths"
        raise NotAnOutput(
            f"{where}: not a condlabel output: its parquet files have no doc_id and chunk_index "
            f"columns (columns: {', '.join(names[:12])}{', ...' if len(names) > 12 else ''})"
        )
    if not shards:
        return dataset
    # Readers see every column of every shard: shards written before a contract column was
    # added, or with another `input.keep_fields` list, lack some (null there). The other
    # callers list the shards or read the key columns, which every shard has.
    schema = shard_schema(dataset) if strict else dataset.schema
    missing = [f for f in OUTPUT_SCHEMA if f.name not in schema.names]
    schema = pa.schema(list(schema) + missing)
    if schema == dataset.schema:
        return dataset
    return pads.dataset(shards, format="parquet", filesystem=fs, schema=schema)


def shard_schema(dataset: pads.FileSystemDataset) -> pa.Schema:
    """The columns of all the shards of `dataset` (one footer read per shard; a reader reads
    every shard anyway), each in its widest type."""
    schemas = [fragment.physical_schema for fragment in dataset.get_fragments()]
    return pa.unify_schemas(schemas, promote_options="permissive") if schemas else dataset.schema


def _shards_of(
    uri: str, storage: StorageConfig | None, strict: bool
) -> tuple[Any, list[str], list[str], bool]:
    """(filesystem, shards, other files, whether run bookkeeping is there) of one path."""
    fs, path = resolve(uri, storage)
    if fs.isfile(path):
        if path.endswith(".parquet"):
            return fs, [path], [], False
        if strict:
            raise NotAnOutput(f"{uri}: not a condlabel output: a file, not a parquet shard")
        return fs, [], [uri], False
    if not fs.exists(path):
        raise StorageError(f"{uri}: no such output prefix")
    root = path.rstrip("/")
    shards, other, bookkeeping = [], [], False
    for found in sorted(fs.find(root)):
        if is_hidden(found, root):
            bookkeeping = True
        elif found.endswith(".parquet"):
            shards.append(found)
        else:
            other.append(f"{uri.rstrip('/')}/{posixpath.relpath(found, root)}")
    return fs, shards, other, bookkeeping


def _found(files: list[str]) -> str:
    """'found 3 file(s) (2 .jsonl, 1 .txt): a.jsonl, b.jsonl, c.txt'."""
    suffixes = Counter(posixpath.splitext(f)[1] or "(no suffix)" for f in files)
    kinds = ", ".join(f"{n} {suffix}" for suffix, n in suffixes.most_common())
    names = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
    return f"found {len(files)} file(s) ({kinds}): {names}"


def read_tagged(
    uri: str | list[str],
    columns: list[str] | None = None,
    filter: pads.Expression | None = None,
    storage: StorageConfig | None = None,
    latest_only: bool = True,
) -> pa.Table:
    """Read a condlabel output prefix (local or s3://), one of its shard files, or a list of
    either into a pyarrow Table. What is not condlabel output is refused (`NotAnOutput`),
    saying what was found.

    `columns` selects columns; `filter` is a pyarrow expression, e.g.
    `pyarrow.dataset.field("parse_ok") == True`. With `latest_only` (the default) a document
    whose text changed between runs appears only in its latest version, each chunk once;
    `latest_only=False` returns every row ever written (history).
    """
    return read_dataset(tagged_dataset(uri, storage, strict=True), columns, filter, latest_only)


def read_dataset(
    dataset: pads.Dataset,
    columns: list[str] | None = None,
    filter: pads.Expression | None = None,
    latest_only: bool = True,
) -> pa.Table:
    """`read_tagged` over a `tagged_dataset` already listed."""
    if not latest_only or not dataset.files:
        return dataset.to_table(columns=columns, filter=filter)
    # Versions are decided over every row (a filter must not resurrect an old version), then
    # the filtered rows are kept only where they belong to a current version.
    latest = latest_keys(dataset.to_table(columns=["doc_id", "doc_hash", "run_id", "seq"]))
    wanted = list(columns) if columns is not None else dataset.schema.names
    read = wanted + [k for k in (*CHUNK_KEYS, "run_id", "seq") if k not in wanted]
    return select_latest(dataset.to_table(columns=read, filter=filter), latest).select(wanted)


CHUNK_KEYS = ["doc_id", "doc_hash", "chunk_index"]


def latest_keys(keys: pa.Table) -> pa.Table:
    """(doc_id, doc_hash) of each document's current version (`condlabel.current`): the
    doc_hash of its highest-`seq` row. Needs the columns doc_id, doc_hash, run_id (and `seq`
    where the shards have it)."""
    return current_versions(with_order(keys), "doc_id", "doc_hash")


def select_latest(table: pa.Table, latest: pa.Table) -> pa.Table:
    """Rows of `table` that belong to a current version, each (doc_id, doc_hash, chunk_index)
    once (its highest-`seq` row), in their original order. `table` needs run_id (and seq)."""
    if table.num_rows == 0:
        return table
    return table.take(pa.array(current_rows(with_order(table), latest, CHUNK_KEYS)))


def latest_versions(table: pa.Table) -> pa.Table:
    """`select_latest` over a table that holds the version columns itself."""
    if table.num_rows == 0:
        return table
    return select_latest(table, latest_keys(table))


# Columns `summarize` and the report need; the heavy text columns are read only for samples.
SUMMARY_COLUMNS = [
    "doc_id",
    "chunk_index",
    "num_chunks",
    "source",
    "num_words",
    "tags",
    "raw_tags",
    "control_tokens",
    "logprob",
    "mean_logprob",
    "num_generated_tokens",
    "parse_ok",
    "truncated",
    "input_tokens",
    "labeler",
    "run_id",
    "schema_version",
]
SAMPLE_COLUMNS = ["doc_id", "chunk_index", "source", "synopsis", "tags", "conditional_text"]
QUANTILES = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)


def distribution(column: pa.ChunkedArray | pa.Array) -> dict[str, Any]:
    """Count, nulls, sum, mean and quantiles of a numeric column; nulls are left out.

    An all-null column (the keyphrase labeler has no log-probabilities) gives `count` 0 and
    None for every statistic, never an error.
    """
    nulls = column.null_count
    count = len(column) - nulls
    stats: dict[str, Any] = {"count": count, "null": nulls}
    if count == 0:
        stats.update({"sum": None, "mean": None})
        stats.update({f"p{round(q * 100):02d}": None for q in QUANTILES})
        return stats
    values = pc.cast(column, pa.float64())
    stats["sum"] = pc.sum(column).as_py()  # integer columns keep an integer total
    stats["mean"] = pc.mean(values).as_py()
    for q, v in zip(QUANTILES, pc.quantile(values, q=list(QUANTILES)).to_pylist(), strict=True):
        stats[f"p{round(q * 100):02d}"] = v
    return stats


def tag_counts(table: pa.Table, column: str = "tags") -> Counter[str]:
    """How many chunks carry each tag (or control token)."""
    if column not in table.column_names or table.num_rows == 0:
        return Counter()
    flat = pc.list_flatten(table.column(column))
    if len(flat) == 0:
        return Counter()
    counts = pc.value_counts(flat)
    return Counter(
        dict(
            zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True)
        )
    )


def _value_counts(table: pa.Table, column: str) -> dict[str, int]:
    if column not in table.column_names:
        return {}
    return dict(Counter(table.column(column).to_pylist()).most_common())


def _chunks_per_document(table: pa.Table) -> dict[str, Any] | None:
    """Distribution over documents (not rows): `num_chunks` of each document's chunk 0."""
    if "num_chunks" not in table.column_names or "chunk_index" not in table.column_names:
        return None
    first = pc.equal(table.column("chunk_index"), 0)
    return distribution(pc.filter(table.column("num_chunks"), first))


def summarize(
    table: pa.Table,
    top_tags: int = 15,
    samples: int = 2,
    sample_table: pa.Table | None = None,
    vocabulary: Vocabulary | None = None,
) -> dict[str, Any]:
    """Counts, labelers, parse failures, tags, log-prob and length distributions of an output.

    `table` needs the `SUMMARY_COLUMNS` it has (missing ones are skipped); samples come from
    `sample_table` when given (so the text columns need not be read for every row), else from
    `table`. The result is plain JSON-able data (`condlabel inspect --json`); `vocabulary`
    (the tag vocabulary the output was mapped with) adds coverage to the tag figures.
    """
    rows = table.num_rows
    names = table.column_names
    tags = tag_counts(table, "tags")
    parse_ok = table.column("parse_ok") if "parse_ok" in names else pa.chunked_array([], pa.bool_())
    failures = int(pc.sum(pc.invert(pc.fill_null(parse_ok, False))).as_py() or 0) if rows else 0
    tags_per_chunk = (
        pc.list_value_length(table.column("tags")) if "tags" in names else pa.array([], pa.int32())
    )
    documents = len(pc.unique(table.column("doc_id"))) if "doc_id" in names else 0

    def dist(name: str) -> dict[str, Any] | None:
        return distribution(table.column(name)) if name in names else None

    source = sample_table if sample_table is not None else table
    sample_rows = (
        source.slice(0, samples)
        .select([c for c in SAMPLE_COLUMNS if c in source.column_names])
        .to_pylist()
    )
    for row in sample_rows:
        text = row.get("conditional_text") or ""
        if len(text) > 400:
            row["conditional_text"] = text[:400] + "..."
    return {
        "rows": rows,
        "documents": documents,
        "sources": len(pc.unique(table.column("source"))) if "source" in names else 0,
        "labelers": _value_counts(table, "labeler"),
        "runs": _value_counts(table, "run_id"),
        "schema_versions": _value_counts(table, "schema_version"),
        "parse_failures": failures,
        "parse_failure_rate": failures / rows if rows else 0.0,
        "truncated": int(pc.sum(pc.fill_null(table.column("truncated"), False)).as_py() or 0)
        if "truncated" in names and rows
        else 0,
        "distinct_tags": len(tags),
        "tags_per_chunk": distribution(tags_per_chunk),
        "top_tags": tags.most_common(top_tags),
        "control_tokens": tag_counts(table, "control_tokens").most_common(),
        "tag_figures": tag_figures(table, vocabulary, top=top_tags),
        "logprob": dist("logprob"),
        "mean_logprob": dist("mean_logprob"),
        "num_generated_tokens": dist("num_generated_tokens"),
        "chunks_per_document": _chunks_per_document(table),
        "num_words": dist("num_words"),
        "input_tokens": dist("input_tokens"),
        "samples": sample_rows,
    }


def inspect_output(
    uri: str, storage: StorageConfig | None = None, top_tags: int = 15, samples: int = 2
) -> tuple[dict[str, Any], pa.Table]:
    """`summarize` an output prefix reading only the columns it needs; returns (summary, table).

    The table (SUMMARY_COLUMNS only) is what `condlabel.report` plots.
    """
    dataset = tagged_dataset(uri, storage, strict=True)  # listed once: one warning at most
    present = set(dataset.schema.names)
    table = read_dataset(dataset, [c for c in SUMMARY_COLUMNS if c in present])
    sample_table = None
    if samples and table.num_rows and "doc_id" in present:
        # Fetch the text of the first rows only, by key, instead of every row's text.
        keys = table.slice(0, samples).select(["doc_id", "chunk_index"]).to_pylist()
        wanted = pads.field("doc_id").isin([k["doc_id"] for k in keys])
        found = read_dataset(
            dataset, [c for c in SAMPLE_COLUMNS if c in present], filter=wanted
        ).to_pylist()
        order = {(k["doc_id"], k["chunk_index"]): i for i, k in enumerate(keys)}
        rows = sorted(
            (r for r in found if (r["doc_id"], r.get("chunk_index")) in order),
            key=lambda r: order[(r["doc_id"], r.get("chunk_index"))],
        )
        sample_table = pa.Table.from_pylist(rows) if rows else table.slice(0, 0)
    vocabulary = applied_vocabulary(uri, storage) if isinstance(uri, str) else None
    info = summarize(table, top_tags, samples, sample_table, vocabulary)
    info["rejects"] = reject_counts(uri, storage) if isinstance(uri, str) else None
    return info, table


def reject_counts(uri: str, storage: StorageConfig | None = None) -> dict[str, Any] | None:
    """Input records and chunks kept in `_rejects/` instead of the output: how many, and how
    many per reason (a record rejected again by a later run counts once). None when `uri` is
    not a prefix (a shard file)."""
    fs, path = resolve(uri, storage)
    if not fs.isdir(path):
        return None
    directory = posixpath.join(path.rstrip("/"), REJECTS_DIR)
    files = (
        [f for f in fs.find(directory) if f.endswith(".parquet")] if fs.exists(directory) else []
    )
    if not files:
        return {"total": 0, "reasons": {}}
    keys = ["source", "position", "field", "reason"]
    table = pads.dataset(files, format="parquet", filesystem=fs).to_table(columns=keys)
    distinct = table.group_by(keys).aggregate([])
    reasons = Counter(distinct.column("reason").to_pylist())
    return {"total": distinct.num_rows, "reasons": dict(reasons.most_common())}


def _format_distribution(stats: dict | None, digits: int = 0) -> str:
    if not stats or not stats["count"]:
        return "all null" if stats else "absent"
    f = f"{{:,.{digits}f}}"
    return (
        f"min {f.format(stats['p00'])}  p05 {f.format(stats['p05'])}  "
        f"median {f.format(stats['p50'])}  p95 {f.format(stats['p95'])}  "
        f"max {f.format(stats['p100'])}  mean {stats['mean']:,.2f}"
        + (f"  ({stats['null']:,} null)" if stats["null"] else "")
    )


def inspect_lines(info: dict[str, Any], top: int) -> list[str]:
    """`summarize`/`inspect_output` info as the text `condlabel inspect` prints."""
    lines: list[str] = []
    words, tokens = info.get("num_words"), info.get("input_tokens")
    lines.append(
        f"rows {info['rows']:,}  documents {info['documents']:,}  "
        f"parse failures {info['parse_failures']:,} ({info['parse_failure_rate']:.1%})  "
        f"truncated {info['truncated']:,}"
    )
    lines.append(
        f"words {(words or {}).get('sum') or 0:,.0f}  "
        f"input tokens {(tokens or {}).get('sum') or 0:,.0f}"
        + ("" if tokens and tokens["count"] else " (not counted by this labeler)")
    )
    for fp, n in info["labelers"].items():
        lines.append(f"labeler {fp}: {n:,} rows")
    lines.append(f"chunks/document  {_format_distribution(info.get('chunks_per_document'))}")
    lines.append(f"words/chunk      {_format_distribution(words)}")
    lines.append(f"tokens/chunk     {_format_distribution(tokens)}")
    lines.append(f"logprob          {_format_distribution(info.get('logprob'), 2)}")
    lines.append(f"mean logprob     {_format_distribution(info.get('mean_logprob'), 3)}")
    lines.append(f"top tags: ({info['distinct_tags']:,} distinct)")
    for tag, n in info["top_tags"][:top]:
        share = n / info["rows"] if info["rows"] else 0.0
        lines.append(f"  {n:8,d}  {share:6.1%}  {tag}")
    lines += figure_lines(info.get("tag_figures"))
    if info["control_tokens"]:
        lines.append(
            "control tokens: " + ", ".join(f"{t} {n:,}" for t, n in info["control_tokens"])
        )
    rejects = info.get("rejects")
    if rejects is not None:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in rejects["reasons"].items())
        lines.append(
            f"rejected {rejects['total']:,} input record(s)/chunk(s)"
            + (f": {reasons} (kept in {REJECTS_DIR}/)" if reasons else "")
        )
    for row in info["samples"]:
        lines.append(f"\n--- {row['doc_id']} chunk {row['chunk_index']} ({row['source']})")
        lines.append(row["conditional_text"])
    return lines
