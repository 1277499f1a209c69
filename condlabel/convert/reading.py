"""Reading documents from corpus files (JSON Lines or a JSON array of objects, also gz/zst;
parquet; plain text, one document per file), rejecting bad records with a reason so nothing is
lost.

Plain functions over fsspec file objects: no Ray here, so everything is unit-testable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import fsspec

from condlabel.config import ConfigError, ConvertConfig, InputConfig
from condlabel.convert.kept_fields import REJECT_INVALID_KEPT_FIELD, kept_values
from condlabel.convert.sampling import sample_documents
from condlabel.storage import InputFile, resolve

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
TEXT_SUFFIXES = (".txt", ".md")
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + PARQUET_SUFFIXES + TEXT_SUFFIXES
PARQUET_BATCH_ROWS = 256
"""Rows a parquet input is decoded at a time (memory of one batch vs. calls into Arrow); the
documents are yielded one by one whatever it is."""

# Reasons a record is rejected; they are counted by name in the run summary.
REJECT_INVALID_JSON = "invalid_json"
REJECT_NOT_AN_OBJECT = "not_an_object"
REJECT_INVALID_UTF8 = "invalid_utf8"
REJECT_INVALID_UNICODE = "invalid_unicode"
REJECT_MISSING_TEXT = "missing_text_field"
REJECT_TEXT_NOT_STRING = "text_not_string"
REJECT_EMPTY_TEXT = "empty_text"
REJECT_INVALID_ID = "invalid_id"
REJECT_DUPLICATE_TEXT = "duplicate_text"
REJECT_EMPTY_FILE = "empty_file"
REJECT_UNREADABLE_FILE = "unreadable_file"
REJECT_UNSUPPORTED_FORMAT = "unsupported_format"


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    source: str
    position: int
    """1-based line number (jsonl) or row number (parquet) in `source`."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The kept input fields (`input.keep_fields`) in their declared types; None where absent."""


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

    def __post_init__(self) -> None:
        # Field names and details quote the record; a lone surrogate there must not stop the
        # reject itself from being written, so it is spelled out as `\ud800`.
        for name in ("source", "field", "detail"):
            object.__setattr__(self, name, _printable(getattr(self, name)))


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def content_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


def auto_doc_id(text: str) -> str:
    """Id of a document that has none: a hash of its text, so renaming, recompressing or
    re-sharding a file keeps its ids (128 bits: no collision in any realistic corpus)."""
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
    return f"auto-{digest}"


def detect_format(uri: str, configured: str = "auto") -> str | None:
    if configured != "auto":
        return configured
    lower = uri.lower()
    if lower.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if lower.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if lower.endswith(TEXT_SUFFIXES):
        return "text"
    return None


