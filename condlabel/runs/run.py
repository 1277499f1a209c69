"""The run facade: a conversion opens a run, records what it writes and closes it.

    open_run ─► lease ─► seq ─► rerun plan (ledger) ─► Ray when a file must be read ─►
                done check (scope, done index) + fingerprint guard ─► started record ─►
                manifest "running" ─► [the caller's graph] ─► ledger, manifest, lease released

Everything the data path needs from the bookkeeping is on the `Run` it yields: which files to
read, the done filter, the run's id and seq, the lease guard for the writer, and the summary to
count into. No Ray here but the session the caller hands in.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np

from condlabel.config import ConvertConfig
from condlabel.runs.donecheck import scan_output
from condlabel.runs.lease import Lease
from condlabel.runs.ledger import (
    RerunPlan,
    count_complete,
    record_ledger,
    rerun_plan,
)
from condlabel.runs.runstate import DoneIndex, OutputState, check_fingerprint
from condlabel.runs.scope import done_scope, write_started
from condlabel.runs.sequence import OutputListing, list_output
from condlabel.runs.summary import FileStats, RunSummary, new_run_id, recorded
from condlabel.storage import InputFile

log = logging.getLogger("condlabel")

RaySession = Callable[[], AbstractContextManager[Any]]


@dataclass
class Run:
    """One open run: what the graph reads, skips and writes under."""

    cfg: ConvertConfig
    summary: RunSummary
    plan: RerunPlan
    state: OutputState
    lease: Lease
    started: float
    """The run's start on the monotonic clock (display only)."""
    written: Counter[str] = field(default_factory=Counter)
    """Rows written per input file (from the shard list), for the ledger."""

    @property
    def run_id(self) -> str:
        return self.summary.run_id

    @property
    def seq(self) -> int:
        return self.summary.seq

    @property
    def to_read(self) -> list[InputFile]:
        return self.plan.to_read

    def finish(self, files: list[InputFile], stats: list[FileStats]) -> None:
        """After the graph ran: count it, and record the files now complete in the ledger."""
        self.summary.tally(stats)
        record_ledger(self.cfg, self.summary, self.plan, files, stats, self.written)


@contextmanager
def open_run(
    cfg: ConvertConfig,
    files: list[InputFile],
    fingerprint: str,
    run_id: str | None = None,
    allow_mixed: bool = False,
    ray_session: RaySession = nullcontext,
    attach_ray: bool = False,
    also_labelers: frozenset[str] = frozenset(),
    record: dict[str, Any] | None = None,
) -> Iterator[Run]:
    """Open a run over `cfg.output.uri` (see the module's picture); `ray_session` starts Ray
    when a file must be read, `attach_ray` lets a later run on the same cluster take the lease
    over once this job ends, `also_labelers`: fingerprints this run writes besides
    `fingerprint` (a cascade's teacher), which the fingerprint guard accepts; `record`: the
    summary's `tag_vocabulary` and `sample`, for the manifest."""
    run_id = run_id or new_run_id()
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lease = Lease(cfg.output.uri, run_id, cfg.storage, cfg.output.lease_ttl_s)
    lease.acquire()
    if lease.previous and lease.previous.get("run_id") != run_id:
        log.warning("took over the lease of run %s", lease.previous.get("run_id"))
    session = ExitStack()
    try:
        listing = list_output(cfg.output.uri, cfg.storage)  # under the lease: it stays true
        summary = RunSummary(
            run_id,
            cfg.output.uri,
            fingerprint,
            seq=listing.next_seq,
            input_files=len(files),
            input_bytes=sum(f.size for f in files),
            routed_to_teacher=0 if cfg.cascade.enabled else None,
            **(record or {}),
        )
        # Under the lease (nobody else adds rows now): files complete in the ledger are not
        # read, and the output is scanned (in Ray tasks) only when some file is.
        plan = rerun_plan(cfg, files, fingerprint)
        if plan.to_read:
            session.enter_context(ray_session())  # one Ray session for the scan and the graph
            if attach_ray:
                lease.attach_ray()
        state = output_state(cfg, fingerprint, allow_mixed, plan, files, listing, also_labelers)
        # Before the first shard: a later run then knows which shards may hold these files.
        write_started(cfg, run_id, plan.to_read, plan.fingerprint, fingerprint, seq=summary.seq)
        summary.rows_before = state.rows
        summary.shards_scanned = state.shards_scanned
        summary.seconds_planning = time.monotonic() - started
        with recorded(cfg, summary, files, state, started, started_at):
            log.info(
                "run %s (seq %d): %d input file(s), %.1f MB; %d file(s) to read",
                run_id,
                summary.seq,
                len(files),
                summary.input_bytes / 1e6,
                len(plan.to_read),
            )
            run = Run(cfg, summary, plan, state, lease, started)
            yield run
            if not plan.to_read:
                count_complete(summary, plan)
            elif not summary.shards_written:  # its labeler holds no rows here (the guard)
                write_started(
                    cfg, run_id, plan.to_read, plan.fingerprint, fingerprint, True, summary.seq
                )
    finally:
        lease.release()
        session.close()


def output_state(
    cfg: ConvertConfig,
    fingerprint: str,
    allow_mixed: bool,
    plan: RerunPlan,
    files: list[InputFile],
    listing: OutputListing,
    also_labelers: frozenset[str] = frozenset(),
) -> OutputState:
    """Scan the key columns of the shards that may hold chunks of `plan.to_read` once, in Ray
    tasks (the done index; `scope.py`), and apply the fingerprint guard; with no file to read
    (nothing to write) neither."""
    if not plan.to_read:
        return OutputState(0, DoneIndex(np.empty(0, np.int64)), {}, 0, scanned=False)
    scope = done_scope(cfg, plan, files, listing)
    state = scan_output(
        cfg.output.uri, cfg.storage, cfg.compute.num_cpus_per_reader, shards=scope.shards
    )
    state.scope = scope.mode
    # Not every shard read: the guard takes the labelers from the runs' started records.
    held, unit = (
        (state.labelers, "rows") if scope.shards is None else (scope.labelers, "files started")
    )
    labelers = {fp: n for fp, n in held.items() if fp not in also_labelers}
    check_fingerprint(fingerprint, labelers, allow_mixed, unit)
    return state
