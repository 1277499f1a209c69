"""The steps of a conversion as plain functions over pyarrow tables, free of Ray.

`pipeline.py` wires them into a Ray Data graph; tests and benchmarks call them directly.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import posixpath
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from condlabel.config import ConvertConfig, FormatConfig, InputConfig, StorageConfig
from condlabel.convert.chunking import chunk_document, doc_version
from condlabel.convert.duplicates import Duplicate, duplicate_reject
from condlabel.convert.format import tag_columns
from condlabel.convert.reading import Document, Reject, iter_file
from condlabel.current import text_keys
from condlabel.labelers import Labeler
from condlabel.labelers.memory import PartialLabels
from condlabel.prefix import conditional_text, metadata_columns, metadata_fields
from condlabel.runs.summary import FileStats
from condlabel.schema import (
    CHUNK_SCHEMA,
    LABEL_FIELDS,
    REJECT_SCHEMA,
    REJECTS_DIR,
    SCHEMA_VERSION,
    kept_fields,
    output_schema,
    scores_cell,
)
from condlabel.storage import resolve, write_bytes_atomic
from condlabel.tags.vocabulary import Vocabulary

USEFUL_TOKENS = "_useful_tokens"
PADDED_TOKENS = "_padded_tokens"
# A chunk's line/row in its file, for a labeler_error reject; dropped before the shard is written.
POSITION = "_position"
READ_SCHEMA = CHUNK_SCHEMA.append(pa.field(POSITION, pa.int64()))


@dataclass(frozen=True)
class Stage:
    """One step of the data path, in one shape: `fn` is a function over a pyarrow batch, or a
    class set up once per actor whose instances are (`fn_constructor_args`); `adds` names the
    columns it adds to the batch; `batch_size` and `placement` (Ray Data's resources and
    compute strategy) say where and how much at a time. The pipeline builds its graph from a
    list of these (`condlabel.convert.pipeline.build_graph`)."""

    name: str
    fn: Callable[..., Any]
    adds: tuple[str, ...]
    batch_size: int | None
    placement: dict[str, Any] = field(default_factory=dict)

    def apply(self, dataset: Any) -> Any:
        """`dataset` followed by this stage (lazily: nothing runs until it is iterated)."""
        return dataset.map_batches(
            self.fn, batch_size=self.batch_size, batch_format="pyarrow", **self.placement
        )


REJECT_LABELER_ERROR = "labeler_error"

DoneFilter = Callable[[str, str, int], bool]
"""(doc_id, doc_hash, chunk_index) -> True when the chunk is already in the output."""


def _hash_name(*parts: str) -> str:
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=10).hexdigest()


def read_and_chunk(
    uri: str,
    cfg: ConvertConfig,
    run_id: str,
    done: DoneFilter | None = None,
    rows_per_batch: int = 256,
    keep_rejects: bool = True,
    duplicates: Mapping[int, Duplicate] | None = None,
    keep_done: bool = False,
) -> Iterator[pa.Table | DoneChunks | FileStats]:
    """Read one input file and yield chunk tables of up to `rows_per_batch` rows, then its stats.

    Chunks for which `done` is true are counted, not yielded; with `keep_done` they are yielded
    too, as `DoneChunks` of up to `DONE_BATCHES` x `rows_per_batch` rows (their kept fields may
    have changed). Documents at the lines/rows of
    `duplicates` (later occurrences of an id, see `condlabel.convert.duplicates`) are rejects.
    Rejected records are written to `_rejects/<run_id>/` under the output prefix (unless
    `keep_rejects` is off, for dry runs) before the stats are yielded, so a file's rejects are
    stored whenever its stats count them.
    """
    fs, path = resolve(uri, cfg.storage)
    stats = FileStats(uri)
    rejects: list[Reject] = []
    schema = read_schema(cfg.input.kept_types)
    rows: dict[str, list] = {name: [] for name in schema.names}
    done_rows: dict[str, list] = {name: [] for name in schema.names}

    def flush(buffer: dict[str, list]) -> pa.Table:
        table = pa.Table.from_pydict(buffer, schema=schema)
        for values in buffer.values():
            values.clear()
        return table

    for item in iter_file(fs, path, uri, cfg.input):
        if not isinstance(item, Reject) and duplicates and item.position in duplicates:
            item = duplicate_reject(item, duplicates[item.position], cfg.input)
        if isinstance(item, Reject):
            rejects.append(item)
            stats.rejected[item.reason] += 1
            continue
        doc: Document = item
        stats.documents += 1
        doc_hash = doc_version(doc.text, cfg.chunking)
        chunks = chunk_document(doc, cfg.chunking)
        for chunk in chunks:
            stats.chunks += 1
            buffer = rows
            if done is not None and done(doc.doc_id, doc_hash, chunk.chunk_index):
                stats.skipped_done += 1
                if not keep_done:
                    continue
                buffer = done_rows
            buffer["doc_id"].append(doc.doc_id)
            buffer["chunk_index"].append(chunk.chunk_index)
            buffer["num_chunks"].append(len(chunks))
            buffer["source"].append(uri)
            buffer["doc_hash"].append(doc_hash)
            buffer["num_words"].append(chunk.num_words)
            buffer["text"].append(chunk.text)
            buffer[POSITION].append(doc.position)
            for name in cfg.input.kept_types:
                buffer[name].append(doc.meta.get(name))
        if len(rows["doc_id"]) >= rows_per_batch:
            yield flush(rows)
        if len(done_rows["doc_id"]) >= DONE_BATCHES * rows_per_batch:
            yield DoneChunks(flush(done_rows))
    if rows["doc_id"]:
        yield flush(rows)
    if done_rows["doc_id"]:
        yield DoneChunks(flush(done_rows))
    if rejects and keep_rejects:
        write_rejects(rejects, cfg.output.uri, run_id, _hash_name(uri), cfg.storage)
    yield stats


# Done chunks are looked up in the output this many chunk batches at a time (fewer lookups).
DONE_BATCHES = 8


@dataclass(frozen=True)
class DoneChunks:
    """A file's chunks already labeled in the output (`read_and_chunk(keep_done=True)`)."""

    table: pa.Table


