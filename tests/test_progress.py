"""What a conversion prints while it runs: condlabel's progress, not Ray's logs (unless -v)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import FREQUENT_PROGRESS, convert_args

from condlabel.runs.progress import Progress, chunks_to_label, eta_text
from condlabel.runs.summary import FileStats, RunSummary

# Ray Data's own console output: its start/finish lines and its periodic progress log.
RAY_DATA_LINES = ("Starting execution of Dataset", "Total Progress", "logging_progress.py")


def summary_of(files: int, input_bytes: int, written: int = 0) -> RunSummary:
    return RunSummary(
        "run", "out", "labeler", input_files=files, input_bytes=input_bytes, rows_written=written
    )


def test_chunks_to_label_extrapolate_from_the_files_read():
    stats = [FileStats("a", chunks=12, skipped_done=2, bytes=100)]
    assert chunks_to_label(summary_of(2, 300), []) is None
    assert chunks_to_label(summary_of(2, 300), stats) == (30, True)
    assert chunks_to_label(summary_of(1, 100), stats) == (10, False)
    assert eta_text(summary_of(2, 300, written=10), stats, elapsed=5.0) == "ETA ~10 s (10/~30)"
    assert eta_text(summary_of(2, 300), stats, elapsed=5.0) == "ETA unknown"


def test_on_a_terminal_one_bar_shows_chunks_rate_eta_and_files(capsys):
    summary = summary_of(2, 200)
    stats = [FileStats("a", chunks=8, bytes=100)]
    with Progress(summary, 0.0, 60.0, lambda: stats, bar=True) as progress:
        progress.interval_s = 0.0  # ask for the stats at every update
        for written in (2, 4, 6):
            summary.rows_written = written
            progress.update()
    err = capsys.readouterr().err
    final = err.replace("\r", "\n").strip().splitlines()[-1]
    assert final.startswith("labeling:") and "6/16" in final
    assert "chunks/s" in final and "1/2 files read" in final
    assert "progress:" not in err  # the bar replaces the log lines


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`condlabel ...` as a user runs it (stdout and stderr are pipes: not a terminal)."""
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_DATA_DISABLE_PROGRESS_BARS", None)  # Ray Data's defaults, as a user has them
    exe = Path(sys.executable).parent / "condlabel"
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@pytest.mark.parametrize("verbose", [False, True], ids=["default", "verbose"])
def test_console_has_condlabel_progress_and_ray_logs_only_when_verbose(tmp_path, verbose):
    src = write_jsonl(tmp_path / "in.jsonl", make_docs(12, "p"))
    args = convert_args([src], tmp_path / "out", *FREQUENT_PROGRESS, "compute.num_cpus=2")
    proc = run_cli(*(["-v"] if verbose else []), *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "succeeded" in proc.stdout and "chunks/s" in proc.stdout  # the summary
    progress = [line for line in proc.stderr.splitlines() if "progress:" in line]
    assert progress and all("chunks/s" in line and "ETA" in line for line in progress)
    for ray_line in RAY_DATA_LINES[:2]:
        assert (ray_line in console) == verbose, ray_line
    if not verbose:
        assert not any(line in console for line in RAY_DATA_LINES)
        assert "Started a local Ray instance" not in console


def test_incremental_runs_count_files_read_and_show_slow_rates():
    from condlabel.runs.progress import chunks_to_label, eta_text
    from condlabel.runs.summary import RunSummary, rate_text

    # 10 input files, 8 complete in the ledger: the ETA counts the 2 files the run reads.
    summary = RunSummary("r", "out", "fp", input_files=10, input_bytes=1000, rows_written=53)
    stats = [FileStats("a", chunks=60, skipped_done=7, bytes=100)]
    assert chunks_to_label(summary, stats, files=(2, 200)) == (106, True)
    assert chunks_to_label(summary, stats + [FileStats("b", chunks=1, bytes=100)], (2, 200)) == (
        54,
        False,
    )
    assert "53/54" in eta_text(summary, stats + [FileStats("b", chunks=1, bytes=100)], 5, (2, 200))
    assert rate_text(1 / 40) == "0.025" and rate_text(12.34) == "12.3" and rate_text(0) == "0.0"
    summary.documents, summary.documents_not_read = 100, 90
    assert "100 (10 read, 90 in files not read)" in "\n".join(summary.lines())
