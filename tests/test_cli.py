"""The command line itself: --version, -v, every command's --help, and the commands that read
only the `storage:` section of a config (status, inspect) given a train or eval config."""

from __future__ import annotations

import json
import logging

import pytest

import condlabel
import condlabel.cli
from condlabel.cli import COMMANDS, main
from condlabel.ray_runtime import is_verbose

TRAIN_YAML = """\
data:
  paths: [/nowhere/tagged]
model:
  path: /nowhere/model
optimization:
  max_steps: 5
storage:
  retries: 1
"""

EVAL_YAML = """\
model: /nowhere/model
conditionals:
  - control_tokens: ["<|pos|>"]
storage:
  anon: true
"""


def _help_text(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    return capsys.readouterr().out


def test_version_prints_the_package_version(capsys):
    assert _help_text(["--version"], capsys).strip() == f"condlabel {condlabel.__version__}"


@pytest.mark.parametrize("args", [["-v", "config"], ["config", "--verbose"]])
def test_verbose_turns_on_debug_logs_and_ray_console_logs(args, capsys):
    assert main(args) == 0
    assert logging.getLogger("condlabel").getEffectiveLevel() == logging.DEBUG
    assert is_verbose()
    # Without -v the next command in the same process is quiet again.
    assert main(["config"]) == 0
    assert logging.getLogger("condlabel").level == logging.NOTSET
    assert not is_verbose()


def test_verbose_and_quiet_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["-v", "-q", "config"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_every_command_is_listed_in_the_top_help_and_the_module_docstring(capsys):
    top = _help_text(["--help"], capsys)
    for name in COMMANDS:
        assert f"    {name} " in top
        assert f"    {name} " in condlabel.cli.__doc__
    assert "--version" in top and "--verbose" in top


@pytest.mark.parametrize("command", list(COMMANDS))
def test_each_command_help_opens_with_what_it_does(command, capsys):
    text = _help_text([command, "--help"], capsys)
    usage, description = text.split("\n\n")[:2]
    assert usage.startswith(f"usage: condlabel {command}")
    # The paragraph after the usage is a sentence that says what the command does, e.g.
    # "Summarise the runs and totals of an output prefix." (not the options list).
    first_sentence = " ".join(description.split()).split(". ")[0]
    assert first_sentence[0].isupper() and len(first_sentence.split()) >= 5, first_sentence
    assert not first_sentence.lower().startswith(("positional", "options"))


@pytest.mark.parametrize("kind, text", [("train", TRAIN_YAML), ("eval", EVAL_YAML)])
def test_status_and_inspect_read_only_the_storage_section(kind, text, tmp_path, capsys):
    config = tmp_path / f"{kind}.yaml"
    config.write_text(text)
    out = tmp_path / "out"
    out.mkdir()
    assert main(["status", str(out), "--config", str(config), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["totals"]["rows"] == 0 and status["runs"] == []
    args = ["inspect", str(out), "--config", str(config), "--set", "storage.retries=3", "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 0


def test_storage_only_commands_still_reject_unknown_keys(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text(TRAIN_YAML + "  bucket_size: 3\n")
    args = ["status", str(tmp_path), "--config", str(config), "--set", "chunking.max_words=5"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "storage.bucket_size: unknown key" in err
    assert "chunking.max_words: this command reads only the storage section" in err
    assert "2 problem(s)" in err.splitlines()[-1]
