"""The done check's scope (`condlabel.runs.scope`): a rerun reads no shard for files no run
started, only the shards written since for files an earlier run started, and the whole output
when it cannot know. Unit tests need no Ray; the runs use the session's local Ray."""

from __future__ import annotations

import json
import shutil
import time
from datetime import datetime, timezone

import pytest
from helpers import expected_chunks, make_docs, write_jsonl
from pipeline_helpers import convert_config, output_rows, row_keys

from condlabel.convert.pipeline import run_conversion
from condlabel.runs.runstate import status_info
from condlabel.runs.scope import (
    CLOCK_MARGIN_S,
    Started,
    listing_time,
    plan_scope,
    read_started,
)
from condlabel.storage import InputFile

MAX_WORDS = 60


def config(inputs, output, *overrides):
    return convert_config(
        inputs, output, f"chunking.max_words={MAX_WORDS}", "output.rows_per_file=8", *overrides
    )


def _file(uri: str) -> InputFile:
    return InputFile(uri, 10, "mtime:1")


def _shard_keys_once(out) -> tuple[int, int]:
    """(rows, distinct chunk keys) of the output."""
    table = output_rows(out)
    return table.num_rows, len(set(row_keys(table)))


# --------------------------------------------------------------------------- no Ray


def test_scope_reads_no_shard_for_new_files_and_only_later_shards_for_started_ones():
    records = [
        Started("r1", 100.0, frozenset({"a", "b"}), "lab"),
        Started("r2", 200.0, frozenset({"c"}), "lab"),
        Started("r3", 300.0, frozenset({"c"}), ""),  # wrote nothing: its labeler holds no row
    ]
    shards = [("s1", 101.0), ("s2", 150.0), ("s3", 201.0), ("s4", 260.0)]
    # n is new beside a known file (a): none of n's chunks can be in the output.
    new = plan_scope([_file("n")], records, shards, ["r1", "r2"], [_file("n"), _file("a")])
    assert new.shards == [] and new.mode == "scoped" and new.labelers == {"lab": 3}
    # No input file known at all while the output holds shards (a moved or renamed input
    # root): the full check, not a relabel of everything.
    moved = plan_scope([_file("n")], records, shards, ["r1", "r2"])
    assert moved.shards is None and "no input file is known" in moved.reason
    # c was started by r2 (at 200): shards since then, less the clock margin.
    partial = plan_scope([_file("n"), _file("c")], records, shards, ["r1"])
    assert partial.shards == ["s3", "s4"] and partial.started_files == 1
    assert plan_scope([_file("a")], records, shards, []).shards == ["s1", "s2", "s3", "s4"]
    # Nothing in the output: nothing to read, whatever the records say.
    assert plan_scope([_file("a")], [], [], ["r9"]).shards == []


@pytest.mark.parametrize(
    ("records", "shards", "runs", "why"),
    [
        ([], [("s1", 5.0)], [], "no started record"),
        ([Started("r1", 100.0, None)], [("s1", 101.0)], [], "cannot be read"),
        ([Started("r1", 100.0, frozenset())], [("s1", 101.0)], ["r0", "r1"], "r0 has a manifest"),
        ([Started("r1", 100.0, frozenset())], [("s1", 90.0)], [], "older than the first"),
        ([Started("r1", 100.0, frozenset())], [("s1", None)], [], "no time"),
    ],
)
def test_scope_falls_back_to_the_whole_output_when_it_cannot_know(records, shards, runs, why):
    scope = plan_scope([_file("n")], records, shards, runs)
    assert scope.shards is None and scope.mode == "full" and why in scope.reason


def test_listing_time_reads_local_s3_and_gcs_entries():
    when = datetime(2026, 12, 2, 3, 0, tzinfo=timezone.utc)
    assert listing_time({"mtime": 12.5}) == 12.5
    assert listing_time({"LastModified": when}) == when.timestamp()
    assert listing_time({"updated": "2026-12-02T03:00:00Z"}) == when.timestamp()
    assert listing_time({"size": 3}) is None


# --------------------------------------------------------------------------- runs


