"""Runs under misuse and faults (issue 12, items 1, 3, 13, 15, 16): duplicate ids, an output
inside its input, a stray file under the output, a labeler that fails on some chunks, Ray's
listening sockets and many small input files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import expected_chunks, make_docs, write_jsonl
from hostile_backends import POISON, poisoned
from pipeline_helpers import convert_args, convert_config, output_rows

from condlabel import read_tagged
from condlabel.cli import main
from condlabel.config import StorageConfig
from condlabel.convert import graph_steps
from condlabel.convert.duplicates import Duplicate, find_duplicates
from condlabel.convert.inputs import read_tasks
from condlabel.convert.pipeline import run_conversion
from condlabel.runs.runstate import read_manifests, status_info
from condlabel.runs.summary import LabelingFailed
from condlabel.storage import InputFile

# --- item 15: an embedded Ray listens on the loopback interface only --------------------------

_LISTENERS = textwrap.dedent(
    """
    import json, psutil, ray
    from condlabel.ray_runtime import ray_session

    with ray_session(num_cpus=1, worker_logs=False):
        ray.get(ray.remote(lambda: 1).remote())  # a worker process, listening too
        tree = {p.pid: p.name() for p in psutil.Process().children(recursive=True)}
        tree[psutil.Process().pid] = "driver"
        print(json.dumps([
            [tree[c.pid], c.laddr.ip, c.laddr.port]
            for c in psutil.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.pid in tree
        ]))
    """
)
pytestmark = pytest.mark.usefixtures("ray_local")
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def test_an_embedded_ray_listens_on_loopback_only():
    done = subprocess.run(
        [sys.executable, "-c", _LISTENERS], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    listeners = json.loads(done.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in listeners}
    assert {"gcs_server", "raylet"} <= names, listeners
    exposed = [entry for entry in listeners if entry[1] not in LOOPBACK]
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"


# --- item 1: one document per id in a run, and reruns converge --------------------------------


def _rejects(out, run_id: str) -> list[dict]:
    return pq.read_table(out / "_rejects" / run_id).to_pylist()


@pytest.mark.parametrize("key_pass_bytes", [0, 2**20], ids=["key-pass-in-tasks", "in-driver"])
def test_later_occurrences_of_an_id_are_rejects_and_reruns_add_nothing(
    tmp_path, key_pass_bytes, monkeypatch
):
    monkeypatch.setattr(graph_steps, "KEY_PASS_DRIVER_BYTES", key_pass_bytes)
    good = make_docs(3, "good")
    (tmp_path / "in").mkdir()
    # Sorted input order: a.jsonl before b.jsonl, so a's occurrences come first.
    write_jsonl(
        tmp_path / "in" / "a.jsonl",
        [
            {"id": 7, "text": "The first text under id seven, about harbours and tides."},
            {"id": "7", "text": "Another text under the same id, about mountain passes."},
            {"id": "x", "text": "A record given twice, about lighthouses."},
            {"id": "x", "text": "A record given twice, about lighthouses."},
            *good,
        ],
    )
    write_jsonl(
        tmp_path / "in" / "b.jsonl",
        [{"id": "7", "text": "A third text for seven, in another file, about deserts."}],
    )
    out = tmp_path / "out"
    cfg = convert_config([tmp_path / "in"], out)
    runs = [run_conversion(cfg) for _ in range(3)]

    assert runs[0].rows_written == 2 + len(good)
    assert runs[0].rejected == {"duplicate_id": 2, "duplicate_text": 1}
    assert [r.rows_written for r in runs[1:]] == [0, 0]
    assert all(r.rejected == runs[0].rejected for r in runs[1:])
    rows = read_tagged(str(out))
    assert rows.num_rows == output_rows(out).num_rows == 2 + len(good)
    [seven] = [r for r in rows.to_pylist() if r["doc_id"] == "7"]
    assert "harbours" in seven["text"]
    status = status_info(str(out), StorageConfig())
    assert status["totals"]["duplicate_keys"] == 0
    assert status["totals"]["latest_chunks"] == rows.num_rows

    stored = _rejects(out, runs[0].run_id)
    by_reason = sorted((r["reason"], r["source"].rsplit("/", 1)[-1], r["position"]) for r in stored)
    assert by_reason == [
        ("duplicate_id", "a.jsonl", 2),
        ("duplicate_id", "b.jsonl", 1),
        ("duplicate_text", "a.jsonl", 4),
    ]
    kept = {r["position"]: json.loads(r["raw"]) for r in stored if r["source"].endswith("a.jsonl")}
    assert "mountain passes" in kept[2]["text"] and kept[2]["id"] == "7"
    assert all("a.jsonl line/row 1" in r["detail"] for r in stored if r["reason"] == "duplicate_id")


def test_find_duplicates_keeps_the_first_occurrence_in_input_order():
    keys = {
        "file": np.array([1, 0, 0, 1]),
        "position": np.array([1, 5, 2, 3]),
        "id_high": np.array([9, 9, 9, 4]),
        "id_low": np.array([1, 1, 1, 2]),
        "text": np.array([10, 11, 10, 12]),
    }
    found = find_duplicates(keys, ["a", "b"])
    assert found == {
        "a": {5: Duplicate("duplicate_id", "a", 2)},
        "b": {1: Duplicate("duplicate_text", "a", 2)},
    }


# --- item 3: the output never feeds the input ---------------------------------------------------


def test_an_output_inside_its_input_is_refused_before_any_work(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    write_jsonl(corpus / "a.jsonl", make_docs(2, "a"))
    for output in (corpus / "tagged", corpus):
        assert main(convert_args([corpus], output)) == 2
        err = capsys.readouterr().err
        assert str(corpus) in err and str(output) in err and "overlaps" in err
    assert main(convert_args([tmp_path / "out" / "a.jsonl"], tmp_path / "out")) == 2
    assert not (corpus / "tagged").exists() and not (tmp_path / "out").exists()


def test_bookkeeping_and_condlabel_shards_are_never_input(tmp_path, caplog):
    corpus = tmp_path / "corpus"
    docs = make_docs(3, "a")
    write_jsonl(corpus / "a.jsonl", docs)
    write_jsonl(corpus / "_notes.jsonl", make_docs(1, "hidden"))
    first = tmp_path / "first"
    run_conversion(convert_config([corpus / "a.jsonl"], first))
    # An earlier output copied into the corpus: its shards hold a `text` column too.
    shutil.copytree(first, corpus / "old-output")
    with caplog.at_level("WARNING", logger="condlabel"):
        summary = run_conversion(convert_config([corpus, f"{corpus}/*.jsonl"], tmp_path / "out"))
    assert summary.documents == len(docs) and summary.input_files == 1, summary.lines()
    skipped = " ".join(r.getMessage() for r in caplog.records)
    assert "_notes.jsonl skipped" in skipped and "a shard of a condlabel output" in skipped


def test_a_stray_file_under_the_output_is_skipped_with_a_warning(tmp_path, caplog, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(3, "a"))
    out = tmp_path / "out"
    first = run_conversion(convert_config([src], out))
    (out / "notes.txt").write_text("someone's notes, not a shard")
    with caplog.at_level("WARNING", logger="condlabel"):
        again = run_conversion(convert_config([src], out))
        assert main(["inspect", str(out), "--json"]) == 0
    assert again.rows_written == 0 and again.skipped_done == first.rows_written
    assert json.loads(capsys.readouterr().out)["rows"] == first.rows_written
    assert any("notes.txt skipped" in r.getMessage() for r in caplog.records)


# --- item 13: a chunk the labeler fails on is a reject, not the end of the run ------------------


def test_chunks_a_labeler_fails_on_are_retried_alone_then_rejected(tmp_path):
    docs = make_docs(10, "ok")
    bad = [{"id": f"bad{i}", "text": f"A {POISON} text number {i}."} for i in range(2)]
    src = write_jsonl(tmp_path / "a.jsonl", docs[:5] + bad + docs[5:])
    out = tmp_path / "out"
    summary = run_conversion(poisoned(convert_config([src], out)))
    assert summary.status == "succeeded"
    assert summary.rows_written == expected_chunks(docs, 2000)
    assert summary.rejected == {"labeler_error": 2}
    stored = _rejects(out, summary.run_id)
    assert sorted(r["raw"].decode() for r in stored) == sorted(d["text"] for d in bad)
    assert all(r["reason"] == "labeler_error" and "ValueError" in r["detail"] for r in stored)
    assert {r["position"] for r in stored} == {6, 7}


def test_a_run_where_most_chunks_fail_still_fails(tmp_path):
    bad = [{"id": f"bad{i}", "text": f"A {POISON} text number {i}."} for i in range(5)]
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(2, "ok") + bad)
    with pytest.raises(LabelingFailed, match="5 of 7 chunks failed"):
        run_conversion(poisoned(convert_config([src], tmp_path / "out")))
    [manifest] = read_manifests(str(tmp_path / "out"), StorageConfig())
    assert manifest["status"] == "failed"


# --- item 16: many small files share read tasks -----------------------------------------------


def test_small_files_are_grouped_into_read_tasks_by_size():
    files = [InputFile(f"f{i:03d}", 100) for i in range(100)] + [InputFile("big", 10**9)]
    groups = read_tasks(files, bytes_per_task=1000)
    assert [f for g in groups for f in g] == files
    assert len(groups) == 11 and groups[-1] == [InputFile("big", 10**9)]
    assert all(sum(f.size for f in g) <= 1000 for g in groups[:-1])
    # A small input is still spread over a few tasks, for parallel readers.
    assert 8 <= len(read_tasks(files[:100], bytes_per_task=10**9)) <= 9


def test_grouped_files_keep_their_own_stats_and_rejects(tmp_path):
    inp = tmp_path / "in"
    docs = make_docs(40, "s")
    for i, doc in enumerate(docs):
        write_jsonl(inp / f"doc-{i:03d}.jsonl", [doc])
    (inp / "doc-bad.jsonl").write_text('{"id": "broken", "text": \n')
    summary = run_conversion(convert_config([inp], tmp_path / "out"))
    assert summary.input_files == 41 and summary.documents == 40
    assert summary.rows_written == expected_chunks(docs, 2000)
    assert summary.rejected == {"invalid_json": 1}
    [stored] = _rejects(tmp_path / "out", summary.run_id)
    assert stored["source"].endswith("doc-bad.jsonl")
