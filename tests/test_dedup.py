"""Duplicate-aware labeling: each distinct chunk text is labeled once per run, across batches,
files and labeler actors; every copy keeps its own row with the labeled chunk's labels."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dedup_backends import counting, labeled_texts
from helpers import write_jsonl
from hostile_backends import POISON, poisoned
from pipeline_helpers import convert_config, output_rows

from condlabel.config import ChunkConfig, StorageConfig, load_convert_config
from condlabel.convert import graph_steps
from condlabel.convert.chunking import chunk_document, doc_version
from condlabel.convert.copies import copy_groups
from condlabel.convert.dedup import (
    CHUNK_KEY_FIELDS,
    CopyPlan,
    canonical_labels,
    file_keys,
    fill_copies,
    plan_copies,
    plan_keys,
    split_copies,
    text_hash,
)
from condlabel.convert.duplicates import KEY_FIELDS
from condlabel.convert.pipeline import run_conversion
from condlabel.convert.reading import Document
from condlabel.current import normalise_text
from condlabel.runs.runstate import key_hash, read_manifests
from condlabel.schema import COPIES_DIR

LABELS = ["synopsis", "tags", "control_tokens", "scores", "logprob", "parse_ok", "raw_output"]


def _paragraph(topic: str, n: int = 28) -> str:
    words = [f"{topic}{i % 7}" if i % 3 else "river" for i in range(n)]
    return f"The {topic} survey. " + " ".join(words) + "."


P = [_paragraph(t) for t in ("granite", "harbour", "orchard", "glacier", "printing", "marsh")]


def _corpus(tmp_path):
    """Three files whose chunks (one paragraph each at 40 words) repeat across documents, files
    and within a document; one copy differs in whitespace only, one in case (not a copy)."""
    a = [
        {"id": "a1", "text": "\n\n".join([P[0], P[1], P[2]])},
        {"id": "a2", "text": "\n\n".join([P[1], P[3]])},
    ]
    b = [
        {"id": "b1", "text": "\n\n".join([P[0].replace(" ", "  ", 3), P[4]])},
        {"id": "b2", "text": "\n\n".join([P[2], P[2], P[1]])},
    ]
    c = [{"id": "c1", "text": "\n\n".join([P[5].upper(), P[5], P[3]])}]
    for name, docs in (("a", a), ("b", b), ("c", c)):
        write_jsonl(tmp_path / "corpus" / f"{name}.jsonl", docs)
    return a + b + c


def _chunk_texts(docs: list[dict], max_words: int = 40) -> dict[tuple[str, int], str]:
    cfg = ChunkConfig(max_words=max_words)
    return {
        (d["id"], c.chunk_index): c.text
        for d in docs
        for c in chunk_document(Document(d["id"], d["text"], "s", 1), cfg)
    }


def _same(text: str) -> str:
    """The test's own statement of "the same text": whitespace runs collapsed, case kept."""
    return " ".join(text.split())


# --- the plan, without Ray ---------------------------------------------------------------------


def test_normalised_text_folds_whitespace_only():
    assert normalise_text("a  b\n\tc ") == normalise_text("a b c")
    assert text_hash("Cafe\u0301 x") == text_hash("Café  x")  # NFC
    assert text_hash("River") != text_hash("river")
    assert text_hash("river.") != text_hash("river")


def test_the_first_chunk_in_input_order_is_labeled_and_the_others_are_copies():
    # file, position, chunk, text: text 7 appears in file 1 first, then file 0 later on disk
    # order but file 0 comes first in input order, so file 0's is labeled.
    rows = [(1, 0, 0, 7), (0, 5, 1, 7), (0, 5, 0, 8), (2, 1, 0, 7), (0, 9, 0, 9), (1, 3, 2, 8)]
    keys = {
        "file": np.array([r[0] for r in rows]),
        "position": np.array([r[1] for r in rows]),
        "chunk_index": np.array([r[2] for r in rows]),
        "key": np.arange(len(rows), dtype=np.int64) * 10,
        "text": np.array([r[3] for r in rows]),
    }
    plan = plan_copies(keys)
    assert plan.copy_keys.tolist() == [0, 30, 50]  # rows 0 and 3 copy row 1; row 5 copies row 2
    assert plan.labeled_texts.tolist() == [7, 8]
    assert plan.copies == 3


