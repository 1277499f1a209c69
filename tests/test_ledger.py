"""The input-file ledger (reruns that do not open complete files) and the done check built by
Ray tasks. Unit tests need no Ray; the runs use the session's local Ray."""

from __future__ import annotations

import logging
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import expected_chunks, make_docs, write_jsonl
from pipeline_helpers import convert_config, output_rows, row_keys

from condlabel.config import load_convert_config
from condlabel.convert.pipeline import dry_run, run_conversion
from condlabel.runs.ledger import (
    LedgerEntry,
    completed_files,
    ledger_fingerprint,
    newest_entries,
    plan_rerun,
    read_ledger,
    write_ledger,
)
from condlabel.runs.runstate import (
    DoneIndex,
    hashed_keys,
    key_hash,
    latest_chunk_keys,
    read_output_state,
)
from condlabel.runs.summary import FileStats
from condlabel.storage import InputFile, expand_inputs

MAX_WORDS = 60


def config(inputs, output, *overrides):
    return convert_config(
        inputs, output, f"chunking.max_words={MAX_WORDS}", "output.rows_per_file=8", *overrides
    )


# --------------------------------------------------------------------------- no Ray


def test_fingerprint_follows_what_decides_chunks_and_labels():
    base = load_convert_config()
    fp = ledger_fingerprint(base, "labeler-a")
    assert (
        ledger_fingerprint(load_convert_config(overrides=["output.rows_per_file=7"]), "labeler-a")
        == fp
    )
    assert ledger_fingerprint(base, "labeler-b") != fp
    for changed in ("chunking.max_words=61", "input.text_field=body", "chunking.unit=sentence"):
        assert ledger_fingerprint(load_convert_config(overrides=[changed]), "labeler-a") != fp


def test_plan_skips_only_files_whose_newest_entry_matches():
    def entry(uri, size, version, fp="fp", seq=1, key=""):
        return LedgerEntry(
            uri, size, version, fp, documents=2, chunks=3, run_id=f"r{seq}", seq=seq, key=key
        )

    entries = [entry("a", 10, "v1"), entry("b", 10, "v1"), entry("c", 5, "v1")]
    entries.append(entry("d", 1, "v1", "old-fp"))
    # r: restored to its first version; its newest entry is the edited one.
    entries += [entry("r", 7, "v1", seq=1), entry("r", 8, "v2", seq=2)]
    # m: found under a new root (another URI), the same path under its input.
    entries.append(entry("old-root/m", 4, "v1", key="m"))
    newest = newest_entries(
        entries,
        [InputFile("a", 10, "v1"), InputFile("new-root/m", 4, "v1", "m")],
    )
    files = [
        InputFile("a", 10, "v1"),  # complete
        InputFile("b", 11, "v1"),  # grew
        InputFile("c", 5, "v2"),  # rewritten, same size
        InputFile("d", 1, "v1"),  # labeled under another fingerprint
        InputFile("e", 1, "v1"),  # new
        InputFile("a2", 10, ""),  # no version known: always read
        InputFile("r", 7, "v1"),  # matches an older entry only
        InputFile("new-root/m", 4, "v1", "m"),  # moved: complete
    ]
    plan = plan_rerun(files, newest, "fp")
    assert [e.uri for e in plan.complete] == ["a", "old-root/m"]
    assert [f.uri for f in plan.to_read] == ["b", "c", "d", "e", "a2", "r"]
    assert (plan.documents, plan.chunks) == (4, 6)


def test_a_file_is_complete_only_when_every_chunk_is_in_the_output():
    files = [InputFile(u, 1, "v") for u in ("all-done", "all-written", "one-failed", "unread")]
    stats = [
        FileStats("all-done", documents=2, chunks=4, skipped_done=4),
        FileStats("all-written", documents=1, chunks=3, skipped_done=1),
        FileStats("one-failed", documents=1, chunks=3, skipped_done=0),
    ]
    written = {"all-written": 2, "one-failed": 2}
    assert [f.uri for f, _ in completed_files(files, stats, written)] == ["all-done", "all-written"]