def read_schema(kept: Mapping[str, str]) -> pa.Schema:
    """The read step's chunk tables: the chunk columns, the position, the kept input fields."""
    return pa.schema(list(READ_SCHEMA) + kept_fields(kept))


def write_rejects(
    rejects: list[Reject], output_uri: str, run_id: str, name: str, storage: StorageConfig
) -> str:
    """Store rejects as `_rejects/<run_id>/<name>.parquet`; a retried task rewrites its file."""
    table = pa.Table.from_pylist(
        [{**dataclasses.asdict(r), "run_id": run_id} for r in rejects], schema=REJECT_SCHEMA
    )
    fs, root = resolve(output_uri, storage)
    path = posixpath.join(root, REJECTS_DIR, run_id, f"{name}.parquet")
    write_bytes_atomic(fs, path, _parquet_bytes(table, "zstd"))
    return path


def label_or_reject(
    labeler: Labeler, table: pa.Table, fingerprint: str | None = None
) -> tuple[pa.Table, list[Reject]]:
    """`label_table`, where a failing batch is retried one chunk at a time: the chunks that
    fail alone come back as `labeler_error` rejects (with the error and the chunk's text), the
    others labeled, so one bad chunk costs neither its batch nor the run. A backend that found
    the failing chunks itself (out of memory even alone: `PartialLabels`) is taken at its word."""
    try:
        return label_table(labeler, table, fingerprint), []
    except PartialLabels as partial:
        return _partially_labeled(labeler, table, partial, fingerprint)
    except Exception:  # noqa: BLE001 - which chunk failed is found out below
        if table.num_rows == 1:
            return _labeler_rejects(labeler, table, fingerprint)
    labeled, rejects = [], []
    for i in range(table.num_rows):
        done, failed = _labeler_rejects(labeler, table.slice(i, 1), fingerprint)
        labeled.append(done)
        rejects += failed
    return pa.concat_tables(labeled), rejects


