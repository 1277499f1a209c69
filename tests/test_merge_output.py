"""`condlabel merge --output`: a folder that holds files is refused unless `--overwrite`, and
even then nothing condlabel did not write is deleted; exports (`upload_directory`) remove only
the files their own previous export listed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from condlabel.cli import main
from condlabel.model_export import COMPLETE_MARKER, upload_directory


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def test_merge_into_a_folder_with_files_is_refused_and_leaves_it_alone(
    tiny_t5, tiny_t5_adapter, tmp_path, capsys
):
    # The mistake from the field: --output pointed at the folder that holds the base model.
    out = tmp_path / "base-copy"
    shutil.copytree(tiny_t5, out)
    before = _tree(out)
    code = main(
        ["merge", "--base", str(out), "--adapter", str(tiny_t5_adapter), "--output", str(out)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert f"--output {out}: not empty" in err and "--overwrite" in err
    assert _tree(out) == before


def test_overwrite_replaces_a_previous_merge_and_keeps_foreign_files(
    tiny_t5, tiny_t5_adapter, tmp_path, monkeypatch
):
    monkeypatch.setenv("CONDLABEL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "merged"
    args = [
        "merge",
        "--base",
        str(tiny_t5),
        "--adapter",
        str(tiny_t5_adapter),
        "--output",
        str(out),
    ]
    assert main(args) == 0
    first = _tree(out)
    (out / "NOTES.md").write_text("mine")  # a file the user put there
    (out / "extra").mkdir()
    (out / "extra" / "eval.json").write_text("{}")
    assert main(args) == 2  # not empty: refused without --overwrite
    assert main([*args, "--format", "ct2", "--adapter", str(tiny_t5_adapter), "--overwrite"]) == 0
    after = _tree(out)
    assert after["NOTES.md"] == b"mine" and after["extra/eval.json"] == b"{}"
    assert "model.bin" in after  # the ct2 merge is there
    # The hf merge's weights were condlabel's own (listed in its marker) and are gone now.
    assert "model.safetensors" in first and "model.safetensors" not in after
    listed = json.loads(after[COMPLETE_MARKER])["files"]
    assert "model.bin" in listed and "NOTES.md" not in listed


def test_an_output_that_is_a_file_is_refused(tiny_t5, tiny_t5_adapter, tmp_path, capsys):
    target = tmp_path / "weights.safetensors"
    target.write_bytes(b"precious")
    args = ["merge", "--base", str(tiny_t5), "--adapter", str(tiny_t5_adapter)]
    assert main([*args, "--output", str(target), "--overwrite"]) == 2
    assert "is a file" in capsys.readouterr().err
    assert target.read_bytes() == b"precious"


def test_an_export_without_a_file_list_deletes_nothing(tmp_path):
    """A folder exported before markers listed their files: every file there is kept."""
    dest = tmp_path / "export"
    dest.mkdir()
    (dest / "old-shard.safetensors").write_bytes(b"old")
    (dest / COMPLETE_MARKER).write_text(str(dest))  # the old marker held the URI only
    new = tmp_path / "new"
    new.mkdir()
    (new / "model.safetensors").write_bytes(b"new")
    upload_directory(new, str(dest))
    assert _tree(dest)["old-shard.safetensors"] == b"old"
    assert _tree(dest)["model.safetensors"] == b"new"
    assert json.loads(_tree(dest)[COMPLETE_MARKER])["files"] == ["model.safetensors"]


@pytest.mark.s3
def test_s3_export_removes_only_its_own_stale_files(s3_bucket, s3fs_client, tmp_path):
    uri = f"s3://{s3_bucket}/models/student"
    s3fs_client.pipe_file(f"{s3_bucket}/models/student/README.md", b"theirs")
    for version, names in ((1, ["a.safetensors", "b.safetensors"]), (2, ["a.safetensors"])):
        local = tmp_path / f"v{version}"
        local.mkdir()
        for name in names:
            (local / name).write_bytes(f"v{version}".encode())
        upload_directory(local, uri)
    s3fs_client.invalidate_cache()
    names = {Path(p).name for p in s3fs_client.find(f"{s3_bucket}/models/student")}
    assert names == {"README.md", "a.safetensors", COMPLETE_MARKER}
    assert s3fs_client.cat_file(f"{s3_bucket}/models/student/a.safetensors") == b"v2"