def test_one_key_pass_gives_the_later_ids_and_a_plan_without_their_chunks(tmp_path):
    # x is given again in b.jsonl with the same text: a duplicate_text reject, so its chunk
    # must not become a copy of a.jsonl's x; y repeats x's text and z repeats y's: copies.
    write_jsonl(
        tmp_path / "in" / "a.jsonl",
        [{"id": "x", "text": P[0]}, {"id": "y", "text": f"{P[1]}\n\n{P[0]}"}],
    )
    write_jsonl(tmp_path / "in" / "b.jsonl", [{"id": "x", "text": P[0]}, {"id": "z", "text": P[1]}])
    cfg = convert_config(
        [tmp_path / "in"], tmp_path / "out", "chunking.max_words=40", "dedup.enabled=true"
    )
    uris = [str(tmp_path / "in" / name) for name in ("a.jsonl", "b.jsonl")]

    def key(doc_id: str, text: str, index: int) -> int:
        return key_hash(doc_id, doc_version(text, cfg.chunking), index)

    def plan(done=None, chunks=True):
        parts = [file_keys(uri, i, cfg, done, chunks) for i, uri in enumerate(uris)]
        return plan_keys(
            {k: np.concatenate([p[0][k] for p in parts]) for k in KEY_FIELDS},
            {k: np.concatenate([p[1][k] for p in parts]) for k in CHUNK_KEY_FIELDS}
            if chunks
            else None,
            uris,
        )

    found, copies = plan()
    assert {uri: {pos: d.reason for pos, d in at.items()} for uri, at in found.items()} == {
        uris[1]: {1: "duplicate_text"}
    }
    assert sorted(copies.copy_keys.tolist()) == sorted(
        [key("y", f"{P[1]}\n\n{P[0]}", 1), key("z", P[1], 0)]
    )
    # Chunks already in the output are not planned; without chunks only the ids are decided.
    _, copies = plan(done=lambda doc_id, doc_hash, index: doc_id == "z")
    assert copies.copy_keys.tolist() == [key("y", f"{P[1]}\n\n{P[0]}", 1)]
    assert plan(chunks=False) == (found, None)


def test_waiting_copies_are_written_in_groups_of_about_a_shard():
    paths = [f"_copies/r/{name}.parquet" for name in ("a.3", "b.2", "c.4", "d.9", "e", "f.1")]
    assert (
        copy_groups(paths, 5)
        == [
            paths[0:2],  # 3 + 2
            paths[2:3],  # 4, and 4 + 9 would pass 5
            paths[3:4],  # 9 alone: more than a shard, sliced by the writer
            paths[4:5],  # no count in the name: alone
            paths[5:6],
        ]
    )
    assert copy_groups(paths, 100) == [paths[0:4], paths[4:5], paths[5:6]]
    assert copy_groups([], 5) == []


def test_copies_get_exactly_the_labels_of_their_chunk_and_name_it():
    chunks = pa.table(
        {
            "doc_id": ["d", "e", "f"],
            "doc_hash": ["h", "h", "h"],
            "chunk_index": pa.array([0, 3, 1], pa.int32()),
            "text": ["same  text", "other", "same text"],
        }
    )
    plan = CopyPlan(
        np.array([key_hash("f", "h", 1)], dtype=np.int64), np.array([text_hash("same text")])
    )
    to_label, held = split_copies(chunks, plan)
    assert to_label.column("doc_id").to_pylist() == ["d", "e"]
    assert held.column("doc_id").to_pylist() == ["f"]
    labeled = to_label.append_column("synopsis", pa.array(["S-d", "S-e"])).append_column(
        "tags", pa.array([["x", "y"], ["z"]])
    )
    kept = canonical_labels(labeled, plan, ["synopsis", "tags"])
    assert kept.column("copied_from").to_pylist() == ["d#0@h"]
    filled, orphans = fill_copies(held, kept)
    assert orphans.num_rows == 0
    assert filled.select(["doc_id", "text", "synopsis", "tags", "copied_from"]).to_pylist() == [
        {"doc_id": "f", "text": "same text", "synopsis": "S-d", "tags": ["x", "y"],
         "copied_from": "d#0@h"}
    ]  # fmt: skip
    filled, orphans = fill_copies(held, None)  # the labeled chunk failed
    assert (filled.num_rows, orphans.column("doc_id").to_pylist()) == (0, ["f"])


# --- real runs on the local Ray ----------------------------------------------------------------

with_ray = pytest.mark.usefixtures("ray_local")