def _partially_labeled(
    labeler: Labeler, table: pa.Table, partial: PartialLabels, fingerprint: str | None
) -> tuple[pa.Table, list[Reject]]:
    if len(partial.results) != table.num_rows:
        raise RuntimeError(
            f"labeler {labeler.fingerprint} returned {len(partial.results)} results for "
            f"{table.num_rows} chunks"
        ) from partial
    ok = [i for i, r in enumerate(partial.results) if r is not None]
    rows = table.to_pylist()
    rejects = [_labeler_reject(rows[i], error) for i, error in sorted(partial.errors.items())]
    labeled = with_labels(
        table.take(ok), [partial.results[i] for i in ok], labeler.fingerprint, fingerprint
    )
    return labeled, rejects


def _labeler_rejects(
    labeler: Labeler, row: pa.Table, fingerprint: str | None
) -> tuple[pa.Table, list[Reject]]:
    """One chunk labeled alone: (its labeled row, []), or (no rows, [its reject])."""
    try:
        return label_table(labeler, row, fingerprint), []
    except Exception as exc:  # noqa: BLE001 - kept as the chunk's reject
        error: BaseException = exc
        if isinstance(exc, PartialLabels) and exc.errors:
            error = next(iter(exc.errors.values()))  # the chunk's own error, not the summary
        return empty_labeled(row), [_labeler_reject(row.to_pylist()[0], error)]


def _labeler_reject(chunk: dict, exc: BaseException) -> Reject:
    return Reject(
        chunk["source"],
        chunk[POSITION],
        "text",
        REJECT_LABELER_ERROR,
        f"doc {chunk['doc_id']!r} chunk {chunk['chunk_index']}: {type(exc).__name__}: {exc}"[:2000],
        chunk["text"].encode("utf-8"),
    )


def empty_labeled(table: pa.Table) -> pa.Table:
    fields = [pa.field(n, t) for n, t in LABEL_FIELDS]
    fields += [pa.field(USEFUL_TOKENS, pa.int64()), pa.field(PADDED_TOKENS, pa.int64())]
    return pa.schema(list(table.schema) + fields).empty_table()


def labeler_rejects_name(rejects: list[Reject]) -> str:
    """Content-addressed, as shards are: a retried batch rewrites the same rejects file."""
    keys = (f"{r.source}/{r.position}/{_hash_name(r.raw.hex())}" for r in rejects)
    return "labeler-" + _hash_name(*sorted(keys))


def label_table(labeler: Labeler, table: pa.Table, fingerprint: str | None = None) -> pa.Table:
    """Add the label columns to a chunk table; `fingerprint` (default: the labeler's) is what
    the `labeler` column records, e.g. labeler + classifiers."""
    results = labeler.label(table.column("text").to_pylist())
    return with_labels(table, results, labeler.fingerprint, fingerprint)


def with_labels(
    table: pa.Table, results: list, labeler_fingerprint: str, fingerprint: str | None = None
) -> pa.Table:
    """`table` with the label columns of `results` (one per row) appended."""
    if len(results) != table.num_rows:
        raise RuntimeError(
            f"labeler {labeler_fingerprint} returned {len(results)} results for {table.num_rows} chunks"
        )
    # Most label columns are LabelResult attributes of the same name; these are not.
    derived = {
        "control_tokens": [list(r.extra.get("control_tokens", [])) for r in results],
        "scores": [scores_cell(r.extra.get("scores", {})) for r in results],
        "labeler": [fingerprint or labeler_fingerprint] * len(results),
    }
    for name, typ in LABEL_FIELDS:
        values = derived[name] if name in derived else [getattr(r, name) for r in results]
        table = table.append_column(pa.field(name, typ), pa.array(values, type=typ))
    # Bookkeeping for the run summary (padding overhead); dropped before the shard is written.
    useful = [(r.input_tokens or 0) + r.num_generated_tokens for r in results]
    padded = [
        r.padded_tokens if r.padded_tokens is not None else u
        for r, u in zip(results, useful, strict=True)
    ]
    table = table.append_column(USEFUL_TOKENS, pa.array(useful, pa.int64()))
    return table.append_column(PADDED_TOKENS, pa.array(padded, pa.int64()))


