"""Config: defaults, YAML + --set overrides, every problem reported with its key."""

from __future__ import annotations

import pytest

from condlabel.config import (
    ConfigError,
    ConvertConfig,
    EvalConfig,
    GenerationSettings,
    HFLabelerConfig,
    TrainConfig,
    VLLMLabelerConfig,
    describe_fields,
    load_config,
    load_convert_config,
    load_storage_config,
)


def test_defaults_need_no_file():
    cfg = load_convert_config()
    assert cfg.chunking.max_words == 2000
    assert cfg.labeler.backend == "keyphrase"
    assert cfg.input.text_field == "text"


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("chunking:\n  max_words: 500\ninput:\n  paths: [a.jsonl]\n")
    cfg = load_convert_config(
        path, ["chunking.min_words=50", "input.paths=[x, y]", "storage.anon=true"]
    )
    assert cfg.chunking.max_words == 500
    assert cfg.chunking.min_words == 50
    assert cfg.input.paths == ["x", "y"]
    assert cfg.storage.anon is True


def test_flags_override_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("input: {paths: [a]}\noutput: {uri: s3://x/y}\n")
    cfg = load_convert_config(path, inputs=["b", "c"], output="/tmp/out")
    assert cfg.input.paths == ["b", "c"]
    assert cfg.output.uri == "/tmp/out"


def test_every_problem_is_listed_with_its_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "chunking:\n  max_words: -3\n  max_wrods: 10\n"
        "labeler:\n  backend: gpt9\n"
        "compute:\n  batch_size: lots\n"
        "colour: blue\n"
    )
    with pytest.raises(ConfigError) as err:
        load_convert_config(path)
    problems = err.value.problems
    joined = "\n".join(problems)
    assert len(problems) == 5, joined
    assert "chunking.max_words" in joined
    assert "chunking.max_wrods: unknown key" in joined
    assert "labeler.backend" in joined and "keyphrase" in joined
    assert "compute.batch_size" in joined
    assert "colour: unknown key" in joined
    assert str(path) in str(err.value)


def test_bad_override_syntax_and_unknown_override_key():
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=["chunking.max_words", "chunking.nope=1"])
    joined = "\n".join(err.value.problems)
    assert "key.sub=value" in joined


def test_unknown_override_key_is_reported():
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=["chunking.nope=1"])
    assert err.value.problems == ["chunking.nope: unknown key given with --set"]


def test_prefix_template_fields_are_checked():
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=["format.prefix_template=Topic: {topic}\\n"])
    assert "format.prefix_template" in err.value.problems[0]
    assert "topic" in err.value.problems[0]


def test_missing_config_file():
    with pytest.raises(ConfigError, match="no such file"):
        load_convert_config("/nonexistent/run.yaml")


def test_secrets_are_redacted():
    cfg = load_convert_config(
        overrides=["storage.access_key_id=AKIAXXXX", "storage.secret_access_key=s3cr3t"]
    )
    dumped = str(cfg.redacted())
    assert "s3cr3t" not in dumped and "AKIAXXXX" not in dumped
    assert "s3cr3t" not in repr(cfg)
    assert cfg.storage.secret_access_key.get_secret_value() == "s3cr3t"


def test_config_round_trips_through_its_dump():
    cfg = load_convert_config(overrides=["chunking.max_words=77"])
    assert ConvertConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize("kind", ["convert", "train", "eval"])
def test_every_kind_redacts_its_secrets(kind):
    secrets = ["storage.access_key_id=AKIAXXXX", "storage.secret_access_key=s3cr3t"]
    dumped = load_config(kind, overrides=secrets).redacted()
    assert dumped["storage"]["access_key_id"] == dumped["storage"]["secret_access_key"]
    assert "s3cr3t" not in str(dumped) and "AKIAXXXX" not in str(dumped)


def _sampling(model) -> tuple:
    return (model.max_new_tokens, model.temperature, model.top_p, model.top_k)


def test_generation_fields_are_shared_but_each_keeps_its_defaults():
    # The labelers sample like the reference labeler; evaluation samples more broadly.
    assert _sampling(HFLabelerConfig()) == _sampling(VLLMLabelerConfig()) == (80, 0.5, 0.95, 5)
    assert _sampling(GenerationSettings()) == (48, 1.0, 0.9, 0)
    with pytest.raises(ValueError, match="greater than 0"):
        GenerationSettings(temperature=0)
    for model in (ConvertConfig, TrainConfig, EvalConfig):
        assert all(doc for _, _, doc in describe_fields(model)), model.__name__


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_labeler_prompt_template_needs_text_once(backend):
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=[f"labeler.{backend}.prompt_template=x {{text}} {{y}}"])
    assert err.value.problems[0].startswith(f"labeler.{backend}.prompt_template: ")
    assert "exactly once" in err.value.problems[0]


