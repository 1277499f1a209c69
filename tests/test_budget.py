"""The labeler call budget (`condlabel.convert.budget`): what a retry does with the chunks a dead
call left behind, and a watchdog that really ends its process."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pyarrow as pa
import pytest

from condlabel.convert.budget import (
    ALONE,
    BATCH,
    EXIT_OVER_BUDGET,
    REJECT_CRASH,
    REJECT_TIMEOUT,
    TIMEOUT,
    InFlight,
    chunk_keys,
    label_with_budget,
)
from condlabel.convert.stages import READ_SCHEMA


def _chunks(n: int) -> pa.Table:
    return pa.Table.from_pydict(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "chunk_index": [0] * n,
            "num_chunks": [1] * n,
            "source": ["s3://b/in.jsonl"] * n,
            "doc_hash": [f"h{i}" for i in range(n)],
            "num_words": [3] * n,
            "text": [f"text number {i}" for i in range(n)],
            "_position": list(range(1, n + 1)),
        },
        schema=READ_SCHEMA,
    )


class Recorder:
    """A label function that records the batches it was given (labels: the text's length)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, table: pa.Table) -> tuple[pa.Table, list]:
        self.calls.append(table.column("doc_id").to_pylist())
        lengths = [len(t) for t in table.column("text").to_pylist()]
        return table.append_column("label", pa.array(lengths)), []


def test_a_first_attempt_labels_the_batch_once_and_leaves_nothing_in_flight():
    table, tracker, label = _chunks(4), InFlight(), Recorder()
    labeled, rejects = label_with_budget(label, table, 5.0, tracker)
    assert label.calls == [["d0", "d1", "d2", "d3"]]
    assert labeled.num_rows == 4 and rejects == []
    assert tracker.state == {}


def test_a_retry_after_a_dead_batch_labels_its_chunks_one_at_a_time():
    table, tracker, label = _chunks(3), InFlight(), Recorder()
    tracker.begin(chunk_keys(table), BATCH)  # an attempt that never returned
    labeled, rejects = label_with_budget(label, table, 5.0, tracker)
    assert label.calls == [["d0"], ["d1"], ["d2"]]
    assert sorted(labeled.column("doc_id").to_pylist()) == ["d0", "d1", "d2"]
    assert rejects == [] and tracker.state == {}


def test_chunks_that_died_alone_are_rejected_with_their_bytes_and_the_rest_is_labeled():
    table, tracker, label = _chunks(4), InFlight(), Recorder()
    keys = chunk_keys(table)
    tracker.begin(keys[:3], BATCH)  # d3 came with a new batch mate
    tracker.begin([keys[0]], ALONE)  # died alone: a crash
    tracker.timed_out([keys[1]])  # overran alone
    labeled, rejects = label_with_budget(label, table, 5.0, tracker)
    assert label.calls == [["d3"], ["d2"]]  # the new chunk with its batch, the suspect alone
    assert sorted(labeled.column("doc_id").to_pylist()) == ["d2", "d3"]
    by_reason = {r.reason: r for r in rejects}
    assert set(by_reason) == {REJECT_CRASH, REJECT_TIMEOUT}
    assert by_reason[REJECT_TIMEOUT].raw == b"text number 1"
    assert "5s" in by_reason[REJECT_TIMEOUT].detail and "'d1'" in by_reason[REJECT_TIMEOUT].detail
    assert by_reason[REJECT_CRASH].position == 1
    assert tracker.state == {}


def test_a_verdict_is_never_downgraded_by_a_later_attempt():
    tracker = InFlight()
    tracker.begin(["k"], ALONE)
    tracker.timed_out(["k"])
    assert tracker.begin(["k"], BATCH) == {"k": TIMEOUT}
    assert tracker.state == {"k": TIMEOUT}


def test_the_watchdog_marks_then_ends_its_process(tmp_path):
    marker = tmp_path / "marked"
    script = textwrap.dedent(
        f"""
        import time
        from pathlib import Path
        from condlabel.convert.budget import Watchdog
        with Watchdog(0.5, lambda: Path({str(marker)!r}).write_text("yes")):
            time.sleep(30)
        """
    )
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == EXIT_OVER_BUDGET, done.stderr
    assert time.perf_counter() - started < 20
    assert marker.read_text() == "yes"
    assert "compute.label_timeout_s" in done.stderr


def test_a_call_within_its_budget_is_not_ended(tmp_path):
    script = textwrap.dedent(
        """
        import time
        from condlabel.convert.budget import Watchdog
        for _ in range(3):
            with Watchdog(1.0, lambda: None):
                time.sleep(0.4)
        time.sleep(1.0)  # past the budget, outside the block
        print("survived")
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "survived"


@pytest.mark.slow
def test_a_device_stuck_with_the_gil_held_is_cut_and_its_chunk_rejected(tiny_t5, tmp_path):
    """compute.label_timeout_s against a stuck device: the real hf labeler whose generate call
    never returns and holds the GIL. Each attempt ends (no hang) within the budget plus the
    hard stop's grace; the retry labels the batch's chunks alone; the stuck chunk, having
    killed its call alone, is rejected; the others are labeled."""
    import json
    import os
    from pathlib import Path

    from simulated_device import STALL

    texts = ["A chunk about classes and their instances.", f"A {STALL} chunk.", "A third one."]
    state, out = tmp_path / "state.json", tmp_path / "out.json"
    script = Path(__file__).with_name("stuck_device.py")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(script.parent.parent), str(script.parent)]),
    }
    attempts = []
    for _ in range(3):
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(script), str(tiny_t5), str(state), str(out), "2", *texts],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,  # a hang fails the test instead of blocking it
        )
        attempts.append((done.returncode, json.loads(state.read_text())))
        if done.returncode == 0:
            break
        assert "_generate" in done.stderr  # faulthandler's dump shows where it was stuck
        assert time.perf_counter() - started < 240
    codes = [code for code, _ in attempts]
    assert codes == [1, 1, 0], [(c, s) for c, s in attempts]  # batch dies, stuck chunk dies alone
    assert set(attempts[0][1].values()) == {BATCH}
    assert attempts[1][1] == {"d1\x1fh1\x1f0": ALONE, "d2\x1fh2\x1f0": BATCH}
    result = json.loads(out.read_text())
    assert sorted(result["labeled"]) == ["d0", "d2"]
    assert result["rejects"] == {"doc 'd1' chunk 0": REJECT_CRASH}
