"""Inputs people actually have: plain text files (one document each, id = path under its input),
a .json file holding an array of objects, a mixed folder (what is skipped is said once), a named
file of a kind condlabel does not read (refused before any work), and a dry run that creates
nothing. No Ray here: the reading and the plan are plain functions."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import fsspec
import pytest

from condlabel.config import ConfigError, InputConfig, load_convert_config
from condlabel.convert.graph_steps import prepare_inputs
from condlabel.convert.inputs import plan_inputs
from condlabel.convert.reading import Document, Reject, iter_file
from condlabel.storage import StorageError, ensure_writable
from condlabel.storage_errors import InputNotFound


def _read(path: Path, inputs: list[str] | None = None) -> list[Document | Reject]:
    cfg = InputConfig(paths=inputs or [str(path)])
    return list(iter_file(fsspec.filesystem("file"), str(path), str(path), cfg))


def test_a_text_file_is_one_document_named_by_its_path_under_the_input(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "notes").mkdir(parents=True)
    (corpus / "notes" / "rivers.md").write_text("# Rivers\n\nRivers carry water.\n")
    (corpus / "a.txt").write_bytes(b"\xef\xbb\xbfPlain text, with a byte-order mark.\r\n")
    [doc] = _read(corpus / "notes" / "rivers.md", [str(corpus)])
    assert (doc.doc_id, doc.text, doc.position) == (
        "notes/rivers.md",
        "# Rivers\n\nRivers carry water.\n",
        1,
    )
    [doc] = _read(corpus / "a.txt", [str(corpus)])
    assert doc.doc_id == "a.txt" and doc.text == "Plain text, with a byte-order mark.\r\n"
    # Named as an input itself: its name; under a glob: the path below the glob's literal root.
    assert _read(corpus / "notes" / "rivers.md")[0].doc_id == "rivers.md"
    assert _read(corpus / "notes" / "rivers.md", [f"{corpus}/*/*.md"])[0].doc_id == (
        "notes/rivers.md"
    )


def test_bad_text_files_are_rejected_with_a_reason(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    [empty] = _read(tmp_path / "empty.txt")
    [latin] = _read(tmp_path / "latin1.txt")
    assert isinstance(empty, Reject) and empty.reason == "empty_file"
    assert isinstance(latin, Reject) and latin.reason == "invalid_utf8" and latin.raw


def test_a_json_array_of_objects_is_read_as_documents(tmp_path):
    docs = [{"id": "a", "text": "first"}, {"id": "b", "text": "second"}, [1], {"id": "c"}]
    (tmp_path / "docs.json").write_text(json.dumps(docs, indent=2))
    (tmp_path / "docs.json.gz").write_bytes(gzip.compress(json.dumps(docs).encode()))
    for name in ("docs.json", "docs.json.gz"):
        items = _read(tmp_path / name)
        assert [i.doc_id for i in items if isinstance(i, Document)] == ["a", "b"]
        assert [(r.position, r.reason) for r in items if isinstance(r, Reject)] == [
            (3, "not_an_object"),
            (4, "missing_text_field"),
        ]
    (tmp_path / "empty.json").write_text("[]")
    assert [r.reason for r in _read(tmp_path / "empty.json")] == ["empty_file"]


def test_json_lines_in_a_json_file_keep_working(tmp_path):
    lines = ['{"id": "a", "text": "first"}', "[1, 2]", '{"id": "b", "text": "second"}']
    (tmp_path / "lines.json").write_text("\n".join(lines) + "\n")
    (tmp_path / "arrays.json").write_text("[1, 2]\n[3]\n")
    items = _read(tmp_path / "lines.json")
    assert [i.doc_id for i in items if isinstance(i, Document)] == ["a", "b"]
    assert [r.reason for r in _read(tmp_path / "arrays.json")] == ["not_an_object"] * 2


def _cfg(inputs: list, tmp_path: Path, *overrides: str):
    return load_convert_config(
        inputs=[str(i) for i in inputs], output=str(tmp_path / "out"), overrides=list(overrides)
    )


def _mixed_folder(tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.jsonl", "b.txt", "c.md"):
        (corpus / name).write_text('{"text": "x"}\n')
    for name in ("t1.csv", "t2.csv", "t3.csv", "t4.csv", "archive.tar.gz", "README"):
        (corpus / name).write_text("x")
    return corpus


def test_a_mixed_folder_reads_what_it_can_and_says_what_it_skipped_once(tmp_path, caplog):
    corpus = _mixed_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="condlabel"):
        files = plan_inputs(_cfg([corpus], tmp_path))
    assert [Path(f.uri).name for f in files] == ["a.jsonl", "b.txt", "c.md"]
    [warning] = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert "6 file(s)" in warning and "4 .csv" in warning and "1 .tar.gz" in warning
    assert "1 (no suffix)" in warning and "t1.csv" in warning and "t4.csv" not in warning


def test_a_folder_with_nothing_readable_names_what_it_found(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "table.csv").write_text("a,b\n")
    with pytest.raises(InputNotFound, match=r"1 \.csv: .*table\.csv"):
        plan_inputs(_cfg([tmp_path / "corpus"], tmp_path))


def test_a_named_file_of_an_unsupported_kind_is_refused_before_any_work(tmp_path):
    corpus = _mixed_folder(tmp_path)
    with pytest.raises(ConfigError) as err:
        plan_inputs(_cfg([corpus / "a.jsonl", corpus / "t1.csv", corpus / "README"], tmp_path))
    assert [p.split(":")[0] for p in err.value.problems] == ["input.paths", "input.paths"]
    assert "t1.csv" in err.value.problems[0] and "(.csv)" in err.value.problems[0]
    assert "README" in err.value.problems[1]
    # A glob picks what it can read, as a folder does; a format set by hand reads any file.
    assert [
        Path(f.uri).name
        for f in plan_inputs(_cfg([f"{corpus}/t*"], tmp_path, "input.format=jsonl"))
    ] == [
        "t1.csv",
        "t2.csv",
        "t3.csv",
        "t4.csv",
    ]


def test_a_dry_run_creates_nothing(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text('{"text": "x"}\n')
    cfg = load_convert_config(inputs=[str(src)], output=str(tmp_path / "new" / "out"))
    prepare_inputs(cfg, dry_run=True)
    ensure_writable(str(tmp_path / "new" / "deeper" / "out"), create=False)
    assert not (tmp_path / "new").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StorageError, match="not writable"):
        ensure_writable(str(blocker / "out"), create=False)
