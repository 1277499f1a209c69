"""What a configuration error says: where a bad key came from (`--set` or the file) and the key
meant; no value quoted at length; no NaN or infinity in any float field; a tag vocabulary that
cannot be used refused with the config, before any work, naming its key."""

from __future__ import annotations

import json
import logging

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args

from condlabel.cli import main
from condlabel.config import ConfigError, load_config, load_convert_config

SHIPPED = "ray_jobs/configs/keyphrase_local.yaml"


def test_a_set_typo_is_blamed_on_set_and_suggests_the_key(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_convert_config(SHIPPED, ["chunking.max_word=1500"])
    assert err.value.problems == [
        "chunking.max_word: unknown key given with --set; did you mean chunking.max_words?"
    ]
    assert SHIPPED not in str(err.value)  # the file is not blamed for a --set key


def test_a_file_typo_names_the_file_and_suggests_the_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("chunkng:\n  max_words: 10\nlabeler:\n  keyphrase:\n    num_tag: 3\n")
    with pytest.raises(ConfigError) as err:
        load_convert_config(path)
    assert sorted(err.value.problems) == [
        f"chunkng: unknown key in {path}; did you mean chunking?",
        f"labeler.keyphrase.num_tag: unknown key in {path}; did you mean "
        "labeler.keyphrase.num_tags?",
    ]


def test_a_key_like_no_other_gets_no_suggestion():
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=["zebra=1"])
    assert err.value.problems == ["zebra: unknown key given with --set"]


@pytest.mark.parametrize(
    "override,key",
    [
        ("cascade.threshold=nan", "cascade.threshold"),
        ("cascade.threshold=.nan", "cascade.threshold"),
        ("format.tag_oov_similarity=inf", "format.tag_oov_similarity"),
        ("compute.label_timeout_s=.inf", "compute.label_timeout_s"),
        ("compute.actor_resources={GPU: .nan}", "compute.actor_resources.GPU"),
        ("compute.num_cpus_per_actor=-inf", "compute.num_cpus_per_actor"),
    ],
)
def test_non_finite_numbers_are_refused_in_every_float_field(override, key):
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=[override])
    assert err.value.problems[0].startswith(f"{key}: ") and "finite" in err.value.problems[0]


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("train", "optimization.learning_rate"),
        ("eval", "generation.guidance_scale"),
        ("distill", "holdout_fraction"),
    ],
)
def test_non_finite_numbers_are_refused_in_every_kind(kind, key):
    with pytest.raises(ConfigError, match="finite") as err:
        load_config(kind, overrides=[f"{key}=nan"])
    assert err.value.problems[0].startswith(f"{key}: ")


def test_an_anchor_bomb_is_refused_without_quoting_it(tmp_path):
    lines = ['a: &a ["' + "x" * 50 + '", "y", "z", "w", "v", "u", "t", "s", "r"]']
    for prev, name in zip("abcdef", "bcdefg", strict=True):
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
    lines.append("chunking: {max_words: *g}")
    lines.append("input: {paths: [*g], text_field: *g}")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError) as err:
        load_convert_config(path)
    # Refused before validation walks its 9**7 values: named as what it is, in a few lines.
    message = str(err.value)
    assert len(message) < 1_000 and "x" * 50 not in message
    assert "bomb.yaml" in message and "aliases" in message and "100,000" in message
    # Through --set the bomb is refused too (kept as text, never expanded), and a config
    # that uses a few anchors loads as before.
    bomb = "{" + ", ".join(lines[:-2]) + "}"
    with pytest.raises(ConfigError, match=r"labeler\.keyphrase") as err:
        load_convert_config(overrides=[f"labeler.keyphrase={bomb}"])
    assert len(str(err.value)) < 1_000
    path.write_text("chunking: {max_words: &words 120, min_words: *words}\n")
    assert load_convert_config(path).chunking.min_words == 120


def test_a_problem_is_never_megabytes():
    assert len(str(ConfigError(["k: " + "v" * 10_000_000]))) < 2_000


def test_a_huge_integer_is_described_not_printed():
    with pytest.raises(ConfigError) as err:
        load_convert_config(overrides=["chunking.max_words=" + "9" * 5000])
    assert "chunking.max_words" in err.value.problems[0]
    assert len(err.value.problems[0]) < 300


VOCABULARY = '{"format": "condlabel-tag-vocabulary-v1", "tags": {"rivers": %s}}'


@pytest.mark.parametrize(
    "content",
    [
        VOCABULARY % '{"count": "twelve", "variants": {"rivers": 3}}',
        VOCABULARY % '{"count": null, "variants": {"rivers": 3}}',
        VOCABULARY % '{"count": NaN, "variants": {"rivers": 3}}',
        VOCABULARY % '{"count": 1e400, "variants": {"rivers": 3}}',
        VOCABULARY % ('{"count": ' + "7" * 5000 + ', "variants": {"rivers": 3}}'),
        VOCABULARY % '{"variants": {"rivers": -2}}',
        VOCABULARY % ('{"variants": {"rivers": 3}, "more": ' + "[" * 100_000 + "]" * 100_000 + "}"),
        None,  # a directory
    ],
    ids=["text", "null", "nan", "1e400", "huge", "negative", "deep", "directory"],
)
def test_a_malformed_vocabulary_is_refused_before_any_work(content, tmp_path, capsys, caplog):
    src = write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(1, "a"))
    vocabulary = tmp_path / "vocab.json"
    if content is None:
        vocabulary.mkdir()
    else:
        vocabulary.write_text(content)
    args = convert_args([src], tmp_path / "out", f"format.tag_vocabulary={vocabulary}")
    with caplog.at_level(logging.INFO, logger="ray"):
        assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "format.tag_vocabulary" in last and str(vocabulary) in last and len(last) <= 500
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_a_train_vocabulary_is_checked_with_the_config(tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    vocabulary = tmp_path / "vocab.json"
    vocabulary.write_text(json.dumps({"format": "condlabel-tag-vocabulary-v1", "tags": []}))
    args = ["train", "--set", f"model.path={model}", "--set", f"data.paths=[{tmp_path}]"]
    args += ["--set", f"data.format.tag_vocabulary={vocabulary}"]
    assert main(args) == 2
    assert "data.format.tag_vocabulary" in capsys.readouterr().err


def test_the_whole_config_is_logged_only_at_debug(tmp_path, caplog, capsys):
    args = ["convert", "--output", str(tmp_path / "out")]  # stops at once: no input
    with caplog.at_level(logging.DEBUG):
        assert main(["-v", *args]) == 2
    config_lines = [r for r in caplog.records if r.getMessage().startswith("config: {")]
    assert config_lines and all(r.levelno == logging.DEBUG for r in config_lines)
