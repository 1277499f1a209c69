"""The command line itself: --version, -v, every command's --help, the commands that read
only the `storage:` section of a config (status, inspect) given a train or eval config, and the
last line of a failure (the real cause and its exit code, also for errors raised in Ray)."""

from __future__ import annotations

import json
import logging

import pytest

import condlabel
import condlabel.cli
import condlabel.cli.corpus
from condlabel.cli import COMMANDS, main
from condlabel.config import ConfigError
from condlabel.failures import exit_code, raised_exception_in, reason, strip_ansi
from condlabel.ray_runtime import is_verbose
from condlabel.storage import StorageError

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


# --------------------------------------------------------------------------- the last line


def _udf_raising(exc: Exception):
    def udf(batch):
        raise exc

    return udf


def _actor_raising(hint: str) -> type:
    """A labeler-like actor whose construction fails, as a missing extra makes it fail (made
    here so Ray ships the class by value: workers cannot import this test module)."""

    class ActorRaising:
        def __init__(self):
            raise ImportError(f"the `vader` classifier needs vaderSentiment: {hint}")

        def __call__(self, batch):  # pragma: no cover - never built
            return batch

    return ActorRaising


VADER_HINT = "pip install 'condlabel[classify]'"


def _fails_in_ray(monkeypatch, run) -> None:
    """Make `convert` run `run` (a real Ray Data pipeline that fails) instead of a conversion."""
    import condlabel.convert.pipeline

    monkeypatch.setattr(condlabel.convert.pipeline, "run_conversion", lambda cfg, **kw: run())
    monkeypatch.setattr(condlabel.cli.corpus, "preflight", lambda cfg: None)


@pytest.mark.parametrize(
    "build, code, expected",
    [
        (
            lambda ray: ray.data.range(2).map_batches(
                _udf_raising(StorageError("output s3://b/o: not writable (endpoint http://h:1)"))
            ),
            3,
            "error: output s3://b/o: not writable (endpoint http://h:1)",
        ),
        (
            lambda ray: ray.data.range(2).map_batches(
                _udf_raising(ConfigError(["labeler.model: no model.safetensors in /m"]))
            ),
            2,
            "error: invalid configuration (1 problem(s)): labeler.model: "
            "no model.safetensors in /m",
        ),
        (
            lambda ray: ray.data.range(2).map_batches(
                _actor_raising(VADER_HINT),
                compute=ray.data.ActorPoolStrategy(size=1),
                num_cpus=0.5,
            ),
            2,
            f"error: ImportError: the `vader` classifier needs vaderSentiment: {VADER_HINT}",
        ),
        (
            lambda ray: ray.data.range(2).map_batches(_udf_raising(ValueError("bad chunk 7"))),
            1,
            "error: ValueError: bad chunk 7",
        ),
    ],
    ids=["storage-in-task", "config-in-task", "extra-in-actor", "other"],
)
def test_errors_raised_in_ray_end_with_their_real_cause(
    build, code, expected, ray_local, monkeypatch, tmp_path, capsys
):
    _fails_in_ray(monkeypatch, lambda: build(ray_local).materialize())
    assert main(["convert", "--input", str(tmp_path), "--output", str(tmp_path / "o")]) == code
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == expected
    assert "\x1b[" not in last and "ray::" not in last and "RayTaskError" not in last


RAY_TRACEBACK = (
    "\x1b[36mray::ReadRange->MapBatches(f)()\x1b[39m (pid=1, ip=192.0.2.2)\n"
    "FileNotFoundError: [Errno 2] No such file: 'a.jsonl'\n"
    "\nThe above exception was the direct cause of the following exception:\n\n"
    '  File "/x/condlabel/convert/stages.py", line 12, in f\n'
    '    raise StorageError("input s3://b/a.jsonl: cannot be read")\n'
    "condlabel.storage.StorageError: input s3://b/a.jsonl: cannot be read\n"
    "\nThe above exception was the direct cause of the following exception:\n\n"
    "\x1b[36mray::ReadRange->MapBatches(f)()\x1b[39m (pid=1, ip=192.0.2.2)\n"
    "ray.exceptions.UserCodeException: UDF failed to process a data block.\n"
)


def test_the_exception_a_task_raised_is_found_in_its_traceback_text():
    found = raised_exception_in(strip_ansi(RAY_TRACEBACK))
    assert found is not None and found.name == "condlabel.storage.StorageError"  # not its cause
    assert exit_code(found) == 3
    assert reason(found) == "error: input s3://b/a.jsonl: cannot be read"
    assert raised_exception_in("Warning: no exception here\n  File x\n") is None


def test_the_last_line_never_carries_url_credentials():
    exc = RuntimeError("could not connect to http://ak:sk@127.0.0.1:9/bucket")
    assert reason(exc) == "error: RuntimeError: could not connect to http://127.0.0.1:9/bucket"


def test_lease_break_removes_a_held_lease(tmp_path, capsys):
    from condlabel.config import StorageConfig
    from condlabel.runs.runstate import Lease, read_lease

    out = tmp_path / "out"
    out.mkdir()
    lease = Lease(str(out), "run-held", StorageConfig(), ttl_s=600)
    lease.acquire()
    try:
        assert main(["lease", "break", str(out)]) == 0
        assert "removed the lease of run run-held" in capsys.readouterr().out
        assert read_lease(str(out), StorageConfig()) is None
        assert main(["lease", "break", str(out)]) == 0
        assert f"no lease at {out}" in capsys.readouterr().out
    finally:
        lease.release()
