"""Reading output back from what a user points at: a prefix, one shard file, a list of shards;
and refusing, with exit 2 and what was found, what is not condlabel output (an input folder, a
foreign parquet file), with one warning, not one per listing. `inspect` and the report show the
rejects. Output built here with pyarrow, as a run writes it (no Ray)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import condlabel
from condlabel.cli import main
from condlabel.readback import inspect_lines, inspect_output
from condlabel.report import render_report
from condlabel.schema import REJECT_SCHEMA
from condlabel.storage_errors import NotAnOutput


def _shard(path: Path, doc: str, chunks: int) -> Path:
    rows = [
        {
            "doc_id": doc,
            "doc_hash": f"h-{doc}",
            "chunk_index": i,
            "num_chunks": chunks,
            "source": "in/a.jsonl",
            "text": f"chunk {i} of {doc}",
            "tags": ["rivers", "bridges"],
            "parse_ok": True,
            "run_id": "20260101T000000-aaaa",
            "conditional_text": f"Tags: [rivers]\nchunk {i} of {doc}",
        }
        for i in range(chunks)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def _rejects(out: Path, run_id: str, reasons: list[str]) -> None:
    rows = [
        {
            "source": "in/a.jsonl",
            "position": i + 1,
            "field": "<line>",
            "reason": r,
            "detail": "d",
            "raw": b"{",
            "run_id": run_id,
        }
        for i, r in enumerate(reasons)
    ]
    path = out / "_rejects" / run_id / "read-0.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=REJECT_SCHEMA), path)


@pytest.fixture()
def output(tmp_path) -> Path:
    out = tmp_path / "out"
    _shard(out / "part-00000000000000000001.parquet", "a", 3)
    _shard(out / "part-00000000000000000002.parquet", "b", 2)
    (out / "_manifest").mkdir()
    (out / "_manifest" / "20260101T000000-aaaa.json").write_text(json.dumps({"status": "ok"}))
    # The same bad line rejected by two runs counts once.
    _rejects(out, "20260101T000000-aaaa", ["invalid_json", "invalid_json", "empty_text"])
    _rejects(out, "20260102T000000-bbbb", ["invalid_json"])
    return out


def test_a_shard_file_or_a_list_of_them_reads_as_what_it_holds(output):
    first, second = sorted(output.glob("part-*.parquet"))
    assert condlabel.read_tagged(str(first)).num_rows == 3
    assert "doc_id" in condlabel.read_tagged(str(first)).column_names
    assert condlabel.read_tagged([str(first), str(second)]).num_rows == 5
    assert condlabel.read_tagged(str(output)).num_rows == 5


def test_inspect_reads_a_shard_file(output, capsys):
    first = sorted(output.glob("part-*.parquet"))[0]
    assert main(["inspect", str(first), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 3 and info["documents"] == 1


def test_inspect_and_the_report_show_the_rejects(output, capsys):
    info, table = inspect_output(str(output))
    assert info["rejects"] == {"total": 3, "reasons": {"invalid_json": 2, "empty_text": 1}}
    text = "\n".join(inspect_lines(info, top=5))
    assert "rejected 3 input record(s)/chunk(s): invalid_json 2, empty_text 1" in text
    page = render_report(info, table, str(output))
    assert "rejected: invalid_json" in page and "rejected (kept in _rejects/)" in page


def test_an_input_folder_is_refused_saying_what_was_found(tmp_path, capsys, caplog):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.jsonl", "b.jsonl", "notes.txt"):
        (corpus / name).write_text('{"text": "x"}\n')
    with caplog.at_level(logging.WARNING, logger="condlabel"):
        assert main(["inspect", str(corpus)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "not a condlabel output" in last and "2 .jsonl, 1 .txt" in last
    with pytest.raises(NotAnOutput):
        condlabel.read_tagged(str(corpus))
    with pytest.raises(NotAnOutput, match="not a parquet shard"):
        condlabel.read_tagged(str(corpus / "a.jsonl"))


def test_foreign_parquet_is_refused_naming_its_columns(tmp_path, capsys):
    folder = tmp_path / "tables"
    folder.mkdir()
    pq.write_table(pa.table({"name": ["x"], "price": [1.0]}), folder / "prices.parquet")
    assert main(["inspect", str(folder)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "no doc_id and chunk_index columns" in last and "name, price" in last


def test_stray_files_in_an_output_are_one_warning(output, caplog, capsys):
    for name in ("notes.txt", "todo.txt", "plot.png"):
        (output / name).write_text("x")
    with caplog.at_level(logging.WARNING, logger="condlabel"):
        assert main(["inspect", str(output)]) == 0
    warnings = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "2 .txt, 1 .png" in warnings[0]