def test_ledger_round_trip_and_an_unreadable_file_is_skipped(tmp_path, caplog):
    cfg = load_convert_config(output=str(tmp_path / "out"))
    done = [(InputFile("s3://b/a.jsonl", 10, "etag:x"), FileStats("s3://b/a.jsonl", 2, 5, 5))]
    write_ledger(cfg.output.uri, "run-1", done, "fp", cfg.storage)
    (tmp_path / "out" / "_ledger" / "run-0.parquet").write_bytes(b"PAR1 not parquet PAR1")
    with caplog.at_level(logging.WARNING, logger="condlabel"):
        entries = read_ledger(cfg.output.uri, cfg.storage)
    assert entries == [LedgerEntry("s3://b/a.jsonl", 10, "etag:x", "fp", 2, 5, "run-1", 0, "{}")]
    assert "run-0.parquet" in caplog.text and "read again" in caplog.text


def test_vectorised_keys_match_the_scalar_key_and_keep_only_latest_versions():
    table = pa.table(
        {
            "doc_id": ["a", "a", "b", "a", "b"],
            "doc_hash": ["h1", "h1", "h2", "h9", "h2"],
            "chunk_index": pa.array([0, 1, 0, 0, 0], pa.int32()),
            "run_id": ["r1", "r1", "r1", "r2", "r3"],
        }
    )
    keys = hashed_keys(table)
    assert keys.column("key").to_pylist() == [
        key_hash(d, h, i)
        for d, h, i in zip(
            *(table.column(c).to_pylist() for c in ("doc_id", "doc_hash", "chunk_index")),
            strict=True,
        )
    ]
    latest, duplicates = latest_chunk_keys(keys)
    done = DoneIndex(latest)
    assert duplicates == 1  # (b, h2, 0) written twice
    assert done("a", "h9", 0) and done("b", "h2", 0)
    assert not done("a", "h1", 0) and not done("a", "h1", 1)  # an older version is not done
    assert list(latest) == sorted(latest) and latest.dtype == np.int64


# --------------------------------------------------------------------------- runs