def _id_problem(value: object) -> tuple[str, str] | None:
    """(reason, detail) when a value cannot be an id. A missing or empty id is fine (one is
    derived); else a string or a finite number, not a bool."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return _unicode_problem(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return REJECT_INVALID_ID, f"expected a string or number, got {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return REJECT_INVALID_ID, f"expected a finite number, got {value}"
    return None


# A JSON string may hold a lone UTF-16 surrogate ("\ud800"); no UTF-8 encoder takes it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _unicode_problem(text: str) -> tuple[str, str] | None:
    match = _SURROGATE.search(text)
    if match is None:
        return None
    return (
        REJECT_INVALID_UNICODE,
        f"lone surrogate {_printable(match.group())} at character {match.start()}: "
        "not a Unicode character, cannot be stored as UTF-8",
    )


def _record_problem(record: object, cfg: InputConfig) -> tuple[str, str, str] | None:
    """(field, reason, detail) of the first thing wrong with a record, or None."""
    if not isinstance(record, dict):
        return (
            "<record>",
            REJECT_NOT_AN_OBJECT,
            f"expected a JSON object, got {type(record).__name__}",
        )
    field = cfg.text_field
    if field not in record:
        present = ", ".join(sorted(map(str, record))[:10])
        return field, REJECT_MISSING_TEXT, f"no {field!r} field (fields present: {present})"
    text = record[field]
    if not isinstance(text, str):
        return field, REJECT_TEXT_NOT_STRING, f"expected a string, got {type(text).__name__}"
    if not text.strip():
        return field, REJECT_EMPTY_TEXT, "empty or whitespace-only text"
    problem = _unicode_problem(text)
    if problem is None:
        problem = _id_problem(record.get(cfg.id_field))
        field = cfg.id_field
    return None if problem is None else (field, *problem)


class _RecordChecker:
    """Turns one file's records into Documents or Rejects. It remembers the automatic ids seen
    in the file: an id-less text seen before is labeled once, and the repeat is a
    `duplicate_text` reject (counted, bytes kept) rather than a second copy of the same rows."""

    def __init__(self, cfg: InputConfig, source: str):
        self.cfg = cfg
        self.source = source
        self._auto_ids: dict[str, int] = {}

    def __call__(self, record: object, position: int, raw: bytes) -> Document | Reject:
        cfg = self.cfg
        problem = _record_problem(record, cfg)
        if problem is not None:
            return Reject(self.source, position, *problem, raw)
        fields = cast(dict, record)
        meta, bad = kept_values(fields, cfg.kept_types)
        if bad is not None:
            return Reject(self.source, position, bad[0], REJECT_INVALID_KEPT_FIELD, bad[1], raw)
        text, doc_id = fields[cfg.text_field], fields.get(cfg.id_field)
        if doc_id is None or doc_id == "":
            doc_id = auto_doc_id(text)
            first = self._auto_ids.setdefault(doc_id, position)
            if first != position:
                detail = (
                    f"same text as line/row {first} (also without {cfg.id_field!r}): labeled once"
                )
                return Reject(
                    self.source, position, cfg.text_field, REJECT_DUPLICATE_TEXT, detail, raw
                )
        return Document(str(doc_id), text, self.source, position, meta)


# Universal newlines, as Python's text mode: JSON allows no raw CR or LF inside a string, so
# cutting at a bare CR (old Mac files) splits records and never cuts one.
_LINE_END = re.compile(rb"\r\n?|\n")
# Lines are read in pieces of at most this many bytes, so a file without LF is split as it
# streams and a truncated gzip loses at most one piece of the lines before the break.
_PIECE_BYTES = 1 << 16


def _lines(f) -> Iterator[bytes]:
    """Each line of a byte stream with its end (`\\n`, `\\r\\n` or a bare `\\r`)."""
    parts: list[bytes] = []
    for piece in iter(lambda: f.readline(_PIECE_BYTES), b""):
        if parts and parts[-1].endswith(b"\r"):
            # The line ended at the last piece's CR; an LF opening this piece is part of its end.
            if piece.startswith(b"\n"):
                parts.append(b"\n")
                piece = piece[1:]
            yield b"".join(parts)
            parts = []
        start = 0
        for m in _LINE_END.finditer(piece):
            if m.end() == len(piece) and m.group() == b"\r":
                break  # the next piece may open with the LF of this CR
            parts.append(piece[start : m.end()])
            yield b"".join(parts)
            parts, start = [], m.end()
        if start < len(piece):
            parts.append(piece[start:])
    if parts:
        yield b"".join(parts)


def _parse_line(line: bytes) -> tuple[object, None] | tuple[None, tuple[str, str]]:
    """(record, None), or (None, (reason, detail)) when the line is not one JSON value."""
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, (REJECT_INVALID_UTF8, f"byte {exc.start}: {exc.reason}")
    try:
        return json.loads(decoded), None
    except json.JSONDecodeError as exc:
        return None, (REJECT_INVALID_JSON, f"column {exc.colno}: {exc.msg}")
    except (ValueError, RecursionError) as exc:
        # An integer of over 4300 digits, or arrays nested thousands deep: this line only.
        return None, (REJECT_INVALID_JSON, f"{type(exc).__name__}: {exc}")


_BOM = b"\xef\xbb\xbf"


def iter_jsonl(f, cfg: InputConfig, source: str) -> Iterator[Document | Reject]:
    check = _RecordChecker(cfg, source)
    position = records = 0
    try:
        for position, line in enumerate(_lines(f), start=1):
            # Editors on Windows start UTF-8 files with a byte-order mark; it is not data.
            body = line[len(_BOM) :] if position == 1 and line.startswith(_BOM) else line
            if not body.strip():
                continue  # blank lines are layout, not records
            records += 1
            record, problem = _parse_line(body)
            if problem is not None:
                yield Reject(source, position, "<line>", *problem, line)
            else:
                yield check(record, position, line)
    except Exception as exc:  # noqa: BLE001 - a broken stream (truncated gzip, bad zstd frame)
        yield Reject(
            source,
            position + 1,
            "<file>",
            REJECT_UNREADABLE_FILE,
            f"stopped after line {position}: {type(exc).__name__}: {exc}",
        )
        return
    if not records:
        yield _empty_file(source, "no records: the file is empty or holds only blank lines")


def _empty_file(source: str, detail: str) -> Reject:
    return Reject(source, 0, "<file>", REJECT_EMPTY_FILE, detail)


def _is_text_type(typ) -> bool:
    """Arrow types whose values read as Python str: string, large_string, string_view, and a
    dictionary of any of them (pandas' `category`, Spark's dictionary pages)."""
    import pyarrow as pa

    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)


def _column_problem(schema, cfg: InputConfig) -> tuple[str, str, str] | None:
    """(field, reason, detail) when the file's columns cannot give documents."""
    if cfg.text_field not in schema.names:
        columns = ", ".join(schema.names[:20])
        return cfg.text_field, REJECT_MISSING_TEXT, f"no {cfg.text_field!r} column ({columns})"
    text_type = schema.field(cfg.text_field).type
    if not _is_text_type(text_type):
        return (
            cfg.text_field,
            REJECT_TEXT_NOT_STRING,
            f"column type is {text_type}, expected string",
        )
    return None


