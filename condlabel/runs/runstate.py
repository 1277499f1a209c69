"""What makes runs resumable and safe: the done index, the fingerprint guard, the run manifest
and `status`; the writer lease is in `lease.py` (its names are re-exported here). The output
prefix is the source of truth; nothing here needs Ray.
"""

from __future__ import annotations

import json
import platform
import posixpath
import time
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from condlabel.classifiers import classifier_backend, registered_classifiers
from condlabel.config import StorageConfig
from condlabel.current import ORDER, current_versions, order_keys
from condlabel.labelers import backend, registered
from condlabel.readback import tagged_dataset
from condlabel.runs.holder import holder_is_dead

# Re-exported (`X as X`): the pipeline, the CLI and tests import the lease from here.
from condlabel.runs.lease import Lease as Lease
from condlabel.runs.lease import LeaseGuard as LeaseGuard
from condlabel.runs.lease import RunRefused, read_lease
from condlabel.runs.lease import break_lease as break_lease
from condlabel.schema import KEY_COLUMNS, MANIFEST_DIR
from condlabel.storage import resolve, write_bytes_atomic

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    """splitmix64's finaliser on a Python int (the scalar twin of `_mix_array`), as a signed
    64-bit value: keys are stored as int64."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    x ^= x >> 31
    return x - (1 << 64) if x >> 63 else x


def _mix_array(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x.view(np.int64)


def string_hashes(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """64-bit hashes of a string column, vectorised (pandas' SipHash with its fixed key: the
    same on every node and platform, so an index built in one task answers lookups in another)."""
    from pandas.util import hash_array

    return hash_array(values.to_numpy(zero_copy_only=False).astype(object), categorize=False)


def version_hashes(
    doc_id: pa.Array | pa.ChunkedArray, doc_hash: pa.Array | pa.ChunkedArray
) -> np.ndarray:
    """One hash per document version, (doc_id, doc_hash)."""
    return string_hashes(pc.binary_join_element_wise(doc_id, doc_hash, "\x00"))


def chunk_hashes(versions: np.ndarray, chunk_index: np.ndarray) -> np.ndarray:
    """The done index's keys (int64): a chunk of a document version."""
    with np.errstate(over="ignore"):
        step = chunk_index.astype(np.uint64) * np.uint64(_GOLDEN)
        return _mix_array(versions.astype(np.uint64) + step)


def key_hash(doc_id: str, doc_hash: str, chunk_index: int) -> int:
    """The done-index key of one chunk, a signed 64-bit int (equal to `chunk_hashes` of the
    same values)."""
    version = int(version_hashes(pa.array([doc_id]), pa.array([doc_hash]))[0])
    return _mix((version + chunk_index * _GOLDEN) & _MASK)


def chunk_key(version: int, chunk_index: int) -> int:
    """`key_hash` when the version's hash is known (one hash per document, not per chunk)."""
    return _mix((version + chunk_index * _GOLDEN) & _MASK)


class DoneIndex:
    """The chunks already in the output, as a sorted array of 64-bit key hashes.

    8 bytes per chunk, membership by binary search. A hash collision would skip one chunk in
    ~10^19/n². The version hash of the last document asked about is kept, since a reader asks
    about every chunk of a document in turn.
    """

    def __init__(self, hashes: np.ndarray, sorted_unique: bool = False):
        # `sorted_unique`: already sorted without repeats (a partition from the done check).
        self.hashes = hashes if sorted_unique else np.unique(hashes.astype(np.int64))
        self._last: tuple[str, str, int] = ("", "", 0)

    def __len__(self) -> int:
        return int(self.hashes.size)

    def __call__(self, doc_id: str, doc_hash: str, chunk_index: int) -> bool:
        if not self.hashes.size:
            return False
        if self._last[:2] != (doc_id, doc_hash):
            version = int(version_hashes(pa.array([doc_id]), pa.array([doc_hash]))[0])
            self._last = (doc_id, doc_hash, version)
        return self.contains(chunk_key(self._last[2], chunk_index))

    def contains(self, key: int) -> bool:
        i = int(np.searchsorted(self.hashes, np.int64(key)))
        return i < self.hashes.size and int(self.hashes[i]) == key


