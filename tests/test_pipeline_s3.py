"""The whole conversion on a local Ray against the S3 server process."""

from __future__ import annotations

import gzip
import io
import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import expected_chunks, make_docs
from pipeline_helpers import (
    FREQUENT_PROGRESS,
    convert_args,
    convert_config,
    jsonl_bytes,
    output_rows,
    row_keys,
)

from condlabel.cli import main
from condlabel.schema import OUTPUT_SCHEMA

pytestmark = pytest.mark.usefixtures("ray_local")


def upload_corpus(fs, bucket: str) -> list[dict]:
    a, b, c = make_docs(6, "jsonl"), make_docs(5, "gz"), make_docs(4, "pq")
    fs.pipe(f"{bucket}/in/a.jsonl", jsonl_bytes(a))
    fs.pipe(f"{bucket}/in/sub/b.jsonl.gz", gzip.compress(jsonl_bytes(b)))
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(c), sink)
    fs.pipe(f"{bucket}/in/c.parquet", sink.getvalue())
    fs.pipe(f"{bucket}/in/_ignored/bookkeeping.jsonl", b'{"text": "never read"}\n')
    return a + b + c


def test_convert_from_s3_to_s3(s3_bucket, s3fs_client, capsys):
    docs = upload_corpus(s3fs_client, s3_bucket)
    out = f"s3://{s3_bucket}/tagged"
    args = convert_args(
        [f"s3://{s3_bucket}/in/"], out, "chunking.max_words=60", "output.rows_per_file=16"
    )
    rc = main([*args, "--json"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    n_chunks = expected_chunks(docs, 60)
    assert summary["documents"] == len(docs)
    assert summary["rows_written"] == summary["chunks"] == n_chunks
    assert summary["shards_written"] >= 2

    # Read back with pyarrow.dataset over s3fs ...
    s3fs_client.invalidate_cache()
    table = output_rows(f"{s3_bucket}/tagged", s3fs_client)
    assert table.num_rows == n_chunks
    assert table.schema.remove_metadata() == OUTPUT_SCHEMA
    keys = row_keys(table)
    assert len(set(keys)) == len(keys)
    assert {d for d, _ in keys} == {d["id"] for d in docs}
    for row in table.slice(0, 5).to_pylist():
        assert row["conditional_text"].startswith(
            f"Synopsis: {row['synopsis']} Tags: [{', '.join(row['tags'])}]\n"
        )
        assert row["conditional_text"].endswith(row["text"])
        assert row["labeler"].startswith("keyphrase:")
        assert row["tags"] and row["parse_ok"]

    # ... and with polars, straight from S3.
    frame = pl.read_parquet(
        f"s3://{s3_bucket}/tagged/*.parquet",
        storage_options={
            "aws_endpoint_url": s3fs_client.client_kwargs["endpoint_url"],
            "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing-secret-never-logged",
            "aws_region": "us-east-1",
            "aws_allow_http": "true",
        },
    )
    assert frame.height == n_chunks
    assert frame.select(pl.struct("doc_id", "chunk_index").n_unique()).item() == n_chunks


def test_missing_input_fails_at_once_naming_it(s3_bucket, tmp_path, capsys):
    rc = main(
        ["convert", "--input", f"s3://{s3_bucket}/nothing-here/", "--output", str(tmp_path / "o")]
    )
    assert rc == 2  # a usage error: the input names nothing
    err = capsys.readouterr().err
    assert f"s3://{s3_bucket}/nothing-here/" in err and "no such file" in err


def test_glob_matching_nothing_and_unwritable_output(tmp_path, capsys):
    rc = main(["convert", "--input", str(tmp_path / "*.jsonl"), "--output", str(tmp_path / "o")])
    assert rc == 2 and "matches no files" in capsys.readouterr().err
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "hello world"}\n')
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    rc = main(["convert", "--input", str(src), "--output", str(blocker / "out")])
    assert rc == 3 and "not writable" in capsys.readouterr().err


def test_missing_bucket_is_unwritable(s3_server, tmp_path, capsys):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "hello world"}\n')
    rc = main(["convert", "--input", str(src), "--output", "s3://no-such-bucket-xyz/out"])
    assert rc == 3 and "no-such-bucket-xyz" in capsys.readouterr().err


def test_bad_rows_do_not_crash_the_run(tmp_path):
    src = tmp_path / "mixed.jsonl"
    src.write_text(
        '{"id": "a", "text": "A good document about sailing boats and harbours."}\n'
        '{"id": "b", "text": \n'
        '{"id": "c", "body": "no text"}\n'
    )
    from condlabel.convert.pipeline import run_conversion

    summary = run_conversion(convert_config([src], tmp_path / "out"))
    assert summary.rows_written == 1
    assert summary.rejected == {"invalid_json": 1, "missing_text_field": 1}


def test_progress_lines_report_rate_and_eta(tmp_path, caplog):
    from helpers import write_jsonl

    from condlabel.convert.pipeline import run_conversion

    src = write_jsonl(tmp_path / "a.jsonl", make_docs(12, "p"))
    cfg = convert_config([src], tmp_path / "out", *FREQUENT_PROGRESS)
    with caplog.at_level("INFO", logger="condlabel"):
        summary = run_conversion(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    assert lines, "no progress line was logged"
    assert all("chunks/s" in line and "files read" in line for line in lines)
    assert any("ETA" in line and "ETA unknown" not in line for line in lines)
    assert summary.rows_written == expected_chunks(make_docs(12, "p"), 40)
