"""What one labeler call may cost: a time budget, and a chunk that kills its actor.

A labeler call cannot be interrupted inside its actor (a CUDA kernel or a C extension does not
yield), so a call that overruns `compute.label_timeout_s` ends the actor process; Ray Data's
actor pools restart the actor and retry the batch (their default). The same holds for a chunk
that crashes the process (a segfault, the OOM killer). Before each call the actor records the
chunks it holds in the run's counter actor (`InFlight`), and the retry reads what the dead
attempt left:

    a batch died            -> its chunks are labeled one at a time
    a chunk alone overran   -> `_rejects/` as `labeler_timeout`
    a chunk alone died      -> `_rejects/` as `labeler_crash`

so one chunk costs at most two restarts of one actor, and the rest of its batch is labeled. A
reject is not in the output, so the next run tries the chunk again.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import pyarrow as pa

from condlabel.convert.reading import Reject
from condlabel.convert.stages import empty_labeled

Label = Callable[[pa.Table], tuple[pa.Table, list[Reject]]]
"""Labels a chunk table: (labeled rows, rejects), e.g. `stages.label_or_reject`."""


class Tracker(Protocol):
    """Where calls are recorded: `InFlight` itself, or `RemoteTracker` over the counter actor."""

    def begin(self, keys: list[str], state: str) -> dict[str, str]: ...
    def end(self, keys: list[str]) -> None: ...
    def timed_out(self, keys: list[str]) -> None: ...


log = logging.getLogger(__name__)

BATCH, ALONE, TIMEOUT = "batch", "alone", "timeout"
_RANK = {BATCH: 0, ALONE: 1, TIMEOUT: 2}
REJECT_TIMEOUT = "labeler_timeout"
REJECT_CRASH = "labeler_crash"
# Exit status of an actor that ended itself over its budget (Ray restarts it whatever the code).
EXIT_OVER_BUDGET = 75
# A call stuck in C code that holds the GIL never lets the timer thread run; faulthandler's own
# thread does not need the GIL and ends the process this much later (without marking the chunk
# `timeout`, so it is rejected as a crash).
HARD_GRACE_S = 60.0


def chunk_keys(table: pa.Table) -> list[str]:
    """One key per chunk row: its document id, version and index."""
    cols = [table.column(n).to_pylist() for n in ("doc_id", "doc_hash", "chunk_index")]
    return [f"{d}\x1f{h}\x1f{i}" for d, h, i in zip(*cols, strict=True)]


@dataclass
class InFlight:
    """The chunks each live labeler call holds, and what became of calls that never returned.
    Held by the run's counter actor: it outlives the labeler actors."""

    state: dict[str, str] = field(default_factory=dict)

    def begin(self, keys: list[str], state: str) -> dict[str, str]:
        """Record a call over `keys`; return what earlier attempts left for them. A state
        only moves forward (batch, alone, timeout), so a retry never forgets a verdict."""
        previous = {k: self.state[k] for k in keys if k in self.state}
        for k in keys:
            if _RANK[state] > _RANK.get(self.state.get(k, ""), -1):
                self.state[k] = state
        return previous

    def end(self, keys: list[str]) -> None:
        for k in keys:
            self.state.pop(k, None)

    def timed_out(self, keys: list[str]) -> None:
        self.state.update(dict.fromkeys(keys, TIMEOUT))


class Watchdog:
    """Ends this process when the block takes longer than `seconds`, after `on_expire` ran
    (it marks the chunks in the counter actor). `seconds=None`: no budget."""

    def __init__(self, seconds: float | None, on_expire: Callable[[], None]):
        self.seconds = seconds
        self.on_expire = on_expire
        self._timer: threading.Timer | None = None

    def __enter__(self) -> Watchdog:
        if self.seconds:
            self._timer = threading.Timer(self.seconds, self._expire)
            self._timer.daemon = True
            self._timer.start()
            faulthandler.dump_traceback_later(self.seconds + HARD_GRACE_S, exit=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
            faulthandler.cancel_dump_traceback_later()

    def _expire(self) -> None:
        try:
            self.on_expire()
        finally:
            log.error(
                "labeler call over its budget of %gs (compute.label_timeout_s): ending the "
                "actor; Ray restarts it and the chunks are tried alone",
                self.seconds,
            )
            sys.stderr.flush()
            os._exit(EXIT_OVER_BUDGET)


def budget_reject(chunk: dict, state: str, budget_s: float | None) -> Reject:
    """The reject of a chunk whose call, alone, never returned."""
    where = f"doc {chunk['doc_id']!r} chunk {chunk['chunk_index']}"
    if state == TIMEOUT:
        reason = REJECT_TIMEOUT
        detail = (
            f"{where}: labeling it alone took more than {budget_s:g}s (compute.label_timeout_s)"
        )
    else:
        reason = REJECT_CRASH
        detail = (
            f"{where}: the labeler actor died while labeling it alone (crash, OOM or lost node)"
        )
    return Reject(
        chunk["source"], chunk["_position"], "text", reason, detail, chunk["text"].encode("utf-8")
    )


def split_by_attempts(
    keys: list[str], previous: dict[str, str]
) -> tuple[list[int], list[int], list[tuple[int, str]]]:
    """Row indices of a batch: (label together, label alone, reject with the dead call's state)."""
    together, alone, rejected = [], [], []
    for i, key in enumerate(keys):
        state = previous.get(key)
        if state is None:
            together.append(i)
        elif state == BATCH:
            alone.append(i)
        else:
            rejected.append((i, state))
    return together, alone, rejected


def label_with_budget(
    label: Label, table: pa.Table, budget_s: float | None, tracker: Tracker
) -> tuple[pa.Table, list[Reject]]:
    """`label(table)` under the budget, using what earlier attempts at this batch left."""
    keys = chunk_keys(table)
    previous = tracker.begin(keys, BATCH)
    if not previous:  # the usual case: a first attempt
        with Watchdog(budget_s, lambda: None):  # the keys stay `batch`: the retry splits them
            out = label(table)
        tracker.end(keys)
        return out
    together, alone, dead = split_by_attempts(keys, previous)
    if dead:
        log.warning("%d chunk(s) killed their labeler call alone; rejecting them", len(dead))
    rejects = [budget_reject(_row(table, i), state, budget_s) for i, state in dead]
    tracker.end([keys[i] for i, _ in dead])
    parts: list[pa.Table] = []
    if together:
        with Watchdog(budget_s, lambda: None):
            labeled, failed = label(table.take(together))
        parts.append(labeled)
        rejects += failed
        tracker.end([keys[i] for i in together])
    for i in alone:
        key = [keys[i]]
        tracker.begin(key, ALONE)
        with Watchdog(budget_s, partial(tracker.timed_out, key)):
            labeled, failed = label(table.slice(i, 1))
        parts.append(labeled)
        rejects += failed
        tracker.end(key)
    return (pa.concat_tables(parts) if parts else empty_labeled(table)), rejects


def _row(table: pa.Table, i: int) -> dict:
    return table.slice(i, 1).to_pylist()[0]


class RemoteTracker:
    """`Tracker` over an actor that holds an `InFlight` (the run's counter actor)."""

    def __init__(self, actor: Any):
        self.actor = actor

    def begin(self, keys: list[str], state: str) -> dict[str, str]:
        import ray

        return ray.get(self.actor.begin.remote(keys, state))

    def end(self, keys: list[str]) -> None:
        self.actor.end.remote(keys)  # ordered after this caller's earlier calls; no need to wait

    def timed_out(self, keys: list[str]) -> None:
        import ray

        ray.get(self.actor.timed_out.remote(keys))
