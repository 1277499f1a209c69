"""Reading documents from corpus files, rejecting bad records with a reason, and chunking.

Plain functions over fsspec file objects: no Ray here, so everything is unit-testable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import fsspec

from condlabel.config import ChunkConfig, InputConfig

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


def doc_version(text: str, chunking: ChunkConfig) -> str:
    """The `doc_hash` stored with every chunk: content hash of the text *as chunked*, so a
    changed text or changed chunking settings both make the document's chunks new work."""
    return content_hash(
        f"{chunking.unit}/{chunking.max_words}/{chunking.effective_min_words}\x00{text}"
    )


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


# --------------------------------------------------------------------------- chunking

# Separators are whitespace only, so splitting never drops a visible character.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?。！？])|(?<=[.!?][\"')\]]))\s+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_index: int
    text: str
    num_words: int
    start: int
    """Character offset of the chunk in the document text."""


def _spans(
    pattern_split: re.Pattern[str], text: str, start: int, end: int
) -> list[tuple[int, int]]:
    """Split text[start:end] at the pattern's matches; spans are stripped of surrounding space."""
    spans = []
    pos = start
    for m in pattern_split.finditer(text, start, end):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    return _spans(_PARAGRAPH_BREAK, text, 0, len(text))


def _word_count(text: str, start: int, end: int) -> int:
    return sum(1 for _ in _WORD.finditer(text, start, end))


def _segments(text: str, max_words: int) -> list[tuple[int, int, int]]:
    """(start, end, words) units of at most max_words: paragraphs, else sentences, else words."""
    out: list[tuple[int, int, int]] = []
    for ps, pe in _paragraph_spans(text):
        n = _word_count(text, ps, pe)
        if n <= max_words:
            out.append((ps, pe, n))
            continue
        for ss, se in _spans(_SENTENCE_END, text, ps, pe):
            m = _word_count(text, ss, se)
            if m <= max_words:
                out.append((ss, se, m))
                continue
            words = [(w.start(), w.end()) for w in _WORD.finditer(text, ss, se)]
            for i in range(0, len(words), max_words):
                window = words[i : i + max_words]
                out.append((window[0][0], window[-1][1], len(window)))
    return out


def _pack(segments: list[tuple[int, int, int]], max_words: int) -> list[list[tuple[int, int, int]]]:
    windows: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    words = 0
    for seg in segments:
        if current and words + seg[2] > max_words:
            windows.append(current)
            current, words = [], 0
        current.append(seg)
        words += seg[2]
    if current:
        windows.append(current)
    return windows


def _rebalance_tail(
    windows: list[list[tuple[int, int, int]]], max_words: int, min_words: int
) -> None:
    """Avoid a tiny last window: merge it into the previous one, or split the pair evenly."""
    if len(windows) < 2:
        return
    last_words = sum(s[2] for s in windows[-1])
    if last_words >= min_words:
        return
    pair = windows[-2] + windows[-1]
    total = sum(s[2] for s in pair)
    if total <= max_words:
        windows[-2:] = [pair]
        return
    best, best_cut, left = -1, len(windows[-2]), 0
    for cut in range(1, len(pair)):
        left += pair[cut - 1][2]
        right = total - left
        if left <= max_words and right <= max_words and min(left, right) > best:
            best, best_cut = min(left, right), cut
    windows[-2:] = [pair[:best_cut], pair[best_cut:]]


def chunk_text(text: str, max_words: int, min_words: int) -> list[tuple[int, int, int]]:
    """Split text into (start, end, words) windows of at most max_words words.

    Boundaries fall between paragraphs, else between sentences, else between words; a short last
    window is merged or rebalanced. Every word of the text lands in exactly one window, in order.
    """
    windows = _pack(_segments(text, max_words), max_words)
    _rebalance_tail(windows, max_words, min_words)
    return [(w[0][0], w[-1][1], sum(s[2] for s in w)) for w in windows]


def sentence_units(text: str, max_words: int, min_words: int) -> list[tuple[int, int, int]]:
    """(start, end, words) per sentence; sentences over max_words are split into windows and
    sentences under min_words are dropped (the reference removes short fragments)."""
    units: list[tuple[int, int, int]] = []
    for ps, pe in _paragraph_spans(text):
        for ss, se in _spans(_SENTENCE_END, text, ps, pe):
            n = _word_count(text, ss, se)
            if n > max_words:
                words = [(w.start(), w.end()) for w in _WORD.finditer(text, ss, se)]
                for i in range(0, len(words), max_words):
                    window = words[i : i + max_words]
                    units.append((window[0][0], window[-1][1], len(window)))
            elif n >= min_words:
                units.append((ss, se, n))
    return units


def chunk_document(doc: Document, cfg: ChunkConfig) -> list[Chunk]:
    if cfg.unit == "sentence":
        spans = sentence_units(doc.text, cfg.max_words, cfg.effective_min_words)
    else:
        spans = chunk_text(doc.text, cfg.max_words, cfg.effective_min_words)
    return [Chunk(doc.doc_id, i, doc.text[s:e], n, s) for i, (s, e, n) in enumerate(spans)]