def test_storage_section_alone_from_any_kind_of_config(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("model:\n  path: m\nstorage:\n  region: eu-west-1\n")
    storage = load_storage_config(path, ["storage.retries=2"])
    assert (storage.region, storage.retries) == ("eu-west-1", 2)
    assert load_storage_config().retries == 10
    with pytest.raises(ConfigError) as err:
        load_storage_config(path, ["storage.regoin=x"])
    assert err.value.problems == [
        "storage.regoin: unknown key given with --set; did you mean storage.region?"
    ]


def test_a_block_size_under_1_kib_is_refused_with_its_key():
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=["compute.block_bytes=100"])
    [problem] = err.value.problems
    assert problem.startswith("compute.block_bytes") and "1024" in problem
    assert load_convert_config(overrides=["compute.block_bytes=65536"]).compute.block_bytes == 65536


def test_the_meco_examples_say_what_meco_is():
    """Every shipped config is loaded in test_shipped_configs.py; the MeCo pair also has to
    match: the conversion's prefix is the one training renders, from a kept URL field."""
    from pathlib import Path

    configs = Path(__file__).parent.parent / "ray_jobs" / "configs"
    for name in ("meco_url_domain", "meco_url_domain_tags"):
        convert = load_convert_config(configs / f"{name}.yaml")
        train = load_config("train", configs / f"train_{name}.yaml")
        assert "{url_domain}" in convert.format.prefix_template
        assert convert.input.url_field in convert.input.kept_types
        assert train.data.format.prefix_template == convert.format.prefix_template
        assert train.data.url_field == convert.input.url_field
        assert train.optimization.loss_on == "text"
        assert train.data.cooldown_fraction == 0.1
    assert (
        "{tags}"
        in load_convert_config(configs / "meco_url_domain_tags.yaml").format.prefix_template
    )


@pytest.mark.parametrize(
    ("kind", "setting", "names"),
    [
        ("convert", "labeler.hf.score=reference", "raw"),
        ("convert", "labeler.hf.merge_adapter=false", "merged at load"),
        ("convert", "input.docs_per_batch=7", "PARQUET_BATCH_ROWS"),
        ("convert", "compute.bytes_per_read_task=1", "BYTES_PER_READ_TASK"),
        ("convert", "compute.key_pass_driver_bytes=0", "KEY_PASS_DRIVER_BYTES"),
        ("convert", "classifiers=[{vader: {mode: split_neutral}}]", "bench/README.md"),
        ("train", "data.control_token_balance=1", "bench/README.md"),
        ("train", "data.control_token_max_repeats=3", "bench/README.md"),
        ("eval", "generation.guidance_against=opposite", "unconditioned"),
        ("eval", "classifiers=[{vader: {mode: split_neutral}}]", "three_way"),
        ("convert", "labeler.hf.max_new_tokens=3", "labeler.generation.max_new_tokens"),
        ("convert", "labeler.ct2.model=m", "moved to labeler.model"),
        ("convert", "cascade.teacher={backend: keyphrase}", "cascade.teacher_config"),
        ("convert", "classifiers=[{backend: hf, hf: {model: m, dtype: float32}}]", "bfloat16"),
        ("eval", "labeler={backend: keyphrase}", "labeler_config"),
        ("convert", "output.use_ledger=false", "output.done_check"),
        ("eval", "format.prefix_template=x", "moved to prefix_template"),
        ("labeler", "vllm.temperature=0.3", "moved to generation.temperature"),
        ("convert", "storage.connect_retries=1", "CONNECT_RETRIES"),
        ("train", "storage.read_timeout_s=5", "READ_TIMEOUT_S"),
        ("eval", "storage.connect_timeout_s=1", "CONNECT_TIMEOUT_S"),
        ("distill", "storage.connect_retries=0", "storage.retries still sets"),
        ("train", "optimization.min_lr_ratio=0.2", "MIN_LR_RATIO"),
        ("distill", "optimization.min_lr_ratio=0", "MIN_LR_RATIO"),
        ("train", "model.lora.dropout=0.1", "LORA_DROPOUT"),
        ("distill", "student.lora.dropout=0.1", "LORA_DROPOUT"),
        ("distill", "student.architecture=causal", "is_encoder_decoder"),
        ("distill", "gate.calibration_bins=10", "CALIBRATION_BINS"),
        ("distill", "gate.batch_size=4", "GATE_BATCH_SIZE"),
        ("distill", "gate.do_sample=true", "greedily"),
        ("distill", "optimization.shuffle_buffer_rows=0", "SHUFFLE_BUFFER_ROWS"),
    ],
)
def test_a_removed_key_fails_naming_what_replaces_it(kind, setting, names, tmp_path):
    """From --set and from a file alike, before any work, with the other problems beside it."""
    key = setting.split("=", 1)[0]
    other = "keyphrase.num_tags" if kind == "labeler" else "storage.retries"
    for source in ("set", "file"):
        path = None
        overrides = [setting, f"{other}=-1"]
        if source == "file":
            path = tmp_path / f"{kind}.yaml"
            section, name = other.split(".")
            path.write_text(f"{section}: {{{name}: -1}}\n")
            overrides = [setting]
        with pytest.raises(ConfigError) as err:
            load_config(kind, path, overrides)
        problems = err.value.problems
        removed = [p for p in problems if names in p]
        assert len(removed) == 1, problems
        assert removed[0].split(":", 1)[0].startswith(key.split(".")[0])
        assert "unknown key" not in "\n".join(problems)
        assert any(p.startswith(other) for p in problems)
    load_config(kind, None, [])  # and without the removed key, it loads


