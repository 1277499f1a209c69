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

from condlabel.config import StorageConfig
from condlabel.runs.runstate import read_manifests
from condlabel.runs.scope import list_shards, read_started

SHARD_SEQ = re.compile(r"^part-s(\d+)-")


def shard_seq(path: str) -> int:
    """The seq in a shard's name (0 for shards written before runs had one)."""
    match = SHARD_SEQ.match(posixpath.basename(path))
    return int(match.group(1)) if match else 0


def largest_seq(output_uri: str, storage: StorageConfig) -> int:
    """The largest seq recorded under an output prefix (0 when none)."""
    manifests = (int(m.get("seq") or 0) for m in read_manifests(output_uri, storage))
    started = (r.seq for r in read_started(output_uri, storage))
    shards = (shard_seq(path) for path, _ in list_shards(output_uri, storage))
    return max((*manifests, *started, *shards), default=0)


def next_seq(output_uri: str, storage: StorageConfig) -> int:
    """This run's seq: call while holding the lease, so no other run takes the same."""
    return largest_seq(output_uri, storage) + 1