@with_ray
@pytest.mark.parametrize("key_pass_bytes", [0, 2**20], ids=["key-pass-in-tasks", "in-driver"])
def test_a_corpus_with_copies_is_labeled_once_per_distinct_text(
    tmp_path, key_pass_bytes, monkeypatch
):
    monkeypatch.setattr(graph_steps, "KEY_PASS_DRIVER_BYTES", key_pass_bytes)
    docs = _corpus(tmp_path)
    chunks = _chunk_texts(docs)
    distinct = {_same(t) for t in chunks.values()}
    assert len(distinct) < len(chunks) - 4  # the corpus really repeats itself
    cfg = convert_config(
        [tmp_path / "corpus"],
        tmp_path / "out",
        "chunking.max_words=40",
        "compute.batch_size=2",  # copies land in other batches, files and actors
        "output.rows_per_file=3",
        "dedup.enabled=true",  # `auto` is off for this CPU labeler
    )
    summary = run_conversion(counting(cfg, _count_dir(tmp_path)))

    calls = labeled_texts(tmp_path / "calls")
    assert len(calls) == len(distinct)
    assert {_same(t) for t in calls} == distinct
    assert summary.labeler_calls_saved == len(chunks) - len(distinct)
    assert summary.rows_written == len(chunks)

    rows = {(r["doc_id"], r["chunk_index"]): r for r in output_rows(tmp_path / "out").to_pylist()}
    assert set(rows) == set(chunks)
    labeled = {_same(r["text"]): key for key, r in rows.items() if r["copied_from"] is None}
    assert set(labeled) == distinct
    for key, row in rows.items():
        assert row["text"] == chunks[key]  # each copy keeps its own text
        source = rows[labeled[_same(row["text"])]]
        if row["copied_from"] is not None:
            doc_id, index = labeled[_same(row["text"])]
            assert row["copied_from"] == f"{doc_id}#{index}@{source['doc_hash']}"
            assert row["text_key"] == source["text_key"]
        assert {k: row[k] for k in LABELS} == {k: source[k] for k in LABELS}
        assert row["conditional_text"].endswith(row["text"])

    [manifest] = read_manifests(str(tmp_path / "out"), StorageConfig())
    assert manifest["counts"]["labeler_calls_saved"] == summary.labeler_calls_saved
    assert not (tmp_path / "out" / COPIES_DIR).exists()

    # A rerun labels nothing and copies nothing.
    again = run_conversion(counting(cfg, _count_dir(tmp_path, "calls-2")))
    assert (again.rows_written, again.labeler_calls_saved) == (0, 0)
    assert labeled_texts(tmp_path / "calls-2") == []


def test_dedup_auto_is_on_for_generative_labelers_only():
    on = {"hf", "vllm", "ct2"}
    for backend in ("keyphrase", "none", *on):
        model = [] if backend in ("keyphrase", "none") else ["labeler.model=m"]
        cfg = load_convert_config(overrides=[f"labeler.backend={backend}", *model])
        assert cfg.dedup.enabled == "auto"
        assert cfg.dedup_enabled == (backend in on), backend
    assert load_convert_config(overrides=["dedup.enabled=true"]).dedup_enabled
    off = ["labeler.backend=hf", "labeler.model=m", "dedup.enabled=false"]
    assert not load_convert_config(overrides=off).dedup_enabled


@with_ray
def test_without_dedup_every_copy_is_labeled(tmp_path):
    chunks = _chunk_texts(_corpus(tmp_path))
    cfg = convert_config(
        [tmp_path / "corpus"], tmp_path / "out", "chunking.max_words=40", "dedup.enabled=false"
    )
    summary = run_conversion(counting(cfg, _count_dir(tmp_path)))
    assert len(labeled_texts(tmp_path / "calls")) == len(chunks) == summary.rows_written
    assert summary.labeler_calls_saved == 0
    assert output_rows(tmp_path / "out").column("copied_from").null_count == len(chunks)


@with_ray
def test_copies_of_a_chunk_that_fails_to_label_are_rejected_with_it(tmp_path):
    bad = f"{POISON} " + _paragraph("poison")
    docs = [
        {"id": "x1", "text": "\n\n".join([bad, P[0]])},
        {"id": "x2", "text": "\n\n".join([P[0], bad])},
        {"id": "x3", "text": bad},
    ]
    write_jsonl(tmp_path / "corpus" / "x.jsonl", docs)
    cfg = convert_config(
        [tmp_path / "corpus"],
        tmp_path / "out",
        "chunking.max_words=40",
        "compute.max_labeler_error_share=0.9",
        "dedup.enabled=true",
    )
    summary = run_conversion(poisoned(cfg))
    assert summary.rejected.get("labeler_error") == 3  # the labeled one and its two copies
    assert (summary.rows_written, summary.labeler_calls_saved) == (2, 1)
    rejects = pa.concat_tables(
        [pq.read_table(p) for p in (tmp_path / "out" / "_rejects").rglob("*.parquet")]
    )
    details = rejects.column("detail").to_pylist()
    assert sum("the chunk with the same text failed to label" in d for d in details) == 2


def _count_dir(tmp_path, name: str = "calls"):
    path = tmp_path / name
    path.mkdir()
    return path