@pytest.mark.usefixtures("ray_local")
def test_rerun_skips_complete_files_without_opening_them(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    docs = {name: make_docs(3, name) for name in ("a", "b", "c")}
    for name, d in docs.items():
        write_jsonl(inp / f"{name}.jsonl", d)
    first = run_conversion(config([inp], out))
    n = sum(expected_chunks(d, MAX_WORDS) for d in docs.values())
    assert first.rows_written == n and len(read_ledger(str(out), config([inp], out).storage)) == 3

    # Garbage of the same size and mtime: the listing cannot tell, so the file is not opened
    # (a run that opened it would reject its lines as invalid_json).
    b = inp / "b.jsonl"
    original, stat = b.read_bytes(), b.stat()
    b.write_bytes(b"x" * len(original))
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    rerun = run_conversion(config([inp], out))
    b.write_bytes(original)
    os.utime(b, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert rerun.files_skipped == 3 and rerun.rejected == {}
    assert rerun.rows_written == 0 and rerun.skipped_done == rerun.chunks == n
    assert rerun.documents == 9

    # A new file and a grown one are read; only their new chunks are labeled.
    more = make_docs(2, "d")
    write_jsonl(inp / "d.jsonl", more)
    grown = docs["a"] + make_docs(1, "a", start=3)
    write_jsonl(inp / "a.jsonl", grown)
    third = run_conversion(config([inp], out))
    assert third.files_skipped == 2  # b and c
    assert third.rows_written == expected_chunks(more + grown[3:], MAX_WORDS)
    table = output_rows(out)
    assert len(set(row_keys(table))) == table.num_rows == third.chunks
    assert run_conversion(config([inp], out)).files_skipped == 4


@pytest.mark.slow
@pytest.mark.usefixtures("ray_local")
def test_changing_labeler_or_chunking_invalidates_and_a_lost_ledger_is_rebuilt(tmp_path, caplog):
    inp, out = tmp_path / "in", tmp_path / "out"
    docs = make_docs(4, "a")
    write_jsonl(inp / "a.jsonl", docs)
    n = run_conversion(config([inp], out)).rows_written

    # Another labeler: every file is read again; its chunks are in the output (the done index
    # is keyed by content, not labeler), so nothing is labeled, and the file is recorded anew.
    other = run_conversion(config([inp], out, "labeler.keyphrase.num_tags=3"), allow_mixed=True)
    assert other.files_skipped == 0 and other.skipped_done == n and other.rows_written == 0
    again = run_conversion(config([inp], out, "labeler.keyphrase.num_tags=3"), allow_mixed=True)
    assert again.files_skipped == 1

    # Other chunking: new chunks, all labeled.
    rechunked = run_conversion(config([inp], out, "chunking.max_words=30"))
    assert rechunked.files_skipped == 0
    assert rechunked.rows_written == expected_chunks(docs, 30)

    # A lost ledger: every file is read, found done, and recorded again.
    rechunked_cfg = config([inp], out, "chunking.max_words=30")
    shutil.rmtree(out / "_ledger")
    rebuilt = run_conversion(rechunked_cfg)
    assert rebuilt.files_skipped == 0 and rebuilt.rows_written == 0
    assert rebuilt.skipped_done == expected_chunks(docs, 30)
    assert run_conversion(rechunked_cfg).files_skipped == 1
    off = config([inp], out, "chunking.max_words=30", "output.done_check=full")
    assert run_conversion(off).files_skipped == 0

    # A ledger that disagrees with the output (a shard deleted by hand) is not trusted: the
    # run reads every file and labels what the deleted shard held.
    assert run_conversion(rechunked_cfg).files_skipped == 1
    shard = next(
        p
        for p in sorted(out.glob("part-*.parquet"))
        if pq.read_table(p, columns=["run_id"])["run_id"][0].as_py() == rechunked.run_id
    )
    lost = pq.read_metadata(shard).num_rows
    shard.unlink()
    with caplog.at_level(logging.WARNING, logger="condlabel"):
        repaired = run_conversion(rechunked_cfg)
    assert "ledger disagrees" in caplog.text
    assert repaired.files_skipped == 0 and repaired.rows_written == lost


@pytest.mark.usefixtures("ray_local")
def test_dry_run_shows_ledger_files_without_reading_them(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    write_jsonl(inp / "a.jsonl", make_docs(3, "a"))
    run_conversion(config([inp], out))
    write_jsonl(inp / "b.jsonl", make_docs(2, "b"))
    plan = dry_run(config([inp], out))
    by_name = {os.path.basename(f["uri"]): f for f in plan["files"]}
    assert by_name["a.jsonl"]["ledger"] is True and by_name["a.jsonl"]["to_label"] == 0
    assert by_name["b.jsonl"]["to_label"] == expected_chunks(make_docs(2, "b"), MAX_WORDS)


@pytest.mark.usefixtures("ray_local")
def test_done_check_in_ray_tasks_equals_the_driver_scan(tmp_path):
    from condlabel.runs.donecheck import scan_output

    inp, out = tmp_path / "in", tmp_path / "out"
    docs = make_docs(12, "v")
    write_jsonl(inp / "a.jsonl", docs)
    cfg = config([inp], out, "output.rows_per_file=3")
    run_conversion(cfg)
    docs[1] = dict(docs[1], text="A new text about tides, harbours and the moon pulling water.")
    write_jsonl(inp / "a.jsonl", docs)
    run_conversion(cfg)

    driver = read_output_state(str(out), cfg.storage)
    tasks = scan_output(str(out), cfg.storage, shards_per_task=2)  # several partitions
    assert len(tasks.done.refs) > 1
    assert (tasks.rows, tasks.labelers, tasks.duplicate_keys) == (
        driver.rows,
        driver.labelers,
        driver.duplicate_keys,
    )
    assert len(tasks.done) == len(driver.done) == expected_chunks(docs, MAX_WORDS)
    rows = output_rows(out).to_pylist()
    for r in rows:
        key = (r["doc_id"], r["doc_hash"], r["chunk_index"])
        assert tasks.done(*key) == driver.done(*key)
    assert any(not driver.done(r["doc_id"], r["doc_hash"], r["chunk_index"]) for r in rows)


@pytest.mark.usefixtures("ray_local")
def test_ledger_on_s3_follows_the_etag(s3_bucket, s3fs_client, tmp_path):
    from pipeline_helpers import jsonl_bytes

    docs = make_docs(4, "s")
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(docs))
    cfg = config([f"s3://{s3_bucket}/in/"], f"s3://{s3_bucket}/out")
    [listed] = expand_inputs(cfg.input.paths, cfg.storage)
    assert listed.version.startswith("etag:")
    n = run_conversion(cfg).rows_written
    assert run_conversion(cfg).files_skipped == 1

    # Same size, other bytes: the ETag changes, the file is read, its changed document labeled.
    changed = [dict(docs[0], text=docs[0]["text"].upper())] + docs[1:]
    assert len(jsonl_bytes(changed)) == len(jsonl_bytes(docs))
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(changed))
    rerun = run_conversion(cfg)
    assert rerun.files_skipped == 0
    assert rerun.rows_written == expected_chunks(changed[:1], MAX_WORDS)
    assert rerun.skipped_done == n - rerun.rows_written
