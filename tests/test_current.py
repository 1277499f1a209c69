"""What a reader gets is what the inputs hold now: restores, moved prefixes, slow clocks, ids
repeated across files, copies of an edited original and killed runs, each a conversion on the
session's local Ray, read back with `read_tagged` and with the SQL rule readers outside
condlabel apply (DuckDB)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_config
from test_readme_current_rows import CHILD, SHARDS_IN_README, readme_sql

from condlabel.config import ChunkConfig
from condlabel.convert.chunking import doc_version
from condlabel.convert.pipeline import run_conversion
from condlabel.readback import read_tagged
from condlabel.runs.runstate import status_info, write_manifest

pytestmark = pytest.mark.usefixtures("ray_local")

MAX_WORDS = 50


def convert(inputs, out, *overrides, run_id=None):
    cfg = convert_config(
        inputs, out, f"chunking.max_words={MAX_WORDS}", "output.rows_per_file=8", *overrides
    )
    return run_conversion(cfg, run_id=run_id)


def expected_versions(*files) -> dict[str, str]:
    """doc_id -> doc_hash of what the input files hold now (first occurrence of an id wins,
    files in URI order, as the one-document-per-id rule decides)."""
    versions: dict[str, str] = {}
    for path in sorted(str(f) for f in files):
        for line in Path(path).read_text().splitlines():
            doc = json.loads(line)
            versions.setdefault(
                doc["id"], doc_version(doc["text"], ChunkConfig(max_words=MAX_WORDS))
            )
    return versions


def served(out) -> pa.Table:
    return read_tagged(str(out), columns=["doc_id", "chunk_index", "doc_hash", "text"])


def served_versions(out) -> dict[str, str]:
    table = served(out)
    return dict(
        zip(table.column("doc_id").to_pylist(), table.column("doc_hash").to_pylist(), strict=True)
    )


def assert_sql_agrees(out) -> None:
    """The README's rule, run by DuckDB over the shards (in a fresh interpreter, as the README
    test does), returns exactly read_tagged's rows."""
    sql = readme_sql().replace(SHARDS_IN_README, f"{out}/part-*.parquet")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD], input=sql, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    got = sorted(tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1]))
    table = read_tagged(str(out), columns=["doc_id", "doc_hash", "chunk_index", "text"])
    want = sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert got == want


def edit(path, index: int, prefix: str, n: int, bump_s: float = 10.0):
    docs = make_docs(n, prefix)
    docs[index]["text"] = "An edited opening paragraph, rewritten.\n\n" + docs[index]["text"]
    write_jsonl(path, docs)
    later = time.time() + bump_s  # a new mtime, whatever the clock's resolution
    os.utime(path, (later, later))


def test_a_file_restored_to_an_earlier_version_serves_the_restored_text(tmp_path):
    a = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(4, "a"))
    b = write_jsonl(tmp_path / "in" / "b.jsonl", make_docs(3, "b"))
    out = tmp_path / "out"
    convert([tmp_path / "in"], out)
    saved = tmp_path / "a.saved"
    shutil.copy2(a, saved)  # `cp -p`: bytes and modification time
    edit(a, 0, "a", 4)
    convert([tmp_path / "in"], out)
    assert served_versions(out) == expected_versions(a, b)
    shutil.copy2(saved, a)  # restored, with its old modification time
    summary = convert([tmp_path / "in"], out)
    assert summary.files_skipped == 1  # b only: a's newest ledger entry is the edited one
    assert served_versions(out) == expected_versions(a, b)
    assert_sql_agrees(out)


def test_a_moved_input_prefix_relabels_nothing(tmp_path):
    src = tmp_path / "in"
    write_jsonl(src / "a.jsonl", make_docs(4, "a"))
    write_jsonl(src / "sub" / "b.jsonl", make_docs(3, "b"))
    out = tmp_path / "out"
    first = convert([src], out)
    moved = tmp_path / "moved"
    shutil.copytree(src, moved, copy_function=shutil.copy)  # new paths, new mtimes
    later = time.time() + 10
    for f in moved.rglob("*.jsonl"):
        os.utime(f, (later, later))
    again = convert([moved], out)
    assert again.rows_written == 0
    assert again.skipped_done == first.rows_written
    assert read_tagged(str(out), latest_only=False).num_rows == first.rows_written