def _parquet_rows(batch) -> Iterator[tuple[dict, None] | tuple[bytes, tuple[str, str, str]]]:
    """(record, None) per row, or (the cell's bytes, (field, reason, detail)) for a row whose
    string cell is not UTF-8: pyarrow does not check on write, and one such cell fails the
    whole batch, so only then is the batch read row by row."""
    try:
        records = batch.to_pylist()
    except UnicodeDecodeError:
        records = None
    if records is not None:
        yield from ((record, None) for record in records)
        return
    for i in range(batch.num_rows):
        row = batch.slice(i, 1)
        try:
            yield row.to_pylist()[0], None
        except UnicodeDecodeError as exc:
            field = next(n for n in row.schema.names if not _decodes(row.column(n)))
            yield exc.object, (field, REJECT_INVALID_UTF8, f"byte {exc.start}: {exc.reason}")


def _decodes(column) -> bool:
    try:
        column.to_pylist()
    except UnicodeDecodeError:
        return False
    return True


def iter_parquet(f, cfg: InputConfig, source: str) -> Iterator[Document | Reject]:
    import pyarrow.parquet as pq

    check = _RecordChecker(cfg, source)
    position = 0
    try:
        if f.seek(0, io.SEEK_END) == 0:
            yield _empty_file(source, "the file has zero bytes")
            return
        f.seek(0)
        pf = pq.ParquetFile(f)
        problem = _column_problem(pf.schema_arrow, cfg)
        if problem is not None:
            yield Reject(source, 0, *problem)
            return
        names = pf.schema_arrow.names
        columns = [cfg.text_field] + ([cfg.id_field] if cfg.id_field in names else [])
        # A kept field the file lacks reads as null in every row.
        columns += [n for n in cfg.kept_types if n in names and n not in columns]
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
            for record, cell_problem in _parquet_rows(batch):
                position += 1
                if cell_problem is not None:
                    yield Reject(source, position, *cell_problem, cast(bytes, record))
                    continue
                record = cast(dict, record)
                if record[cfg.text_field] is None:
                    record.pop(cfg.text_field)  # null text is a missing text
                raw = json.dumps(record, default=str, ensure_ascii=False).encode()
                yield check(record, position, raw)
    except Exception as exc:  # noqa: BLE001 - corrupt footer, bad page, truncated file
        yield Reject(
            source,
            position + 1 if position else 0,
            "<file>",
            REJECT_UNREADABLE_FILE,
            f"stopped after row {position}: {type(exc).__name__}: {exc}",
        )
        return
    if not position:
        yield _empty_file(source, "no rows")