@dataclass
class OutputState:
    rows: int
    done: Any
    """A `DoneIndex`, or anything callable alike (the pipeline's partitioned index)."""
    labelers: dict[str, int]
    duplicate_keys: int
    scanned: bool = True
    """False when the run read no input file (all complete in the ledger): the output was
    not scanned and the counts above are zero."""
    shard_paths: list[str] = field(default_factory=list)
    """The shards whose key columns the done check read (the counts above are theirs), on the
    output's filesystem."""
    scope: str = "full"
    """`full`: every shard was read; `scoped`: only those that may hold the chunks of the
    files the run reads (`condlabel.runs.scope`)."""

    @property
    def shards_scanned(self) -> int:
        return len(self.shard_paths)


def hashed_keys(table: pa.Table) -> pa.Table:
    """Key columns (doc_id, doc_hash, chunk_index, run_id, seq) -> numeric keys for the
    current-version rule: `id` (doc_id), `version` (doc_id, doc_hash), `key` (the chunk) and
    the order key (`condlabel.current`)."""
    versions = version_hashes(table.column("doc_id"), table.column("doc_hash"))
    seq = table.column("seq") if "seq" in table.column_names else None
    return pa.table(
        {
            "id": string_hashes(table.column("doc_id")),
            "version": versions,
            "key": chunk_hashes(versions, table.column("chunk_index").to_numpy()),
            ORDER: order_keys(seq, table.column("run_id")),
        }
    )


def latest_chunk_keys(keys: pa.Table) -> tuple[np.ndarray, int]:
    """The current-version rule (`condlabel.current`) over hashed keys (all versions of each
    document present): the sorted, unique keys of each document's current version, and the
    number of duplicate rows (a key written twice)."""
    if keys.num_rows == 0:
        return np.empty(0, np.int64), 0
    latest = current_versions(keys, "id", "version")
    kept = keys.select(["id", "version", "key"]).join(
        latest, keys=["id", "version"], join_type="inner"
    )
    all_keys = keys.column("key").to_numpy()
    duplicates = keys.num_rows - int(np.unique(all_keys).size)
    return np.unique(kept.column("key").to_numpy()), duplicates


def read_output_state(output_uri: str, storage: StorageConfig) -> OutputState:
    """Scan only the key columns of the output and build the done index in this process
    (`condlabel status`; a run builds it in Ray tasks, `condlabel.runs.donecheck`)."""
    fs, path = resolve(output_uri, storage)
    empty = OutputState(0, DoneIndex(np.empty(0, np.int64)), {}, 0)
    if not fs.exists(path):
        return empty
    dataset = tagged_dataset(output_uri, storage)
    if not dataset.files:
        return empty
    table = dataset.to_table(columns=KEY_COLUMNS)
    labelers = {
        d["values"]: d["counts"] for d in pc.value_counts(table.column("labeler")).to_pylist()
    }
    hashes, duplicates = latest_chunk_keys(hashed_keys(table))
    return OutputState(table.num_rows, DoneIndex(hashes), labelers, duplicates)


def output_rows(output_uri: str, storage: StorageConfig) -> int:
    """Rows under an output prefix, every version (from the shards' footers: no data read)."""
    fs, path = resolve(output_uri, storage)
    return tagged_dataset(output_uri, storage).count_rows() if fs.exists(path) else 0


def check_fingerprint(
    current: str, existing: dict[str, int], allow_mixed: bool, unit: str = "rows"
) -> None:
    """Refuse a labeler other than the output's; `existing`: labeler -> count of `unit`."""
    others = {fp: n for fp, n in existing.items() if fp != current}
    if others and not allow_mixed:
        held = ", ".join(f"{fp} ({n} {unit})" for fp, n in sorted(others.items()))
        raise RunRefused(
            f"the output prefix holds rows from labeler {held}; this run's labeler is {current}. "
            "Write to another prefix, or pass --allow-mixed to add rows from a second labeler."
        )


# --------------------------------------------------------------------------- manifest


def versions() -> dict[str, str]:
    """Versions of what changes a run's output: the core packages, and the packages each
    registered labeler and classifier backend names (built in or a plugin's)."""
    out = {"python": platform.python_version()}
    # the core, and what else changes labels: sentence splitting for chunks, the tag
    # vocabulary map
    packages = [
        "condlabel",
        "ray",
        "pyarrow",
        "fsspec",
        "s3fs",
        "sentencex",
        "rapidfuzz",
        "inflect",
    ]
    packages += [p for name in registered() for p in backend(name).packages]
    packages += [p for name in registered_classifiers() for p in classifier_backend(name).packages]
    for pkg in dict.fromkeys(packages):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            continue
    return out


