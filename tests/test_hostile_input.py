"""Hostile corpus files (issue 12, items 4, 5, 10): every good document is read, every bad record
is a reject with file, position, field, reason and its raw bytes, and nothing raises."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import random
import re

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from condlabel.config import ConvertConfig, InputConfig
from condlabel.convert import reading
from condlabel.convert.reading import Document, Reject, iter_file
from condlabel.convert.stages import read_and_chunk
from condlabel.runs.summary import FileStats
from condlabel.schema import REJECT_SCHEMA


def read(path, cfg: InputConfig | None = None) -> list[Document | Reject]:
    return list(iter_file(fsspec.filesystem("file"), str(path), str(path), cfg or InputConfig()))


def split(items):
    docs = [i for i in items if isinstance(i, Document)]
    return docs, [i for i in items if isinstance(i, Reject)]


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


# --- item 4: automatic ids come from the text, not from where the file lives -----------------

ID_LESS = [{"text": f"Document number {i} talks about rivers."} for i in range(10)]


def test_auto_ids_survive_rename_recompression_and_resharding(tmp_path):
    original = tmp_path / "corpus.jsonl"
    original.write_bytes(jsonl_bytes(ID_LESS))
    renamed = tmp_path / "moved" / "other-name.jsonl.gz"
    renamed.parent.mkdir()
    renamed.write_bytes(gzip.compress(jsonl_bytes(ID_LESS)))
    shards = [tmp_path / "shard-1.jsonl.zst", tmp_path / "shard-0.jsonl"]
    shards[0].write_bytes(zstandard.ZstdCompressor().compress(jsonl_bytes(ID_LESS[5:])))
    shards[1].write_bytes(jsonl_bytes(ID_LESS[:5]))
    as_parquet = tmp_path / "again.parquet"
    pq.write_table(pa.Table.from_pylist(ID_LESS), as_parquet)

    def ids(*paths):
        return sorted(d.doc_id for p in paths for d in read(p))

    assert len(set(ids(original))) == 10
    assert ids(original) == ids(renamed) == ids(*shards) == ids(as_parquet)


def test_identical_id_less_texts_are_labeled_once_and_the_repeat_is_kept(tmp_path):
    path = tmp_path / "dups.jsonl"
    lines = [b'{"text": "Same words."}', b'{"text": "Other words."}', b'{"text": "Same words."}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, rejects = split(read(path))
    assert [d.position for d in docs] == [1, 2]
    [repeat] = rejects
    assert (repeat.position, repeat.field, repeat.reason) == (3, "text", "duplicate_text")
    assert "line/row 1" in repeat.detail and repeat.raw == lines[2] + b"\n"


def test_an_explicit_id_keeps_a_repeated_text(tmp_path):
    path = tmp_path / "ids.jsonl"
    path.write_bytes(jsonl_bytes([{"id": "a", "text": "Same."}, {"id": "b", "text": "Same."}]))
    docs, rejects = split(read(path))
    assert [d.doc_id for d in docs] == ["a", "b"] and not rejects


# --- item 5: text that is valid JSON but not valid Unicode ----------------------------------


def test_lone_surrogates_are_rejected_with_their_bytes(tmp_path):
    path = tmp_path / "surrogates.jsonl"
    lines = [
        b'{"id": "s1", "text": "a\\ud800b"}',
        b'{"id": "s2\\udfff", "text": "Fine text."}',
        b'{"id": "ok", "text": "Good text."}',
        b'{"id": "pair", "text": "emoji \\ud83d\\ude00 is a valid pair"}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    docs, rejects = split(read(path))
    assert [d.doc_id for d in docs] == ["ok", "pair"]
    assert [(r.position, r.field, r.reason) for r in rejects] == [
        (1, "text", "invalid_unicode"),
        (2, "id", "invalid_unicode"),
    ]
    assert "\\ud800" in rejects[0].detail and "character 1" in rejects[0].detail
    assert [r.raw for r in rejects] == [lines[0] + b"\n", lines[1] + b"\n"]


def test_a_file_of_hostile_records_reads_chunks_and_stores_its_rejects(tmp_path):
    # The read task end to end: before, the surrogate raised UnicodeEncodeError here.
    path = tmp_path / "in" / "hostile.jsonl"
    path.parent.mkdir()
    path.write_bytes(
        b'{"id": "bad", "text": "a\\ud800b"}\n'
        b'{"\\ud800key": 1}\n'
        b'{"id": "good", "text": "A good document about harbours."}\n'
    )
    cfg = ConvertConfig.model_validate(
        {"input": {"paths": [str(path.parent)]}, "output": {"uri": str(tmp_path / "out")}}
    )
    items = list(read_and_chunk(str(path), cfg, "run1"))
    stats = items[-1]
    assert isinstance(stats, FileStats)
    assert stats.documents == 1 and dict(stats.rejected) == {
        "invalid_unicode": 1,
        "missing_text_field": 1,
    }
    assert sum(t.num_rows for t in items[:-1]) == 1
    [stored] = (tmp_path / "out" / "_rejects" / "run1").iterdir()
    table = pq.read_table(stored)
    assert table.column("reason").to_pylist() == ["invalid_unicode", "missing_text_field"]
    assert "\\ud800key" in table.column("detail").to_pylist()[1]


def test_rejects_with_surrogates_in_their_fields_fit_the_reject_schema():
    reject = Reject("s3://b/f.jsonl", 3, "t\ud800", "missing_text_field", "no 'x\udc80'", b"raw")
    assert (reject.field, reject.detail) == ("t\\ud800", "no 'x\\udc80'")
    pa.Table.from_pylist([{**dataclasses.asdict(reject), "run_id": "r"}], schema=REJECT_SCHEMA)


@pytest.mark.parametrize(
    ("line", "detail"),
    [
        (b'{"id": 1' + b"0" * 5000 + b', "text": "Big id."}', "4300 digits"),
        (b'{"text": "Deep.", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "RecursionError"),
    ],
)
def test_json_that_defeats_the_parser_is_one_reject_not_the_rest_of_the_file(
    tmp_path, line, detail
):
    path = tmp_path / "parser.jsonl"
    path.write_bytes(line + b"\n" + b'{"id": "after", "text": "Still read."}\n')
    docs, [reject] = split(read(path))
    assert [d.doc_id for d in docs] == ["after"]
    assert (reject.position, reject.reason) == (1, "invalid_json") and detail in reject.detail


def test_non_finite_ids_are_invalid(tmp_path):
    path = tmp_path / "nan.jsonl"
    path.write_bytes(b'{"id": NaN, "text": "x."}\n{"id": Infinity, "text": "y."}\n')
    assert [r.reason for r in read(path)] == ["invalid_id", "invalid_id"]


# --- item 10: formats that lost good documents ------------------------------------------------


def test_a_byte_order_mark_is_not_part_of_the_first_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl_bytes([{"id": "1", "text": "First."}]))
    [doc] = read(path)
    assert (doc.doc_id, doc.text) == ("1", "First.")


@pytest.mark.parametrize("end", [b"\r", b"\r\n", b"\n"])
def test_every_line_ending_splits_records(tmp_path, end):
    path = tmp_path / "ends.jsonl.gz"
    rows = [{"id": str(i), "text": f"Line {i}."} for i in range(5)]
    payload = end.join(json.dumps(r).encode() for r in rows) + end + end  # and a blank line
    path.write_bytes(gzip.compress(payload))
    docs = read(path)
    assert [(d.doc_id, d.position) for d in docs] == [(str(i), i + 1) for i in range(5)]


def test_line_splitting_matches_universal_newlines_across_piece_boundaries(monkeypatch):
    # Tiny pieces put CR, LF and CRLF on every side of a piece boundary.
    monkeypatch.setattr(reading, "_PIECE_BYTES", 3)
    rng = random.Random(0)
    for _ in range(300):
        data = bytes(rng.choice(b"ab\r\n") for _ in range(rng.randint(0, 40)))
        expected = [m.group() for m in re.finditer(rb"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$", data)]
        assert list(reading._lines(io.BufferedReader(io.BytesIO(data)))) == expected, data


@pytest.mark.parametrize(
    "arrow_type",
    [pa.dictionary(pa.int32(), pa.string()), pa.large_string(), pa.string_view()],
    ids=["dictionary", "large_string", "string_view"],
)
def test_parquet_text_and_id_columns_of_any_string_type(tmp_path, arrow_type):
    path = tmp_path / "typed.parquet"
    table = pa.table(
        {
            "id": pa.array(["a", "b"]).cast(arrow_type),
            "text": pa.array(["First text.", "Second text."]).cast(arrow_type),
        }
    )
    pq.write_table(table, path)
    docs = read(path)
    assert [(d.doc_id, d.text) for d in docs] == [("a", "First text."), ("b", "Second text.")]


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("zero.jsonl", b""),
        ("zero.jsonl.gz", b""),
        ("empty.jsonl.gz", gzip.compress(b"")),
        ("blank.jsonl.zst", zstandard.ZstdCompressor().compress(b"\n \n")),
        ("zero.parquet", b""),
        ("bom-only.jsonl", b"\xef\xbb\xbf\n"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_an_empty_file_is_a_reject_not_silence(tmp_path, name, payload):
    path = tmp_path / name
    path.write_bytes(payload)
    [reject] = read(path)
    assert (reject.reason, reject.position, reject.field) == ("empty_file", 0, "<file>")
    assert reject.source == str(path)


def test_a_parquet_file_without_rows_is_empty(tmp_path):
    path = tmp_path / "norows.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    [reject] = read(path)
    assert reject.reason == "empty_file"


def test_a_parquet_cell_that_is_not_utf8_is_one_reject(tmp_path):
    # pyarrow writes such a string column without a check; reading it failed the whole batch.
    path = tmp_path / "badcell.parquet"
    text = pa.array([b"Good one.", b"ba\xffd", b"Fine too."], pa.binary()).view(pa.string())
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": text}), path)
    docs, [reject] = split(read(path))
    assert [d.doc_id for d in docs] == ["a", "c"]
    assert (reject.position, reject.field, reject.reason) == (2, "text", "invalid_utf8")
    assert reject.raw == b"ba\xffd"
