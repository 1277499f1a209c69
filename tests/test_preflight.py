"""Checks before any work: a missing extra or a model without safetensors weights stops a command
with exit 2, naming the `pip install` line or the missing file, before Ray starts or the output
is touched."""

from __future__ import annotations

import sys

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args

import condlabel.convert.pipeline
from condlabel.cli import main
from condlabel.config import ConfigError, load_config, load_convert_config
from condlabel.preflight import Weights, importable, preflight, weights_problems
from condlabel.storage import StorageError


@pytest.fixture()
def no_work(monkeypatch):
    """Fail the test if a command gets as far as the conversion itself."""

    def refuse(*args, **kwargs):
        raise AssertionError("the conversion started although the preflight should refuse it")

    monkeypatch.setattr(condlabel.convert.pipeline, "run_conversion", refuse)
    monkeypatch.setattr(condlabel.convert.pipeline, "dry_run", refuse)


def _pickle_only(path):
    path.mkdir()
    (path / "config.json").write_text("{}")
    (path / "pytorch_model.bin").write_bytes(b"never unpickled")
    return path


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("dry_run", [False, True])
def test_vader_without_its_extra_exits_2_with_the_install_line(
    dry_run, no_work, monkeypatch, tmp_path, capsys
):
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)  # as if it were not installed
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(1, "a"))
    args = convert_args([src], tmp_path / "out", "classifiers=[{backend: vader}]")
    assert main(args + ["--dry-run"] * dry_run) == 2
    last = _last_line(capsys)
    assert "classifiers.0.backend" in last and "pip install 'condlabel[classify]'" in last
    assert not (tmp_path / "out").exists()


def test_pickle_only_model_exits_2_naming_the_missing_file(no_work, tmp_path, capsys):
    model = _pickle_only(tmp_path / "model")
    src = write_jsonl(tmp_path / "a.jsonl", make_docs(1, "a"))
    args = convert_args([src], tmp_path / "out", "labeler.backend=hf", f"labeler.model={model}")
    assert main(args) == 2
    last = _last_line(capsys)
    assert f"no model.safetensors in {model}" in last and "pickle-only" in last
    assert "pytorch_model.bin" in last and "labeler.model" in last
    assert not (tmp_path / "out").exists()


def test_every_problem_is_reported_together(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vaderSentiment", None)
    cfg = load_convert_config(
        overrides=[
            "labeler.backend=vllm",
            f"labeler.model={tmp_path / 'missing'}",
            f"labeler.vllm.adapter={_pickle_only(tmp_path / 'adapter')}",
            "classifiers=[{backend: vader}]",
        ]
    )
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    text = "\n".join(info.value.problems)
    assert "labeler.backend: needs vllm" in text and "condlabel[vllm]" in text
    assert f"labeler.model: no such directory: {tmp_path / 'missing'}" in text
    assert "labeler.vllm.adapter: no adapter_model.safetensors" in text
    assert "classifiers.0.backend: needs vaderSentiment" in text


def test_safetensors_models_and_hub_ids_pass(tmp_path):
    plain, sharded = tmp_path / "plain", tmp_path / "sharded"
    plain.mkdir()
    sharded.mkdir()
    (plain / "model.safetensors").write_bytes(b"")
    (sharded / "model.safetensors.index.json").write_text("{}")
    assert weights_problems(Weights("m", str(plain))) == []
    assert weights_problems(Weights("m", f"file://{sharded}")) == []
    assert weights_problems(Weights("m", "google/flan-ul2")) == []  # left to from_pretrained
    assert weights_problems(Weights("m", None)) == []
    assert weights_problems(Weights("a", str(plain), adapter=True)) != []


def test_train_and_eval_models_are_checked(tmp_path):
    model = _pickle_only(tmp_path / "model")
    with pytest.raises(ConfigError, match=r"model\.path: no model\.safetensors"):
        preflight(load_config("train", overrides=[f"model.path={model}"]))
    with pytest.raises(ConfigError, match=r"model: no model\.safetensors"):
        preflight(load_config("eval", overrides=[f"model={model}"]))


def test_train_command_refuses_before_any_work(tmp_path, capsys):
    model = _pickle_only(tmp_path / "model")
    args = ["train", "--set", f"model.path={model}", "--set", "data.paths=[/nowhere]"]
    assert main(args + ["--dry-run"]) == 2
    assert f"no model.safetensors in {model}" in _last_line(capsys)


def test_importable_does_not_import(monkeypatch):
    monkeypatch.delitem(sys.modules, "vaderSentiment", raising=False)
    assert importable("json") and not importable("condlabel_no_such_module")
    assert importable("vaderSentiment") and "vaderSentiment" not in sys.modules


def test_models_under_object_storage_are_listed_not_downloaded(s3_bucket, s3fs_client, tmp_path):
    s3fs_client.pipe(f"{s3_bucket}/good/model.safetensors", b"")
    s3fs_client.pipe(f"{s3_bucket}/good/config.json", b"{}")
    s3fs_client.pipe(f"{s3_bucket}/pickled/pytorch_model.bin", b"never unpickled")
    assert weights_problems(Weights("m", f"s3://{s3_bucket}/good")) == []
    (problem,) = weights_problems(Weights("m", f"s3://{s3_bucket}/pickled"))
    assert f"no model.safetensors in s3://{s3_bucket}/pickled" in problem
    assert "pytorch_model.bin" in problem
    (problem,) = weights_problems(Weights("m", f"s3://{s3_bucket}/nothing"))
    assert f"no files under s3://{s3_bucket}/nothing" in problem


def test_an_unreachable_model_store_is_a_storage_error():
    from condlabel.config import StorageConfig

    storage = StorageConfig(endpoint_url="http://127.0.0.1:9", retries=0)
    with pytest.raises(StorageError, match=r"labeler\.model"):
        weights_problems(Weights("labeler.model", "s3://bucket/model"), storage)


def test_merge_refuses_a_pickle_only_adapter_before_loading_anything(tmp_path, capsys):
    base = tmp_path / "base"
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"")
    adapter = _pickle_only(tmp_path / "adapter")
    args = ["merge", "--base", str(base), "--adapter", str(adapter), "--output", "/nowhere"]
    assert main(args) == 2
    last = _last_line(capsys)
    assert f"--adapter: no adapter_model.safetensors in {adapter}" in last
