"""Every exit code the README documents, one case (or several) each, through `condlabel` itself:
the table in the README and what the commands return must agree. All cases stop before Ray."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args

import condlabel.cli
from condlabel.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def documented_codes() -> set[int]:
    """The codes in the README's exit-code table (rows `| N | meaning |`)."""
    text = README.read_text()
    table = text[text.index("Exit codes (") :].split("\n\n")[1]
    return {int(m) for m in re.findall(r"^\| (\d+) \|", table, flags=re.MULTILINE)}


def _src(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "in" / "a.jsonl", make_docs(1, "a"))


def _pickle_only_model(tmp_path: Path) -> Path:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"never unpickled")
    return model


def _raising(exc: BaseException):
    def handler(args):
        raise exc

    return handler


# (name, expected code, function(tmp_path, monkeypatch) -> argv); every documented code appears.
CASES = [
    ("success", 0, lambda t, m: ["config"]),
    ("unknown key", 2, lambda t, m: ["config", "--set", "chunking.max_word=5"]),
    ("no --input", 2, lambda t, m: ["convert", "--output", str(t / "out")]),
    ("missing path", 2, lambda t, m: convert_args([t / "nowhere.jsonl"], t / "out")),
    ("glob matching nothing", 2, lambda t, m: convert_args([t / "*.jsonl"], t / "out")),
    (
        "unsupported input kind",
        2,
        lambda t, m: convert_args([_write(t / "table.csv", "a,b\n")], t / "out"),
    ),
    ("output inside the input", 2, lambda t, m: convert_args([t / "in"], t / "in" / "out")),
    (
        "missing extra",
        2,
        lambda t, m: (
            m.setitem(sys.modules, "vaderSentiment", None),
            convert_args([t / "in"], t / "out", "classifiers=[{backend: vader}]"),
        )[1],
    ),
    (
        "model without safetensors",
        2,
        lambda t, m: convert_args(
            [t / "in"],
            t / "out",
            "labeler.backend=hf",
            f"labeler.hf.model={_pickle_only_model(t)}",
        ),
    ),
    ("unwritable output", 3, lambda t, m: convert_args([t / "in"], _write(t / "f", "x") / "out")),
    ("lease held by another run", 4, lambda t, m: _held_lease_args(t, m)),
    (
        "anything else",
        1,
        lambda t, m: (
            m.setitem(condlabel.cli.COMMANDS, "lease", (_lease_flags(), _raising(RuntimeError()))),
            ["lease", "break", str(t)],
        )[1],
    ),
    (
        "interrupted",
        130,
        lambda t, m: (
            m.setitem(
                condlabel.cli.COMMANDS, "lease", (_lease_flags(), _raising(KeyboardInterrupt()))
            ),
            ["lease", "break", str(t)],
        )[1],
    ),
]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _lease_flags():
    return condlabel.cli.COMMANDS["lease"][0]


def _held_lease_args(tmp_path: Path, monkeypatch) -> list[str]:
    from condlabel.config import StorageConfig
    from condlabel.runs.runstate import Lease

    out = tmp_path / "out"
    out.mkdir()
    lease = Lease(str(out), "run-held", StorageConfig(), ttl_s=600)
    lease.acquire()  # held by this (live) process: another run is refused
    return convert_args([tmp_path / "in"], out)


def test_every_documented_exit_code_has_a_case():
    assert documented_codes() == {code for _, code, _ in CASES} | {141}


@pytest.mark.parametrize("name,code,argv", CASES, ids=[c[0] for c in CASES])
def test_exit_code(name, code, argv, tmp_path, monkeypatch, capsys):
    _src(tmp_path)
    assert main(argv(tmp_path, monkeypatch)) == code, capsys.readouterr().err[-2000:]
    err = capsys.readouterr().err
    if code:
        assert err.strip(), f"{name}: no reason printed"
    if code == 2 and name != "unknown key":
        assert not (tmp_path / "out").exists(), f"{name}: the output was created"


@pytest.mark.parametrize("command", [["config"], ["status", "{out}", "--json"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(command, tmp_path):
    """`condlabel status OUT --json | head`: no BrokenPipeError, exit 141 as a Unix tool."""
    out = tmp_path / "out"
    out.mkdir()
    argv = [a.format(out=out) for a in command]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before a byte is written
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "condlabel.cli", *argv],
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
    finally:
        os.close(write_end)
    err = done.stderr.decode()
    assert done.returncode == 141, err
    assert "BrokenPipe" not in err and "Traceback" not in err and "Exception ignored" not in err