def _opens_an_array(f: io.BufferedReader) -> bool:
    """Whether a JSON file's first value is an array (`[{...}, {...}]`), by peeking."""
    head = f.peek(256)[:256]
    return head.removeprefix(_BOM).lstrip().startswith(b"[")


def iter_json(f: io.BufferedReader, cfg: InputConfig, source: str) -> Iterator[Document | Reject]:
    """A JSON file: an array of objects is one document per element (position = element
    number); anything else, JSON Lines included, is read as JSON Lines."""
    if not _opens_an_array(f):
        yield from iter_jsonl(f, cfg, source)
        return
    data = f.read()
    try:
        records = json.loads(data.removeprefix(_BOM).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        # JSON Lines whose first line is an array, or a broken array: line by line, so every
        # line gets its own reason.
        yield from iter_jsonl(io.BufferedReader(io.BytesIO(data)), cfg, source)
        return
    check = _RecordChecker(cfg, source)
    for position, record in enumerate(records, start=1):
        raw = json.dumps(record, ensure_ascii=False).encode("utf-8", "backslashreplace")
        yield check(record, position, raw)
    if not records:
        yield _empty_file(source, "an empty JSON array")


def text_doc_id(source: str, inputs: list[str]) -> str:
    """A text file's document id: its path under the first input that holds it (a named file:
    its name), so the id stays when the corpus moves to another prefix or bucket."""
    from condlabel.storage import literal_root, split_uri

    scheme, path = split_uri(source)
    for uri in inputs:
        root_scheme, root = literal_root(uri)
        if root_scheme == scheme and path.startswith(root.rstrip("/") + "/"):
            return posixpath.relpath(path, root)
    return posixpath.basename(path)


def iter_text(f, cfg: InputConfig, source: str) -> Iterator[Document | Reject]:
    """A plain-text file (.txt, .md) is one document; its id is `text_doc_id`."""
    raw = f.read()
    try:
        text = raw.removeprefix(_BOM).decode("utf-8")
    except UnicodeDecodeError as exc:
        yield Reject(
            source, 1, "<file>", REJECT_INVALID_UTF8, f"byte {exc.start}: {exc.reason}", raw
        )
        return
    if not text.strip():
        yield _empty_file(source, "no text: the file is empty or holds only whitespace")
        return
    yield Document(text_doc_id(source, cfg.paths), text, source, 1)


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
        compression = "infer" if fmt != "parquet" else None
        f = fs.open(path, "rb", compression=compression)
    except Exception as exc:  # noqa: BLE001 - any open failure is this file's reject
        yield Reject(source, 0, "<file>", REJECT_UNREADABLE_FILE, f"{type(exc).__name__}: {exc}")
        return
    with f:
        if fmt == "jsonl":
            # zstandard's reader and s3fs files have no readline(size) nor peek; a buffer does.
            items = iter_json(
                f if isinstance(f, io.BufferedReader) else io.BufferedReader(f), cfg, source
            )
        elif fmt == "text":
            items = iter_text(f, cfg, source)
        else:
            items = iter_parquet(f, cfg, source)
        # `input.sample_fraction`: here, so every pass over the inputs sees the same documents.
        yield from sample_documents(items, cfg.sample_fraction, cfg.sample_stratified)


def check_first_file(cfg: ConvertConfig, files: list[InputFile]) -> None:
    """Every kept field has a value in some document of the first input file, else the run is
    refused before labeling, naming the fields: a misspelt name would give a column of nulls.
    Reads the file only until every field was seen."""
    wanted = set(cfg.input.kept_types)
    if not wanted or not files:
        return
    first = files[0].uri
    fs, path = resolve(first, cfg.storage)
    for item in iter_file(fs, path, first, cfg.input):
        if isinstance(item, Document):
            wanted -= {name for name, value in item.meta.items() if value is not None}
            if not wanted:
                return
    raise ConfigError(
        [
            f"input.keep_fields: no document of the first input file ({first}) has {name!r}; "
            "check the field's name in the input"
            for name in sorted(wanted)
        ]
    )