def test_an_output_whose_files_are_all_unknown_gets_the_full_check(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(4, "a"))
    out = tmp_path / "out"
    first = convert([tmp_path / "in"], out)
    renamed = write_jsonl(tmp_path / "other" / "renamed.jsonl", make_docs(4, "a"))
    again = convert([renamed], out)
    assert again.rows_written == 0 and again.skipped_done == first.rows_written


def test_a_slow_driver_clock_cannot_make_old_text_current(tmp_path):
    a = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(4, "a"))
    out = tmp_path / "out"
    convert([tmp_path / "in"], out)
    edit(a, 1, "a", 4)
    # A driver an hour (here: decades) behind: its run id sorts before every earlier one.
    convert([tmp_path / "in"], out, run_id="19990101T000000.000000Z-slow01")
    assert served_versions(out) == expected_versions(a)
    assert_sql_agrees(out)


def test_under_full_the_served_text_is_a_function_of_the_inputs(tmp_path):
    src = tmp_path / "in"
    b = write_jsonl(src / "b.jsonl", make_docs(3, "b"))
    out = tmp_path / "out"
    convert([src], out, "output.done_check=full")
    clash = make_docs(1, "z")
    clash[0]["id"] = "b-1"  # the same id as a document of b.jsonl, another text
    z = write_jsonl(src / "z.jsonl", clash)
    want = expected_versions(b, z)  # b.jsonl comes first: its text is the document
    convert([src], out, "output.done_check=full")
    assert served_versions(out) == want
    shutil.rmtree(out / "_ledger")
    convert([src], out, "output.done_check=full")
    assert served_versions(out) == want
    later = time.time() + 20
    os.utime(b, (later, later))
    convert([src], out, "output.done_check=full")
    assert served_versions(out) == want
    assert_sql_agrees(out)


def test_copies_name_an_existing_row_and_share_its_text_key(tmp_path):
    shared = "A paragraph that many pages syndicate word for word, about harbour cranes."
    docs = [{"id": f"c{i}", "text": shared} for i in range(4)]
    src = write_jsonl(tmp_path / "in" / "a.jsonl", docs)
    out = tmp_path / "out"
    convert([src], out, "dedup.enabled=true")
    docs[0]["text"] = "The original was edited: " + shared
    write_jsonl(src, docs)
    later = time.time() + 10
    os.utime(src, (later, later))
    convert([src], out, "dedup.enabled=true")
    history = read_tagged(str(out), latest_only=False).to_pylist()
    rows = {f"{r['doc_id']}#{r['chunk_index']}@{r['doc_hash']}": r for r in history}
    copies = [r for r in read_tagged(str(out)).to_pylist() if r["copied_from"]]
    assert len(copies) == 3
    for copy in copies:
        original = rows[copy["copied_from"]]  # names a row that exists, its version included
        assert original["text_key"] == copy["text_key"]
        assert original["text"] == copy["text"]
    assert len({r["text_key"] for r in read_tagged(str(out)).to_pylist()}) == 2


def test_rows_carry_the_run_seq_in_order(tmp_path):
    a = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(2, "a"))
    out = tmp_path / "out"
    convert([a], out)
    write_jsonl(tmp_path / "in" / "b.jsonl", make_docs(2, "b"))
    convert([tmp_path / "in"], out)
    rows = read_tagged(str(out), columns=["doc_id", "seq"]).to_pylist()
    assert {r["seq"] for r in rows if r["doc_id"].startswith("a")} == {1}
    assert {r["seq"] for r in rows if r["doc_id"].startswith("b")} == {2}
    # Bookkeeping lost: the shard names still carry the seq, the next run's is larger.
    shutil.rmtree(out / "_manifest")
    shutil.rmtree(out / "_ledger")
    edit(a, 0, "a", 2)
    summary = convert([tmp_path / "in"], out)
    assert summary.seq == 3


def test_status_marks_a_run_that_never_finished_as_killed(tmp_path):
    a = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(2, "a"))
    out = tmp_path / "out"
    convert([a], out)
    # What a run killed mid-way leaves: its manifest says running, and no lease of its own.
    write_manifest(
        str(out),
        "20990101T000000.000000Z-dead00",
        {"run_id": "20990101T000000.000000Z-dead00", "status": "running"},
        None,
    )
    runs = {r["run_id"]: r["status"] for r in status_info(str(out), None)["runs"]}
    assert runs["20990101T000000.000000Z-dead00"] == "killed"
    assert sorted(runs.values()) == ["killed", "succeeded"]


