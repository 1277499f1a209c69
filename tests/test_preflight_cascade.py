"""The preflight checks the cascade's teacher as it checks the labeler: its extra and its
weights, each problem named by its `cascade.teacher.*` key, before any work; a teacher of a
cascade that is off is not built, so not checked."""

from __future__ import annotations

import sys

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args

from condlabel.cli import main
from condlabel.config import ConfigError, load_convert_config
from condlabel.preflight import preflight

CASCADE = ["cascade.enabled=true", "labeler.backend=keyphrase"]


def _pickle_only(path):
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "pytorch_model.bin").write_bytes(b"never unpickled")
    return path


def test_a_teacher_without_weights_is_named_by_its_key(tmp_path):
    model = _pickle_only(tmp_path / "teacher")
    hf = ["cascade.teacher.backend=hf", f"cascade.teacher.hf.model={model}"]
    with pytest.raises(ConfigError) as info:
        preflight(load_convert_config(overrides=[*CASCADE, *hf]))
    (problem,) = info.value.problems
    assert problem.startswith(f"cascade.teacher.hf.model: no model.safetensors in {model}")

    # a transformers checkpoint where the ct2 backend wants a CTranslate2 model
    ct2 = ["cascade.teacher.backend=ct2", f"cascade.teacher.ct2.model={model}"]
    with pytest.raises(ConfigError, match=r"cascade\.teacher\.ct2\.model: no model\.bin"):
        preflight(load_convert_config(overrides=[*CASCADE, *ct2]))

    # the same teacher with the cascade off: never built, nothing to refuse
    preflight(load_convert_config(overrides=[*hf, "labeler.backend=keyphrase"]))


def test_teacher_and_labeler_problems_are_reported_together(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as if it were not installed
    cfg = load_convert_config(
        overrides=[
            "cascade.enabled=true",
            "labeler.backend=hf",
            f"labeler.hf.model={tmp_path / 'student'}",
            "cascade.teacher.backend=vllm",
            f"cascade.teacher.vllm.model={tmp_path / 'teacher'}",
        ]
    )
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    text = "\n".join(info.value.problems)
    assert f"labeler.hf.model: no such directory: {tmp_path / 'student'}" in text
    assert "cascade.teacher.backend: needs vllm" in text and "condlabel[vllm]" in text
    assert f"cascade.teacher.vllm.model: no such directory: {tmp_path / 'teacher'}" in text


def test_convert_refuses_a_bad_teacher_before_any_work(tmp_path, capsys):
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(1, "a"))
    teacher = _pickle_only(tmp_path / "teacher")
    overrides = [*CASCADE, "cascade.teacher.backend=hf", f"cascade.teacher.hf.model={teacher}"]
    assert main([*convert_args([src], tmp_path / "out", *overrides), "--dry-run"]) == 2
    assert "cascade.teacher.hf.model" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
