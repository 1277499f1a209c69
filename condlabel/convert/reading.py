"""Reading documents from corpus files (jsonl, jsonl.gz/zst, parquet), rejecting bad records
with a reason so nothing is lost.

Plain functions over fsspec file objects: no Ray here, so everything is unit-testable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

from condlabel.config import InputConfig

JSONL_SUFFIXES = (
    ".jsonl",
    ".json",
    ".ndjson",
    ".jsonl.gz",
    ".json.gz",
    ".ndjson.gz",
    ".jsonl.zst",
    ".json.zst",
    ".ndjson.zst",
    ".jsonl.zstd",
)
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES

# Reasons a record is rejected; they are counted by name in the run summary.
REJECT_INVALID_JSON = "invalid_json"
REJECT_NOT_AN_OBJECT = "not_an_object"
REJECT_INVALID_UTF8 = "invalid_utf8"
REJECT_MISSING_TEXT = "missing_text_field"
REJECT_TEXT_NOT_STRING = "text_not_string"
REJECT_EMPTY_TEXT = "empty_text"
REJECT_INVALID_ID = "invalid_id"
REJECT_UNREADABLE_FILE = "unreadable_file"
REJECT_UNSUPPORTED_FORMAT = "unsupported_format"


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    source: str
    position: int
    """1-based line number (jsonl) or row number (parquet) in `source`."""


@dataclass(frozen=True)
class Reject:
    source: str
    position: int
    """1-based line/row number; 0 when the whole file is rejected."""
    field: str
    reason: str
    detail: str
    raw: bytes = dataclasses.field(default=b"", repr=False)
    """The record as read (the line's bytes, or the row as JSON), so nothing is lost."""


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def auto_doc_id(source: str, position: int) -> str:
    """Stable id for a document that has none: derived from its source URI and position."""
    digest = hashlib.blake2b(f"{source}#{position}".encode(), digest_size=8).hexdigest()
    return f"auto-{digest}"


def detect_format(uri: str, configured: str = "auto") -> str | None:
    if configured != "auto":
        return configured
    lower = uri.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    return None


def _doc_id(value: object, source: str, position: int) -> str | None:
    if value is None or value == "":
        return auto_doc_id(source, position)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    return str(value)


def _check_record(
    record: object, cfg: InputConfig, source: str, position: int, raw: bytes
) -> Document | Reject:
    if not isinstance(record, dict):
        return Reject(
            source,
            position,
            "<record>",
            REJECT_NOT_AN_OBJECT,
            f"expected a JSON object, got {type(record).__name__}",
            raw,
        )
    if cfg.text_field not in record:
        present = ", ".join(sorted(map(str, record))[:10])
        return Reject(
            source,
            position,
            cfg.text_field,
            REJECT_MISSING_TEXT,
            f"no {cfg.text_field!r} field (fields present: {present})",
            raw,
        )
    text = record[cfg.text_field]
    if not isinstance(text, str):
        return Reject(
            source,
            position,
            cfg.text_field,
            REJECT_TEXT_NOT_STRING,
            f"expected a string, got {type(text).__name__}",
            raw,
        )
    if not text.strip():
        return Reject(
            source,
            position,
            cfg.text_field,
            REJECT_EMPTY_TEXT,
            "empty or whitespace-only text",
            raw,
        )
    doc_id = _doc_id(record.get(cfg.id_field), source, position)
    if doc_id is None:
        return Reject(
            source,
            position,
            cfg.id_field,
            REJECT_INVALID_ID,
            f"expected a string or number, got {type(record[cfg.id_field]).__name__}",
            raw,
        )
    return Document(doc_id, text, source, position)


def iter_jsonl(f, cfg: InputConfig, source: str) -> Iterator[Document | Reject]:
    position = 0
    try:
        for position, line in enumerate(f, start=1):
            if not line.strip():
                continue  # blank lines are layout, not records
            try:
                decoded = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Reject(
                    source,
                    position,
                    "<line>",
                    REJECT_INVALID_UTF8,
                    f"byte {exc.start}: {exc.reason}",
                    line,
                )
                continue
            try:
                record = json.loads(decoded)
            except json.JSONDecodeError as exc:
                yield Reject(
                    source,
                    position,
                    "<line>",
                    REJECT_INVALID_JSON,
                    f"column {exc.colno}: {exc.msg}",
                    line,
                )
                continue
            yield _check_record(record, cfg, source, position, line)
    except Exception as exc:  # noqa: BLE001 - a broken stream (truncated gzip, bad zstd frame)
        yield Reject(
            source,
            position + 1,
            "<file>",
            REJECT_UNREADABLE_FILE,
            f"stopped after line {position}: {type(exc).__name__}: {exc}",
        )


def iter_parquet(f, cfg: InputConfig, source: str) -> Iterator[Document | Reject]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    position = 0
    try:
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if cfg.text_field not in names:
            yield Reject(
                source,
                0,
                cfg.text_field,
                REJECT_MISSING_TEXT,
                f"no {cfg.text_field!r} column (columns: {', '.join(names[:20])})",
            )
            return
        text_type = pf.schema_arrow.field(cfg.text_field).type
        if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
            yield Reject(
                source,
                0,
                cfg.text_field,
                REJECT_TEXT_NOT_STRING,
                f"column type is {text_type}, expected string",
            )
            return
        columns = [cfg.text_field] + ([cfg.id_field] if cfg.id_field in names else [])
        for batch in pf.iter_batches(batch_size=cfg.docs_per_batch, columns=columns):
            for record in batch.to_pylist():
                position += 1
                if record[cfg.text_field] is None:
                    record.pop(cfg.text_field)  # null text is a missing text
                raw = json.dumps(record, default=str, ensure_ascii=False).encode()
                yield _check_record(record, cfg, source, position, raw)
    except Exception as exc:  # noqa: BLE001 - corrupt footer, bad page, truncated file
        yield Reject(
            source,
            position + 1 if position else 0,
            "<file>",
            REJECT_UNREADABLE_FILE,
            f"stopped after row {position}: {type(exc).__name__}: {exc}",
        )


def iter_file(
    fs: fsspec.AbstractFileSystem, path: str, source: str, cfg: InputConfig
) -> Iterator[Document | Reject]:
    """Documents and rejects of one file, in file order; never raises for bad content."""
    fmt = detect_format(source, cfg.format)
    if fmt is None:
        yield Reject(
            source,
            0,
            "<file>",
            REJECT_UNSUPPORTED_FORMAT,
            f"unknown extension; supported: {', '.join(SUPPORTED_SUFFIXES)}",
        )
        return
    try:
        compression = "infer" if fmt == "jsonl" else None
        f = fs.open(path, "rb", compression=compression)
    except Exception as exc:  # noqa: BLE001 - any open failure is this file's reject
        yield Reject(source, 0, "<file>", REJECT_UNREADABLE_FILE, f"{type(exc).__name__}: {exc}")
        return
    with f:
        if fmt == "jsonl":
            # zstandard's reader has no readline; a buffer gives every codec line iteration.
            yield from iter_jsonl(
                io.BufferedReader(f) if compression and not isinstance(f, io.BufferedIOBase) else f,
                cfg,
                source,
            )
        else:
            yield from iter_parquet(f, cfg, source)
