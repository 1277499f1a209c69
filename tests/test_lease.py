"""The writer lease with real processes, on a local disk and on the S3 server process: a dead
holder's lease is taken over at once, a live one's refusal says when it expires, a writer that
was paused past its lease and lost it stops with exit 4, renewal never overwrites another run's
lease, and `break_lease` removes a lease."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from condlabel.runs.runstate import Lease, RunRefused, break_lease, read_lease
from condlabel.storage import resolve

HOLDER = str(Path(__file__).with_name("lease_holder.py"))


@pytest.fixture(params=["local", "s3"])
def output_uri(request, tmp_path) -> str:
    if request.param == "local":
        out = tmp_path / "out"
        out.mkdir()
        return str(out)
    return f"s3://{request.getfixturevalue('s3_bucket')}/out"


def start_holder(output: str, run_id: str, ttl_s: float, *extra: str) -> subprocess.Popen:
    """A process holding the lease of `output`; returns once it holds it."""
    proc = subprocess.Popen(
        [sys.executable, HOLDER, output, run_id, str(ttl_s), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "acquired":
        proc.kill()
        raise AssertionError(f"holder did not start: {line!r} {proc.stderr.read()}")
    return proc


def test_a_dead_holders_lease_is_taken_over_at_once(output_uri):
    holder = start_holder(output_uri, "run-killed", 300)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)

    started = time.monotonic()
    lease = Lease(output_uri, "run-next", None, ttl_s=300)
    lease.acquire()  # the dead run's lease still has ~300 s to live
    try:
        assert time.monotonic() - started < 10
        assert lease.previous["run_id"] == "run-killed"
        assert read_lease(output_uri)["run_id"] == "run-next"
    finally:
        lease.release()
    assert read_lease(output_uri) is None


def test_a_live_holders_lease_is_refused_with_its_expiry(output_uri):
    holder = start_holder(output_uri, "run-alive", 300)
    try:
        with pytest.raises(RunRefused) as refused:
            Lease(output_uri, "run-second", None, ttl_s=300).acquire()
        message = str(refused.value)
        assert "run-alive" in message and f"(pid {holder.pid})" in message
        assert "expires at" in message and " s) unless renewed" in message
        assert f"condlabel lease break {output_uri}" in message
        assert read_lease(output_uri)["run_id"] == "run-alive"  # untouched
    finally:
        holder.kill()
        holder.wait(10)


def test_a_writer_paused_past_its_lease_stops_with_exit_4(output_uri):
    writer = start_holder(output_uri, "run-paused", 2, "--writes", "400", "--interval", "0.05")
    time.sleep(0.5)
    writer.send_signal(signal.SIGSTOP)
    try:
        time.sleep(2.5)  # past its TTL: the lease may be taken over
        second = Lease(output_uri, "run-second", None, ttl_s=60)
        second.acquire()
        fs, root = resolve(output_uri)
        written_before = set(fs.find(root))
    finally:
        writer.send_signal(signal.SIGCONT)
    try:
        assert writer.wait(30) == 4, writer.stderr.read()
        assert "run-paused lost its lease" in writer.stderr.read()
        # Nothing written after the takeover, and the second run's lease was not overwritten.
        paused_writes = {p for p in fs.find(root) if "w-run-paused" in p}
        assert paused_writes <= written_before
        assert read_lease(output_uri)["token"] == second.token
        second.ensure_held()
    finally:
        second.release()


def test_renewal_never_overwrites_another_runs_lease(output_uri):
    first = Lease(output_uri, "run-first", None, ttl_s=60)
    first.acquire()
    first._stop.set()  # renew by hand below
    assert break_lease(output_uri)["run_id"] == "run-first"
    second = Lease(output_uri, "run-second", None, ttl_s=60)
    second.acquire()
    try:
        first.renew()
        assert read_lease(output_uri)["token"] == second.token
        with pytest.raises(RunRefused, match=r"run-first lost its lease .* to run run-second"):
            first.ensure_held()
        with pytest.raises(RunRefused, match="lost its lease"):
            first.guard().ensure_held()  # what a write task in another process checks
        second.guard().ensure_held()
        first.release()  # not ours any more: left in place
        assert read_lease(output_uri)["token"] == second.token
    finally:
        second.release()


def test_only_one_of_many_simultaneous_starters_gets_the_lease(output_uri):
    starters = [Lease(output_uri, f"run-{i}", None, ttl_s=60) for i in range(6)]
    barrier = threading.Barrier(len(starters))
    won: list[Lease] = []

    def start(lease: Lease) -> None:
        barrier.wait()
        try:
            lease.acquire()
            won.append(lease)
        except RunRefused:
            pass

    threads = [threading.Thread(target=start, args=(lease,)) for lease in starters]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert len(won) == 1
        assert read_lease(output_uri)["token"] == won[0].token
    finally:
        for lease in won:
            lease.release()


def test_break_lease_removes_whatever_lease_is_there(output_uri):
    assert break_lease(output_uri) is None
    holder = start_holder(output_uri, "run-stuck", 300)
    try:
        broken = break_lease(output_uri)
        assert broken["run_id"] == "run-stuck" and broken["pid"] == holder.pid
        assert read_lease(output_uri) is None
        lease = Lease(output_uri, "run-after", None, ttl_s=60)
        lease.acquire()
        lease.release()
    finally:
        holder.kill()
        holder.wait(10)


def test_an_unreadable_lease_is_taken_over(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "_lease.json").write_text("{not json")
    lease = Lease(str(out), "run-new", None, ttl_s=60)
    lease.acquire()
    assert json.loads((out / "_lease.json").read_text())["run_id"] == "run-new"
    lease.release()
    assert not (out / "_lease.json").exists()
    assert os.listdir(out) == []  # no lock or temporary file left behind


@pytest.mark.usefixtures("ray_local")
def test_a_lease_whose_ray_job_ended_is_taken_over_from_another_machine(tmp_path):
    """The holder names another machine, so its pid proves nothing; its Ray job does."""
    import ray

    out = str(tmp_path / "out")
    gcs = ray.get_runtime_context().gcs_address
    holder = start_holder(out, "run-job", 300, "--ray", gcs, "--foreign-host")
    try:
        assert read_lease(out)["ray"]["gcs_address"] == gcs
        with pytest.raises(RunRefused, match="run-job"):
            Lease(out, "run-early", None, ttl_s=300).acquire()  # its job is alive
    finally:
        holder.kill()
        holder.wait(10)
    lease = Lease(out, "run-next", None, ttl_s=300)
    deadline = time.monotonic() + 60  # Ray ends the job once it sees the driver gone
    while True:
        try:
            lease.acquire()
            break
        except RunRefused:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)
    try:
        assert lease.previous["run_id"] == "run-job"
        assert read_lease(out)["run_id"] == "run-next"
    finally:
        lease.release()


def test_a_write_made_after_the_lease_was_lost_is_removed(tmp_path):
    out = str(tmp_path / "out")
    lease = Lease(out, "run-a", None, ttl_s=300)
    lease.acquire()
    guard = lease.guard()
    kept, late = Path(out, "kept.parquet"), Path(out, "late.parquet")
    kept.write_bytes(b"x")
    guard.confirm_written(str(kept))  # still held: the write stays
    assert kept.exists()
    break_lease(out)  # taken from it while it was writing
    late.write_bytes(b"x")
    with pytest.raises(RunRefused, match="run-a lost its lease"):
        guard.confirm_written(str(late))
    assert not late.exists() and kept.exists()
    lease.release()


def test_a_lease_read_during_a_renewal_is_not_taken_for_removed(tmp_path):
    """A local renewal moves the lease aside (rename) before linking the new one in. A write
    task's check that lands in between must wait for the swap, not stop a healthy run (CI saw
    `lost its lease ... (it was removed)` on a run nobody else touched)."""
    from condlabel.runs.lease import lease_store

    out = tmp_path / "out"
    out.mkdir()
    lease = Lease(str(out), "run-a", None, ttl_s=60)
    lease.acquire()
    store, _ = lease_store(str(out), None)
    path = out / "_lease.json"
    taken = out / ".taken-0123-_lease.json"
    os.rename(path, taken)  # the first half of a swap, as `_take` does it

    def finish_swap() -> None:
        time.sleep(0.1)
        os.link(taken, path)
        os.unlink(taken)

    threading.Thread(target=finish_swap).start()
    held = read_lease(str(out), None)
    assert held is not None and held["run_id"] == "run-a"
    assert store.read() is not None
    lease.release()


def test_a_swap_left_half_done_reads_as_no_lease(tmp_path):
    """A process stopped between the two halves of a swap leaves `.taken-*` and no lease: a
    read waits a moment, then reports no lease (the next run takes it), instead of hanging."""
    out = tmp_path / "out"
    out.mkdir()
    (out / ".taken-dead-_lease.json").write_text("{}")
    started = time.monotonic()
    assert read_lease(str(out), None) is None
    assert time.monotonic() - started < 5


def test_a_stale_half_done_swap_is_removed_and_costs_no_wait(tmp_path, monkeypatch):
    """A `.taken-*` older than STALE_SWAP_S is a leftover, not a swap: the first read removes
    it, so no later read waits for it (each used to wait 0.5 s). A recent one is left alone:
    it may be a renewal in progress."""
    from condlabel.runs import lease as lease_module

    out = tmp_path / "out"
    out.mkdir()
    recent = out / ".taken-live-_lease.json"
    recent.write_text("{}")
    assert read_lease(str(out), None) is None
    assert recent.exists()  # younger than STALE_SWAP_S: kept

    monkeypatch.setattr(lease_module, "STALE_SWAP_S", 0.05)
    time.sleep(0.1)
    assert read_lease(str(out), None) is None
    assert not recent.exists()
    lease = Lease(str(out), "run-b", None, ttl_s=60)
    lease.acquire()
    assert read_lease(str(out), None)["run_id"] == "run-b"
    lease.release()


def test_reads_never_miss_a_lease_renewed_over_and_over(tmp_path):
    """Renewals in a tight loop in one thread, lease reads in another: every read finds it."""
    out = tmp_path / "out"
    out.mkdir()
    lease = Lease(str(out), "run-a", None, ttl_s=60)
    lease.acquire()
    stop = threading.Event()

    def renew_forever() -> None:
        while not stop.is_set():
            lease.renew()

    renewer = threading.Thread(target=renew_forever)
    renewer.start()
    try:
        missed = sum(read_lease(str(out), None) is None for _ in range(2000))
    finally:
        stop.set()
        renewer.join()
    assert not lease.lost, lease.lost
    assert missed == 0
    lease.release()