def test_inputs_rewritten_with_the_same_bytes_start_no_labeler(tmp_path, caplog):
    src = tmp_path / "in"
    write_jsonl(src / "a.jsonl", make_docs(3, "a"))
    write_jsonl(src / "b.jsonl", make_docs(2, "b"))
    out = tmp_path / "out"
    first = convert([src], out)
    later = time.time() + 10  # a nightly export: the same bytes, new modification times
    for f in src.glob("*.jsonl"):
        f.write_bytes(f.read_bytes())
        os.utime(f, (later, later))
    with caplog.at_level("INFO", logger="condlabel"):
        again = convert([src], out)
    assert again.rows_written == 0 and again.skipped_done == first.rows_written
    assert again.labeler_actors == 0
    assert "no labeler started" in caplog.text
    assert convert([src], out).files_skipped == 2  # the read files were recorded complete


def test_an_output_of_the_previous_release_upgrades_once(tmp_path):
    """Shards without seq/text_key, a ledger keyed by URIs that no longer exist: the first
    rerun checks everything and labels nothing, the second skips every file."""
    fixture = Path(__file__).parent / "fixtures" / "previous_release"
    src, out = tmp_path / "in", tmp_path / "out"
    shutil.copytree(fixture / "in", src)
    shutil.copytree(fixture / "out", out)
    before = served(out)
    first = run_conversion(
        convert_config([src], out, "chunking.max_words=50", "output.rows_per_file=8")
    )
    assert first.rows_written == 0 and first.skipped_done == before.num_rows
    assert first.seq == 1  # older rows count as seq 0
    assert sorted(served(out).to_pylist(), key=str) == sorted(before.to_pylist(), key=str)
    second = run_conversion(
        convert_config([src], out, "chunking.max_words=50", "output.rows_per_file=8")
    )
    assert second.files_skipped == 2 and second.rows_written == 0 and second.seq == 2
    docs = make_docs(3, "a")
    docs[0]["text"] = "Edited after the upgrade.\n\n" + docs[0]["text"]
    write_jsonl(src / "a.jsonl", docs)
    later = time.time() + 10
    os.utime(src / "a.jsonl", (later, later))
    run_conversion(convert_config([src], out, "chunking.max_words=50", "output.rows_per_file=8"))
    assert served_versions(out)["a-0"] == expected_versions(src / "a.jsonl")["a-0"]
    assert_sql_agrees(out)


def test_on_s3_a_restored_object_and_a_moved_prefix(s3_bucket, s3fs_client):
    """S3 versions are ETags: re-uploading earlier bytes gives the earlier ETag (no timestamp
    trick needed), and a copied prefix keeps every ETag."""
    from pipeline_helpers import jsonl_bytes

    original = make_docs(3, "a")
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(original))
    s3fs_client.pipe(f"{s3_bucket}/in/b.jsonl", jsonl_bytes(make_docs(2, "b")))
    out = f"s3://{s3_bucket}/out"
    first = convert([f"s3://{s3_bucket}/in/"], out)
    edited = [dict(d) for d in original]
    edited[0]["text"] = "Edited on the bucket.\n\n" + edited[0]["text"]
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(edited))
    convert([f"s3://{s3_bucket}/in/"], out)
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(original))  # restored
    convert([f"s3://{s3_bucket}/in/"], out)
    want = doc_version(original[0]["text"], ChunkConfig(max_words=MAX_WORDS))
    assert served_versions(out)["a-0"] == want
    # The prefix copied elsewhere in the bucket: same paths under the input, same ETags.
    for name in ("a.jsonl", "b.jsonl"):
        s3fs_client.copy(f"{s3_bucket}/in/{name}", f"{s3_bucket}/moved/{name}")
    moved = convert([f"s3://{s3_bucket}/moved/"], out)
    assert moved.rows_written == 0 and moved.files_skipped == 2
    assert read_tagged(out, latest_only=False).num_rows < 3 * first.rows_written
