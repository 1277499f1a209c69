"""Every config shipped in ray_jobs/configs/ loads and validates as its kind, and the same
check refuses it once a key it does not know is added."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from condlabel.cli import main

CONFIGS = sorted((Path(__file__).parent.parent / "ray_jobs" / "configs").glob("*.yaml"))
# train_*.yaml, eval_*.yaml and distill_*.yaml are of those commands, labeler_*.yaml labeler
# files (a cascade's teacher, an evaluation's judge); the rest are conversions (cascade_*.yaml
# included: the cascade is a section of a conversion).
KINDS = ("train", "eval", "distill", "labeler")
# mappings whose keys are data (resource names, tokens, words), where any key is valid
FREE_FORM = {
    "actor_resources",
    "tokens",
    "absent_tokens",
    "opposites",
    "engine_kwargs",
    "new_token_words",
}


def _kind(path: Path) -> str:
    prefix = path.name.split("_", 1)[0]
    return prefix if prefix in KINDS else "convert"


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 2
    # the examples of the ct2 backend, distillation and the cascade are among them
    kinds = {p.name: _kind(p) for p in CONFIGS}
    assert kinds["flan_ul2_ct2_int8.yaml"] == "convert"
    assert kinds["distill_flan_t5_base.yaml"] == "distill"
    assert kinds["cascade_student_flan_ul2.yaml"] == "convert"
    assert kinds["labeler_flan_ul2_ct2_int8.yaml"] == "labeler"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path, capsys):
    rc = main(["config", "--kind", _kind(path), "--config", str(path)])
    assert rc == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_with_a_bad_key_is_refused(path, tmp_path, capsys):
    """The check above can fail: the same file with a key misspelled in its deepest section."""
    data = yaml.safe_load(path.read_text())
    section, keys = data, []
    while True:
        nested = [k for k, v in section.items() if isinstance(v, dict) and v and k not in FREE_FORM]
        if not nested:
            break
        keys.append(nested[0])
        section = section[nested[0]]
    section["no_such_key"] = 1
    bad = tmp_path / path.name
    bad.write_text(yaml.safe_dump(data))
    capsys.readouterr()
    assert main(["config", "--kind", _kind(path), "--config", str(bad)]) != 0
    assert ".".join([*keys, "no_such_key"]) + ": unknown key" in capsys.readouterr().err
