"""Reading documents: formats, id fields, stable auto ids, bad records kept with a reason."""

from __future__ import annotations

import gzip
import json

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from condlabel.config import InputConfig
from condlabel.convert.reading import Document, Reject, auto_doc_id, iter_file

DOCS = [
    {"id": "a", "text": "Alpha text."},
    {"id": 7, "text": "Beta text."},
    {"text": "No id here."},
]


def read(path, cfg: InputConfig | None = None) -> list[Document | Reject]:
    fs = fsspec.filesystem("file")
    return list(iter_file(fs, str(path), str(path), cfg or InputConfig()))


def write_jsonl(path, rows, opener=open):
    with opener(path, "wt", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet"])
def test_every_format_reads_the_same_documents(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    if suffix == ".jsonl":
        write_jsonl(path, DOCS)
    elif suffix == ".jsonl.gz":
        write_jsonl(path, DOCS, gzip.open)
    elif suffix == ".jsonl.zst":
        payload = "".join(json.dumps(r) + "\n" for r in DOCS).encode()
        path.write_bytes(zstandard.ZstdCompressor().compress(payload))
    else:
        pq.write_table(
            pa.Table.from_pylist(
                [{"id": str(r.get("id")) if "id" in r else None, "text": r["text"]} for r in DOCS]
            ),
            path,
        )
    docs = read(path)
    assert all(isinstance(d, Document) for d in docs)
    assert [d.text for d in docs] == [r["text"] for r in DOCS]
    assert [d.doc_id for d in docs[:2]] == ["a", "7"]
    assert docs[2].doc_id == auto_doc_id(DOCS[2]["text"])
    assert [d.position for d in docs] == [1, 2, 3]


def test_auto_ids_are_stable_and_distinct():
    # Derived from the text alone (issue 12, item 4): where the file lives does not matter.
    assert auto_doc_id("Some text.") == auto_doc_id("Some text.")
    assert auto_doc_id("Some text.") != auto_doc_id("Some text!")
    assert auto_doc_id("Some text.").startswith("auto-")


def test_configurable_fields(tmp_path):
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [{"url": "u1", "content": "Hello there."}])
    [doc] = read(path, InputConfig(text_field="content", id_field="url"))
    assert (doc.doc_id, doc.text) == ("u1", "Hello there.")


def test_bad_records_are_rejected_with_line_field_and_reason(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        b'{"id": "ok1", "text": "Fine."}',
        b'{"id": "broken", "text": ',
        b'["not", "an", "object"]',
        b'{"id": "nt", "body": "wrong field"}',
        b'{"id": "num", "text": 42}',
        b'{"id": "bad-utf8", "text": "caf\xe9"}',
        b'{"id": "empty", "text": "   \\n  "}',
        b'{"id": {"nested": 1}, "text": "Bad id."}',
        b"",
        b'{"id": "ok2", "text": "Also fine."}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    items = read(path)
    docs = [i for i in items if isinstance(i, Document)]
    rejects = {i.position: i for i in items if isinstance(i, Reject)}
    assert [d.doc_id for d in docs] == ["ok1", "ok2"]
    assert {p: r.reason for p, r in rejects.items()} == {
        2: "invalid_json",
        3: "not_an_object",
        4: "missing_text_field",
        5: "text_not_string",
        6: "invalid_utf8",
        7: "empty_text",
        8: "invalid_id",
    }
    assert rejects[4].field == "text"
    assert rejects[2].raw == lines[1] + b"\n"  # nothing lost: the original bytes are kept
    assert all(r.source == str(path) for r in rejects.values())


def test_truncated_gzip_keeps_the_good_lines_and_rejects_the_file_tail(tmp_path):
    path = tmp_path / "cut.jsonl.gz"
    write_jsonl(
        path, [{"id": str(i), "text": f"Document {i} " * 50} for i in range(200)], gzip.open
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    items = read(path)
    docs = [i for i in items if isinstance(i, Document)]
    rejects = [i for i in items if isinstance(i, Reject)]
    assert 0 < len(docs) < 200
    assert [r.reason for r in rejects] == ["unreadable_file"]
    assert rejects[0].position == len(docs) + 1


def test_corrupt_parquet_is_rejected_not_raised(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all")
    [reject] = read(path)
    assert reject.reason == "unreadable_file" and reject.field == "<file>"


def test_parquet_without_text_column(tmp_path):
    path = tmp_path / "notext.parquet"
    pq.write_table(pa.table({"id": ["a"], "body": ["x"]}), path)
    [reject] = read(path)
    assert reject.reason == "missing_text_field" and "body" in reject.detail


def test_parquet_null_text_is_rejected_per_row(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": [None, "ok text"]}), path)
    items = read(path)
    assert isinstance(items[0], Reject) and items[0].reason == "missing_text_field"
    assert items[0].position == 1
    assert isinstance(items[1], Document) and items[1].doc_id == "b"