@pytest.mark.usefixtures("ray_local")
def test_rerun_cost_follows_new_and_partial_files_and_a_lost_ledger_reads_everything(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    docs = {n: make_docs(3, n) for n in ("a", "b")}
    for n, d in docs.items():
        write_jsonl(inp / f"{n}.jsonl", d)
    first = run_conversion(config([inp], out))
    assert first.shards_scanned == 0 and first.shards_written >= 2

    # A new file: no earlier run started it, so no shard is read.
    docs["c"] = make_docs(2, "c")
    write_jsonl(inp / "c.jsonl", docs["c"])
    new = run_conversion(config([inp], out))
    assert new.shards_scanned == 0 and new.files_skipped == 2
    assert new.rows_written == expected_chunks(docs["c"], MAX_WORDS)
    manifest = json.loads((out / "_manifest" / f"{new.run_id}.json").read_text())
    assert manifest["output_before"]["scope"] == "scoped"
    assert manifest["counts"]["shards_scanned"] == 0

    # A partial file, as a killed run leaves it: its started record and some of its shards,
    # no ledger entry. The rerun reads only the shards written since that run started.
    docs["d"] = make_docs(4, "d")
    write_jsonl(inp / "d.jsonl", docs["d"][:2])
    time.sleep(CLOCK_MARGIN_S)  # so that the earlier shards fall outside the margin
    killed = run_conversion(config([inp / "d.jsonl"], out))
    (out / "_ledger" / f"{killed.run_id}.parquet").unlink()
    write_jsonl(inp / "d.jsonl", docs["d"])
    resumed = run_conversion(config([inp], out))
    assert resumed.shards_scanned == killed.shards_written
    assert resumed.rows_written == expected_chunks(docs["d"][2:], MAX_WORDS)
    total = sum(expected_chunks(d, MAX_WORDS) for d in docs.values())
    assert _shard_keys_once(out) == (total, total)

    # No ledger at all: the whole output is read, and the rerun is still exactly once.
    shutil.rmtree(out / "_ledger")
    docs["e"] = make_docs(2, "e")
    write_jsonl(inp / "e.jsonl", docs["e"])
    lost = run_conversion(config([inp], out))
    shards = len(list(out.glob("part-*.parquet")))
    assert lost.shards_scanned == shards - lost.shards_written and lost.files_skipped == 0
    assert lost.rows_written == expected_chunks(docs["e"], MAX_WORDS)
    total += lost.rows_written
    assert _shard_keys_once(out) == (total, total)
    assert {r.run_id for r in read_started(str(out), config([inp], out).storage)} == {lost.run_id}


@pytest.mark.usefixtures("ray_local")
def test_a_document_repeated_in_a_new_file_is_skipped_by_the_full_check_only(tmp_path):
    inp, out = tmp_path / "in", tmp_path / "out"
    a = make_docs(3, "a")
    write_jsonl(inp / "a.jsonl", a)
    run_conversion(config([inp], out))
    copy = expected_chunks(a[:1], MAX_WORDS)

    write_jsonl(inp / "b.jsonl", a[:1] + make_docs(1, "b"))
    full = run_conversion(config([inp], out, "output.done_check=full"))
    # `full` reads every file: a.jsonl's a-0 is the document, b.jsonl's copy a later
    # occurrence of its id with the same text (kept in _rejects/, labeled once).
    assert full.shards_scanned > 0 and full.skipped_done == expected_chunks(a, MAX_WORDS)
    assert full.rejected == {"duplicate_text": 1}
    assert full.rows_written == expected_chunks(make_docs(1, "b"), MAX_WORDS)

    # `auto`: the new file's copy is labeled again; readers keep one row, status counts it.
    write_jsonl(inp / "c.jsonl", a[:1])
    auto = run_conversion(config([inp], out))
    assert auto.shards_scanned == 0 and auto.rows_written == copy
    totals = status_info(str(out), config([inp], out).storage)["totals"]
    assert totals["duplicate_keys"] == copy
    rows, keys = _shard_keys_once(out)
    assert rows == keys + copy


@pytest.mark.usefixtures("ray_local")
def test_new_files_on_s3_read_no_shard(s3_bucket, s3fs_client):
    from pipeline_helpers import jsonl_bytes

    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(make_docs(3, "a")))
    cfg = config([f"s3://{s3_bucket}/in/"], f"s3://{s3_bucket}/out")
    first = run_conversion(cfg)
    more = make_docs(2, "b")
    s3fs_client.pipe(f"{s3_bucket}/in/b.jsonl", jsonl_bytes(more))
    rerun = run_conversion(cfg)
    assert rerun.shards_scanned == 0 and rerun.files_skipped == 1
    assert rerun.rows_written == expected_chunks(more, MAX_WORDS)
    [record] = [r for r in read_started(cfg.output.uri, cfg.storage) if r.run_id == rerun.run_id]
    assert record.uris == {"b.jsonl"}  # the path under its input: a moved prefix is the same
    # The first run's record dates it before its shards, on the server's clock.
    [mine] = [r for r in read_started(cfg.output.uri, cfg.storage) if r.run_id == first.run_id]
    shard_times = [
        listing_time(info)
        for path, info in s3fs_client.find(f"{s3_bucket}/out", detail=True).items()
        if path.endswith(".parquet") and "/_" not in path
    ]
    assert shard_times and all(t is not None and t >= mine.since for t in shard_times)
