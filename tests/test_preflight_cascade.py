"""The preflight checks the cascade's teacher as it checks the labeler: its extra and its
weights, each problem named by `cascade.teacher_config`, its file and the key in it, before any
work; a teacher of a cascade that is off is not built, so not checked."""

from __future__ import annotations

import sys

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args

from condlabel.cli import main
from condlabel.config import ConfigError, load_convert_config
from condlabel.preflight import preflight

CASCADE = ["cascade.enabled=true", "labeler.backend=keyphrase"]


def _teacher(tmp_path, text: str) -> list[str]:
    """Overrides naming a teacher file holding `text`."""
    path = tmp_path / "teacher.yaml"
    path.write_text(text)
    return [f"cascade.teacher_config={path}"]


def _pickle_only(path):
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "pytorch_model.bin").write_bytes(b"never unpickled")
    return path


def test_a_teacher_without_weights_is_named_by_its_key(tmp_path):
    model = _pickle_only(tmp_path / "teacher")
    hf = _teacher(tmp_path, f"backend: hf\nmodel: {model}\n")
    with pytest.raises(ConfigError) as info:
        preflight(load_convert_config(overrides=[*CASCADE, *hf]))
    (problem,) = info.value.problems
    where = f"cascade.teacher_config ({tmp_path / 'teacher.yaml'}): "
    assert problem.startswith(f"{where}model: no model.safetensors in {model}")

    # a transformers checkpoint where the ct2 backend wants a CTranslate2 model
    ct2 = _teacher(tmp_path, f"backend: ct2\nmodel: {model}\n")
    with pytest.raises(ConfigError, match=r"teacher\.yaml\): model: no model\.bin"):
        preflight(load_convert_config(overrides=[*CASCADE, *ct2]))
    hf = _teacher(tmp_path, f"backend: hf\nmodel: {model}\n")

    # the same teacher with the cascade off: never built, nothing to refuse
    preflight(load_convert_config(overrides=[*hf, "labeler.backend=keyphrase"]))


def test_teacher_and_labeler_problems_are_reported_together(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if it were not installed
    cfg = load_convert_config(
        overrides=[
            "cascade.enabled=true",
            "labeler.backend=hf",
            f"labeler.model={tmp_path / 'student'}",
            *_teacher(tmp_path, f"backend: vllm\nmodel: {tmp_path / 'teacher'}\n"),
        ]
    )
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    text = "\n".join(info.value.problems)
    assert f"labeler.model: no such directory: {tmp_path / 'student'}" in text
    where = f"cascade.teacher_config ({tmp_path / 'teacher.yaml'}): "
    assert f"{where}backend: needs vllm" in text and "condlabel[vllm]" in text
    assert f"{where}model: no such directory: {tmp_path / 'teacher'}" in text


def test_convert_refuses_a_bad_teacher_before_any_work(tmp_path, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(1, "a"))
    teacher = _pickle_only(tmp_path / "teacher")
    overrides = [*CASCADE, *_teacher(tmp_path, f"backend: hf\nmodel: {teacher}\n")]
    assert main([*convert_args([src], tmp_path / "out", *overrides), "--dry-run"]) == 2
    assert "teacher.yaml): model: no model.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