def format_table(
    cfg: FormatConfig,
    table: pa.Table,
    run_id: str,
    vocabulary: Vocabulary | None = None,
    inputs: InputConfig | None = None,
    seq: int | None = None,
) -> pa.Table:
    """Add `conditional_text` (prefix + text), `text_key`, the run's id and `seq` and the schema
    version; with a tag `vocabulary`, `tags` become canonical and `raw_tags` keeps the
    labeler's. `inputs`: the kept input fields (columns of `table`) and the URL field the prefix
    may show."""
    kept = inputs.kept_types if inputs else {}
    table = tag_columns(cfg, table, vocabulary)
    names = ["text", "synopsis", "tags", "control_tokens", "parse_ok"]
    meta_names = metadata_columns(cfg.prefix_template, inputs.url_field) if inputs else []
    rows = table.select(names + [n for n in meta_names if n not in names]).to_pylist()
    texts = [
        conditional_text(
            cfg,
            row["text"],
            row["synopsis"],
            row["tags"] or [],
            row["control_tokens"] or [],
            row["parse_ok"],
            metadata_fields(row, cfg.prefix_template, inputs.url_field) if inputs else None,
        )
        for row in rows
    ]
    table = table.append_column("conditional_text", pa.array(texts, pa.string()))
    text_key = text_keys(table.column("text").to_pylist())
    table = table.append_column("text_key", pa.array(text_key, pa.string()))
    table = table.append_column("run_id", pa.array([run_id] * table.num_rows, pa.string()))
    table = table.append_column("seq", pa.array([seq] * table.num_rows, pa.int64()))
    table = table.append_column(
        "schema_version", pa.array([SCHEMA_VERSION] * table.num_rows, pa.string())
    )
    schema = output_schema(kept)
    return table.select(schema.names).cast(schema)


def _parquet_bytes(table: pa.Table, compression: str) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=None if compression == "none" else compression)
    return sink.getvalue()


def shard_name(table: pa.Table) -> str:
    """Content-addressed shard name: a retried task rewrites the same file instead of adding a
    duplicate, because its rows (and their labeler) are the same."""
    keys = sorted(
        zip(
            table.column("doc_id").to_pylist(),
            table.column("doc_hash").to_pylist(),
            table.column("chunk_index").to_pylist(),
            strict=True,
        )
    )
    labelers = sorted(set(table.column("labeler").to_pylist()))
    name = _hash_name(*labelers, *(f"{d}/{h}/{i}" for d, h, i in keys)) + ".parquet"
    seqs = table.column("seq").unique().to_pylist() if "seq" in table.column_names else []
    # The run's seq in the name: a listing tells the largest seq without reading a shard.
    return f"part-s{seqs[0]:06d}-{name}" if len(seqs) == 1 and seqs[0] else f"part-{name}"


def write_shard(table: pa.Table, output_uri: str, storage: StorageConfig, compression: str) -> str:
    """Write one complete-or-absent parquet shard under the output prefix; returns its URI."""
    fs, root = resolve(output_uri, storage)
    name = shard_name(table)
    write_bytes_atomic(fs, posixpath.join(root, name), _parquet_bytes(table, compression))
    return output_uri.rstrip("/") + "/" + name