@pytest.mark.parametrize(
    "args",
    [
        ["status", "/nowhere", "--set", "storage.connect_timeout_s=1"],
        ["inspect", "/nowhere", "--set", "storage.connect_retries=0"],
        ["distill", "--set", "storage.read_timeout_s=5"],
        ["train", "--set", "storage.connect_retries=0"],
    ],
    ids=lambda args: args[0],
)
def test_a_removed_storage_key_exits_2_in_every_command(args, capsys):
    """The storage section alone (status, inspect) refuses them as every config kind does."""
    from condlabel.cli import main

    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{args[-1].split('=')[0]}: removed: a tuned internal" in err
    assert "unknown key" not in err


def test_a_removed_storage_key_in_a_storage_only_file_names_what_replaces_it(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("storage: {connect_timeout_s: 1, retries: -1}\noutput: {uri: x}\n")
    with pytest.raises(ConfigError) as err:
        load_storage_config(path)
    problems = err.value.problems
    assert problems[0].startswith("storage.connect_timeout_s: removed") and "5 s" in problems[0]
    assert problems[1].startswith("storage.retries") and len(problems) == 2


def test_a_cascade_teacher_and_an_eval_judge_are_labeler_files(tmp_path, monkeypatch):
    """Read once at load, beside the config file that names them (then the working
    directory); a problem in one names the key and the file."""
    (tmp_path / "teacher.yaml").write_text(
        "backend: hf\nmodel: google/flan-ul2\ngeneration: {max_new_tokens: 7}\n"
    )
    run = tmp_path / "run.yaml"
    run.write_text("cascade: {enabled: true, teacher_config: teacher.yaml}\n")
    monkeypatch.chdir("/")
    cfg = load_convert_config(run)
    assert cfg.cascade.teacher.backend == "hf"
    assert cfg.cascade.teacher.backend_config().max_new_tokens == 7
    assert cfg.labeler.backend == "keyphrase"  # the student keeps its own
    judge = tmp_path / "eval.yaml"
    judge.write_text("labeler_config: teacher.yaml\nconditionals: [{tags: [a]}]\n")
    assert load_config("eval", judge).labeler.model == "google/flan-ul2"

    (tmp_path / "teacher.yaml").write_text("backend: hf\nhf: {max_new_tokens: 7}\n")
    with pytest.raises(ConfigError) as err:
        load_convert_config(run)
    joined = "\n".join(err.value.problems)
    assert "cascade.teacher_config (" in joined and "teacher.yaml" in joined
    assert "hf.max_new_tokens: moved to generation.max_new_tokens" in joined
    with pytest.raises(ConfigError, match=r"cascade\.teacher_config: no such labeler config file"):
        load_convert_config(run, ["cascade.teacher_config=missing.yaml"])
    with pytest.raises(ConfigError, match=r"teacher_config: required with cascade\.enabled"):
        load_convert_config(overrides=["cascade.enabled=true"])


def test_fingerprints_did_not_change_with_the_config_layout():
    """Outputs labeled before the generation section and the model source moved keep their
    labeler fingerprint (the guard against mixing labelers compares them)."""
    from condlabel.config import LabelerConfig
    from condlabel.labelers import labeler_fingerprint

    reference = LabelerConfig(
        backend="hf", model="google/flan-ul2", hf={"adapter": "rallio67/condlabeler-alpha"}
    )
    assert labeler_fingerprint(reference) == "hf:flan-ul2+condlabeler-alpha:6ab163229330"
    greedy = LabelerConfig(backend="hf", model="m", generation={"do_sample": False})
    assert labeler_fingerprint(greedy) == "hf:m:ce8d470456b9"
    assert labeler_fingerprint(LabelerConfig(backend="vllm", model="m")) == "vllm:m:3b1f90454e79"
    assert labeler_fingerprint(LabelerConfig(backend="ct2", model="m")) == "ct2:m:2ab17f40e86e"


@pytest.mark.parametrize(
    ("kind", "setting", "names"),
    [
        ("train", "data.seed=3", "optimization.seed"),
        ("train", "data.rows_per_batch=8", "ROWS_PER_BATCH"),
        ("train", "data.materialize_max_rows=0", "MATERIALIZE_MAX_ROWS"),
        ("train", "compute.torch_threads=1", "cpus_per_worker"),
        ("distill", "compute.torch_threads=1", "cpus_per_worker"),
    ],
)
def test_train_and_distill_keys_that_moved_or_went(kind, setting, names):
    with pytest.raises(ConfigError) as err:
        load_config(kind, None, [setting])
    (problem,) = err.value.problems
    assert problem.startswith(setting.split("=")[0] + ": ") and names in problem
