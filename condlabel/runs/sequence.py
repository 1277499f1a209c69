"""Each run's `seq`: 1 + the largest any earlier run recorded, taken under the writer lease.

The rows carry it and readers order versions by it (`condlabel.current`), so the order of runs
never depends on a clock. It is recorded in three places before or as a run writes: its
manifest (written as "running" before any shard), its started record, and the name of every
shard it writes (`part-s<seq>-...`). Losing the bookkeeping still leaves the shard names, so a
later run's seq is always larger than that of every row in the output. No Ray here.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any

from condlabel.config import StorageConfig
from condlabel.runs.runstate import read_manifests
from condlabel.runs.scope import Started, list_shards, read_started

SHARD_SEQ = re.compile(r"^part-s(\d+)-")


def shard_seq(path: str) -> int:
    """The seq in a shard's name (0 for shards written before runs had one)."""
    match = SHARD_SEQ.match(posixpath.basename(path))
    return int(match.group(1)) if match else 0


@dataclass(frozen=True)
class OutputListing:
    """What a run reads of an output's bookkeeping, once, under the lease: the started records,
    the data shards with their listing time, and the manifests. Both the seq and the done
    check's scope come from it (nothing is added to the output while the lease is held)."""

    started: list[Started]
    shards: list[tuple[str, float | None]]
    manifests: list[dict[str, Any]]

    @property
    def manifest_runs(self) -> list[str]:
        return [str(m.get("run_id")) for m in self.manifests]

    @property
    def largest_seq(self) -> int:
        """The largest seq recorded in any of the three places (0 when none)."""
        manifests = (int(m.get("seq") or 0) for m in self.manifests)
        started = (r.seq for r in self.started)
        shards = (shard_seq(path) for path, _ in self.shards)
        return max((*manifests, *started, *shards), default=0)

    @property
    def next_seq(self) -> int:
        """The seq of a run that holds the lease: no other run takes the same."""
        return self.largest_seq + 1


def list_output(output_uri: str, storage: StorageConfig) -> OutputListing:
    return OutputListing(
        read_started(output_uri, storage),
        list_shards(output_uri, storage),
        read_manifests(output_uri, storage),
    )
