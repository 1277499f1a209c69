"""The done check of a run, built by Ray tasks: which chunks are already in the output.

    output shards ──(task per group: read the key columns, hash them, split by document)──►
        P partitions per task ──(task per partition: the latest-version rule)──► sorted keys

Partitions are by document id, so every version of a document meets in one task and the
latest-version rule (`runstate.latest_chunk_keys`, the same as `readback.latest_keys`) holds
per partition. The driver lists the shards and holds only object refs and counts; the index
stays in the object store (8 bytes per chunk) and each read task fetches it zero-copy.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import StorageConfig
from condlabel.readback import tagged_dataset
from condlabel.runs.runstate import (
    DoneIndex,
    OutputState,
    chunk_key,
    hashed_keys,
    latest_chunk_keys,
    string_hashes,
    version_hashes,
)
from condlabel.schema import KEY_SCHEMA
from condlabel.storage import resolve, split_uri

# Shards whose key columns one task reads; partitions of the index (each one task's work).
SHARDS_PER_TASK = 64
MAX_PARTITIONS = 32


class PartitionedDone:
    """The done filter read tasks call: (doc_id, doc_hash, chunk_index) -> already written.
    Holds object refs to the partitions; a task fetches them on its first question."""

    def __init__(self, refs: list[Any], size: int):
        self.refs = refs
        self.size = size
        self._parts: list[DoneIndex] | None = None
        self._last: tuple[str, str, int, int] = ("", "", 0, 0)

    def __len__(self) -> int:
        return self.size

    def __getstate__(self) -> dict[str, Any]:
        return {"refs": self.refs, "size": self.size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["refs"], state["size"])  # type: ignore[misc]

    def __call__(self, doc_id: str, doc_hash: str, chunk_index: int) -> bool:
        if not self.size:
            return False
        if self._parts is None:
            import ray

            self._parts = [DoneIndex(h, sorted_unique=True) for h in ray.get(self.refs)]
        if self._last[:2] != (doc_id, doc_hash):
            # One document's chunks are asked about in turn: hash its id and version once.
            part = int(string_hashes(pa.array([doc_id]))[0]) % len(self._parts)
            version = int(version_hashes(pa.array([doc_id]), pa.array([doc_hash]))[0])
            self._last = (doc_id, doc_hash, part, version)
        return self._parts[self._last[2]].contains(chunk_key(self._last[3], chunk_index))


def scan_output(
    output_uri: str,
    storage: StorageConfig,
    num_cpus: float = 0.5,
    shards_per_task: int = SHARDS_PER_TASK,
    shards: list[str] | None = None,
) -> OutputState:
    """The output's done index and counts, built by Ray tasks (call within a Ray session).
    `shards`: only these (the done check's scope, `condlabel.runs.scope`); None: all."""
    import ray

    if shards is None:
        fs, path = resolve(output_uri, storage)
        shards = list(tagged_dataset(output_uri, storage).files) if fs.exists(path) else []
    if not shards:
        return OutputState(0, PartitionedDone([], 0), {}, 0)
    groups = [shards[i : i + shards_per_task] for i in range(0, len(shards), shards_per_task)]
    partitions = max(1, min(MAX_PARTITIONS, len(groups)))
    scheme = split_uri(output_uri)[0]

    split = ray.remote(_hash_and_split).options(num_returns=partitions + 1, num_cpus=num_cpus)
    # With num_returns, each call gives a list of refs: its partitions, then its label counts.
    parts: list[list[Any]] = [
        cast(list, split.remote(group, scheme, storage, partitions)) for group in groups
    ]
    latest = ray.remote(_latest_partition).options(num_returns=2, num_cpus=num_cpus)
    built = [cast(list, latest.remote(*(p[i] for p in parts))) for i in range(partitions)]

    labelers: Counter[str] = Counter()
    for counts in ray.get([p[partitions] for p in parts]):
        labelers.update(counts)
    stats = ray.get([b[1] for b in built])
    size = sum(s["keys"] for s in stats)
    return OutputState(
        rows=sum(labelers.values()),
        done=PartitionedDone([b[0] for b in built], size),
        labelers=dict(labelers),
        duplicate_keys=sum(s["duplicates"] for s in stats),
        shard_paths=list(shards),
    )


def _hash_and_split(
    paths: list[str], scheme: str, storage: StorageConfig, partitions: int
) -> tuple[Any, ...]:
    """One task: the key columns of a group of shards, hashed and split by document id; last,
    the rows per labeler fingerprint."""
    import pyarrow.dataset as pads

    from condlabel.storage import filesystem

    fs = filesystem(scheme, storage)
    table = pads.dataset(paths, format="parquet", filesystem=fs, schema=KEY_SCHEMA).to_table()
    keys = hashed_keys(table)
    which = keys.column("id").to_numpy() % np.uint64(partitions)
    out: list[Any] = [keys.filter(pa.array(which == p)) for p in range(partitions)]
    out.append(
        {d["values"]: d["counts"] for d in pc.value_counts(table.column("labeler")).to_pylist()}
    )
    return tuple(out)


def _latest_partition(*parts: pa.Table) -> tuple[np.ndarray, dict[str, int]]:
    """One task per partition: the sorted keys of its documents' latest versions, and counts."""
    keys, duplicates = latest_chunk_keys(pa.concat_tables(parts))
    return keys, {"keys": int(keys.size), "duplicates": duplicates}