def write_manifest(
    output_uri: str, run_id: str, body: dict[str, Any], storage: StorageConfig
) -> str:
    fs, root = resolve(output_uri, storage)
    path = posixpath.join(root, MANIFEST_DIR, f"{run_id}.json")
    write_bytes_atomic(fs, path, json.dumps(body, indent=2, default=str).encode())
    return output_uri.rstrip("/") + f"/{MANIFEST_DIR}/{run_id}.json"


def read_manifests(output_uri: str, storage: StorageConfig) -> list[dict[str, Any]]:
    fs, root = resolve(output_uri, storage)
    directory = posixpath.join(root, MANIFEST_DIR)
    if not fs.exists(directory):
        return []
    manifests = []
    for path in sorted(fs.find(directory)):
        if path.endswith(".json"):
            try:
                manifests.append(json.loads(fs.cat_file(path)))
            except ValueError:
                run_id = posixpath.basename(path).removesuffix(".json")
                manifests.append({"run_id": run_id, "status": "unreadable"})
    return sorted(manifests, key=lambda m: str(m.get("run_id")))


# --------------------------------------------------------------------------- status


def status_info(
    uri: str, storage: StorageConfig, prices: dict[str, float] | None = None
) -> dict[str, Any]:
    """What `condlabel status` reports: every run's manifest, the output's totals, the lease,
    and the cost record of every run (in USD, per million and billion input tokens, with
    `prices`: USD per hour by resource)."""
    from condlabel.runs.costs import cost_report

    runs = read_manifests(uri, storage)
    state = read_output_state(uri, storage)
    lease = read_lease(uri, storage)
    info = {
        "output": uri,
        "runs": [
            {
                "run_id": m.get("run_id"),
                "seq": m.get("seq"),
                "status": run_status(m, lease),
                "started_at": m.get("started_at"),
                "labeler": m.get("labeler"),
                **(m.get("counts") or {}),
                "seconds": (m.get("timings") or {}).get("seconds"),
                "error": m.get("error"),
            }
            for m in runs
        ],
        "totals": {
            "runs": len(runs),
            "succeeded": sum(1 for m in runs if m.get("status") == "succeeded"),
            "rows": state.rows,
            "latest_chunks": len(state.done),
            "duplicate_keys": state.duplicate_keys,
            "labeled": sum((m.get("counts") or {}).get("labeled", 0) for m in runs),
            "labelers": state.labelers,
        },
        "lease": lease,
        "cost": cost_report(runs, prices or {}),
    }
    return info


def run_status(manifest: dict[str, Any], lease: dict[str, Any] | None) -> str | None:
    """A manifest's status, except that a run recorded as running whose lease is gone, taken
    over, expired or held by a dead process was `killed`: it never wrote its outcome."""
    status = manifest.get("status")
    if status != "running":
        return status
    if not lease or lease.get("run_id") != manifest.get("run_id"):
        return "killed"
    if float(lease.get("expires_at", 0)) <= time.time() or holder_is_dead(lease):
        return "killed"
    return status


def status_lines(info: dict[str, Any]) -> list[str]:
    """`status_info` as the table `condlabel status` prints."""
    lines = [f"output {info['output']}"]
    lines.append(
        f"{'run':<34} {'status':<10} {'labeled':>8} {'skipped':>8} {'rejected':>8} {'seconds':>8}"
    )
    for r in info["runs"]:
        rejected = sum((r.get("rejected") or {}).values())
        lines.append(
            f"{r['run_id']!s:<34} {r['status']!s:<10} {r.get('labeled', 0):>8} "
            f"{r.get('skipped_done', 0):>8} {rejected:>8} {r.get('seconds') or 0:>8.1f}"
        )
        if r.get("error"):
            lines.append(f"    error: {r['error']}")
    t = info["totals"]
    lines.append(
        f"totals: {t['runs']} run(s), {t['succeeded']} succeeded; {t['rows']} rows, "
        f"{t['latest_chunks']} chunks in their latest version, {t['duplicate_keys']} duplicate keys"
    )
    for fp, n in t["labelers"].items():
        lines.append(f"labeler {fp}: {n} rows")
    if "cost" in info:
        from condlabel.runs.costs import cost_lines

        lines += cost_lines(info["cost"])
    if lease := info["lease"]:
        lines.append(
            f"lease: held by run {lease.get('run_id')} on {lease.get('host')} until {lease.get('expires')}"
        )
    return lines
