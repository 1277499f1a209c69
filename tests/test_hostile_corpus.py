"""Issue 12's closing check: one run over a corpus on the S3 server that mixes hostile input of
every kind the issue lists with good documents exits 0, labels every good document exactly once,
keeps every bad record in `_rejects/` with its reason, and a second run adds nothing."""

from __future__ import annotations

import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_docs
from hostile_backends import POISON, STALL, poisoned
from pipeline_helpers import convert_config

from condlabel import read_tagged
from condlabel.convert.pipeline import run_conversion

pytestmark = [pytest.mark.s3, pytest.mark.usefixtures("ray_local")]


def _jsonl(records: list, end: bytes = b"\n") -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + end for r in records)


def _parquet(docs: list[dict]) -> bytes:
    table = pa.table(
        {
            "id": pa.array([d["id"] for d in docs]).dictionary_encode(),
            "text": pa.array([d["text"] for d in docs]).dictionary_encode(),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _hostile_corpus() -> tuple[dict[str, bytes], set[str], dict[str, int]]:
    """Files by name, the ids of the good documents, and the rejects expected by reason."""
    good = make_docs(6, "good")
    crlf = make_docs(3, "cr")
    table = make_docs(3, "pq")
    dna = "".join(random.Random(0).choice("acgt") for _ in range(30_000))
    repeated = {"id": "same", "text": "The same record, read twice. " * 5}
    mixed = [
        *good[:3],
        b"{not json",
        {"id": "no-text"},
        {"id": "surrogate", "text": "broken \ud800 text"},  # json.dumps escapes it: valid JSON
        {"id": "dup", "text": "The first text under this id. " * 5},
        {"id": "dup", "text": "Another text under the same id. " * 5},
        repeated,
        repeated,
        {"id": 7, "text": "Seven as a number. " * 5},
        {"id": "7", "text": "Seven as a string. " * 5},
        {"id": "dna", "text": f"A genome follows. {dna} That was the genome."},
        {"id": "poison", "text": f"A {POISON} chunk the labeler fails on. " * 3},
        {"id": "stall", "text": f"A {STALL} chunk the labeler never finishes. " * 3},
        *good[3:],
    ]
    files = {
        "in/mixed.jsonl": b"\xef\xbb\xbf" + _jsonl(mixed),  # a byte-order mark first
        "in/cr.jsonl": _jsonl(crlf, end=b"\r"),
        "in/empty.jsonl.gz": b"",
        "in/table.parquet": _parquet(table),
    }
    ids = {d["id"] for d in good + crlf + table} | {"dup", "same", "7", "dna"}
    expected = {
        "invalid_json": 1,
        "missing_text_field": 1,
        "invalid_unicode": 1,
        "duplicate_id": 2,  # "dup" and "7": a second, different text under a seen id
        "duplicate_text": 1,
        "empty_file": 1,
        "labeler_error": 1,
        "labeler_timeout": 1,
    }
    return files, ids, expected


def test_a_hostile_corpus_loses_nothing_and_a_rerun_adds_nothing(s3_bucket, s3fs_client):
    files, good_ids, expected = _hostile_corpus()
    for name, data in files.items():
        s3fs_client.pipe(f"{s3_bucket}/{name}", data)
    out = f"s3://{s3_bucket}/out"
    cfg = poisoned(convert_config([f"s3://{s3_bucket}/in/"], out))
    # The stalled chunk's call ends its actor after this long; keyphrase labels a chunk in ms.
    cfg.compute.label_timeout_s = 5

    first = run_conversion(cfg)
    assert first.status == "succeeded"
    for reason, count in expected.items():
        assert first.rejected.get(reason) == count, (reason, first.rejected)
    rejects = s3fs_client.glob(f"{s3_bucket}/out/_rejects/{first.run_id}/*.parquet")
    stored = pa.concat_tables([pq.read_table(s3fs_client.open(p)) for p in rejects])
    assert sorted(stored.column("reason").to_pylist()) == sorted(
        reason for reason, n in expected.items() for _ in range(n)
    )
    kept = zip(stored.column("reason").to_pylist(), stored.column("raw").to_pylist(), strict=True)
    assert all(raw for reason, raw in kept if reason != "empty_file"), "a reject lost its bytes"

    rows = read_tagged(out, columns=["doc_id", "chunk_index"])
    keys = list(
        zip(rows.column("doc_id").to_pylist(), rows.column("chunk_index").to_pylist(), strict=True)
    )
    assert len(keys) == len(set(keys)), "a chunk was written twice"
    assert {doc_id for doc_id, _ in keys} == good_ids
    assert len(keys) == first.rows_written

    second = run_conversion(cfg)
    assert second.status == "succeeded"
    assert second.rows_written == 0
    assert read_tagged(out, columns=["doc_id"]).num_rows == len(keys)
