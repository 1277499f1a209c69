"""Duplicate-aware labeling on Ray (the rules are in `condlabel.convert.dedup`).

    input files ──chunk keys (tasks)──► plan (driver: 8-byte hashes only) ──► object store
    read step   ──copies held back──► `_copies/<run_id>/*.parquet` (the rest is labeled)
    label stage ──labels of chunks with copies──► one actor (only those labels, no text)
    after the graph: `_copies/<run_id>/` ──fill (tasks)──► labeled copies ──► the writer

A copy waits until the whole graph has run because its labeled chunk may sit in any batch on
any actor; waiting inside a batch could deadlock the pool. The copies' rows go through the same
format and write step as every other row. Used by `condlabel.convert.pipeline` only.
"""

from __future__ import annotations

import hashlib
import logging
import posixpath
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from condlabel.config import ConvertConfig
from condlabel.convert.dedup import (
    CHUNK_KEY_FIELDS,
    TEXT_HASH,
    CopyPlan,
    canonical_labels,
    chunk_keys,
    fill_copies,
    plan_copies,
    split_copies,
)
from condlabel.convert.reading import Reject
from condlabel.convert.stages import (
    PADDED_TOKENS,
    POSITION,
    REJECT_LABELER_ERROR,
    USEFUL_TOKENS,
    write_rejects,
)
from condlabel.schema import COPIES_DIR, LABEL_FIELDS
from condlabel.storage import resolve, write_bytes_atomic

if TYPE_CHECKING:
    import ray.data

log = logging.getLogger("condlabel")

LABEL_COLUMNS = [name for name, _ in LABEL_FIELDS]


def plan_copy_run(
    cfg: ConvertConfig,
    run_id: str,
    reads: ray.data.Dataset,
    reader: dict,
    refs: tuple[Any, Any],
    counter: Any,
) -> CopyRun | None:
    """The key pass over `reads` (one row per read task, as the read step gets them) and its
    plan; None when `dedup.enabled` is off or no chunk text repeats. `refs`: object refs of the
    done index and of the later occurrences of ids (`find_duplicates`); `counter`: the run's
    counter actor, which counts the copies rejected with their labeled chunk."""
    import ray

    if not cfg.dedup.enabled:
        return None
    started = time.monotonic()
    parts = [
        batch
        for batch in reads.map_batches(
            partial(_chunk_keys, cfg=cfg, refs=refs), batch_size=1, batch_format="pyarrow", **reader
        ).iter_batches(batch_size=None, batch_format="numpy")
    ]
    if not parts:
        return None
    plan = plan_copies(
        {k: np.concatenate([p[k] for p in parts]).astype(np.int64) for k in CHUNK_KEY_FIELDS}
    )
    log.info(
        "chunk key pass: %d chunk(s) repeat the text of another (%d distinct text(s)), %.1f s",
        plan.copies,
        plan.labeled_texts.size,
        time.monotonic() - started,
    )
    if not plan.copies:
        return None
    return CopyRun(ray.put(plan), _labels_actor(), counter, cfg, run_id, plan.copies)


def _chunk_keys(batch: pa.Table, cfg: ConvertConfig, refs: tuple[Any, Any]) -> dict:
    import ray

    done, duplicates = ray.get(list(refs))
    parts = [
        chunk_keys(uri, index, cfg, done, duplicates.get(uri) or {})
        for task in batch.to_pylist()
        for uri, index in zip(task["uri"], task["index"], strict=True)
    ]
    return {k: np.concatenate([p[k] for p in parts]) for k in CHUNK_KEY_FIELDS}


@dataclass
class CopyRun:
    """A run's copies: its plan (object ref), the actor keeping labels, and where copies wait.
    Pickled into the read tasks and label actors."""

    plan_ref: Any
    labels: Any
    counter: Any
    cfg: ConvertConfig
    run_id: str
    copies: int

    def _plan(self) -> CopyPlan:
        import ray

        return ray.get(self.plan_ref)

    def _dir(self) -> tuple[Any, str]:
        fs, root = resolve(self.cfg.output.uri, self.cfg.storage)
        return fs, posixpath.join(root, COPIES_DIR, self.run_id)

    def hold_back(self, chunks: pa.Table) -> pa.Table:
        """Read step: store the batch's copies under `_copies/<run_id>/`; the rest, to label."""
        keep, held = split_copies(chunks, self._plan())
        if held.num_rows:
            fs, root = self._dir()
            # Named by content, as shards are: a retried read task rewrites the same file.
            cols = held.select(["source", POSITION, "chunk_index"]).to_pydict().values()
            keys = sorted(f"{s}/{p}/{c}" for s, p, c in zip(*cols, strict=True))
            name = hashlib.blake2b("\n".join(keys).encode(), digest_size=10).hexdigest()
            sink = pa.BufferOutputStream()
            pq.write_table(held, sink, compression="zstd")
            write_bytes_atomic(fs, f"{root}/{name}.parquet", sink.getvalue().to_pybytes())
        return keep

    def keep_labels(self, labeled: pa.Table) -> None:
        """Label stage: hand the labels of the batch's chunks that have copies to the actor."""
        import ray

        if labeled.num_rows:
            rows = canonical_labels(labeled, self._plan(), LABEL_COLUMNS)
            if rows.num_rows:
                ray.get(self.labels.add.remote(rows))

    def written(self, write: Callable[[pa.Table], dict], cpus: float) -> Iterator[pa.Table]:
        """After the graph: the copies filled with their labels and passed through the run's
        `write` step, one Ray task per waiting file (a light task, not another Ray Data
        graph); yields shard rows as the graph does, as the tasks finish."""
        import ray

        fs, root = self._dir()
        fs.invalidate_cache(root)  # written by the read tasks, never listed here before
        paths = sorted(fs.find(root)) if fs.exists(root) else []
        if not paths:
            return
        labels = ray.put(ray.get(self.labels.table.remote()))
        task = ray.remote(num_cpus=cpus)(_fill_and_write)
        pending = [task.remote(path, self, labels, write) for path in paths]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            shards = ray.get(done[0])
            if shards is not None:  # None: every copy of the file was rejected
                yield shards

    def finish(self) -> int:
        """The copies written (labeler calls saved). Removes `_copies/` whole: this run holds
        the writer lease, so anything else there was left by a run that failed."""
        import ray

        saved = ray.get(self.labels.saved.remote())
        ray.kill(self.labels)
        fs, root = self._dir()
        parent = posixpath.dirname(root)
        if fs.exists(parent):
            fs.rm(parent, recursive=True)
        return saved


def _fill_and_write(
    path: str, run: CopyRun, labels: pa.Table | None, write: Callable
) -> pa.Table | None:
    """One waiting file's copies, filled and written in shards of `output.rows_per_file`.
    `labels` arrives resolved (Ray passes an object ref given as an argument by value)."""
    filled = _fill(path, run, labels)
    size = run.cfg.output.rows_per_file
    shards = [write(filled.slice(i, size)) for i in range(0, filled.num_rows, size)]
    return pa.concat_tables([pa.table(s) for s in shards]) if shards else None


def _fill(path: str, run: CopyRun, labels: pa.Table | None) -> pa.Table:
    """Fill one waiting file's copies; a copy whose labeled chunk failed is rejected."""
    import ray

    fs, _ = run._dir()
    with fs.open(path, "rb") as f:
        copies = pq.read_table(f)
    filled, orphans = fill_copies(copies, labels)
    if orphans.num_rows:
        rejects = [
            Reject(
                row["source"],
                row[POSITION],
                "text",
                REJECT_LABELER_ERROR,
                f"doc {row['doc_id']!r} chunk {row['chunk_index']}: the chunk with the same text "
                "failed to label (it is a labeler_error reject too)",
                row["text"].encode("utf-8"),
            )
            for row in orphans.to_pylist()
        ]
        name = "copies-" + posixpath.basename(path).removesuffix(".parquet")
        write_rejects(rejects, run.cfg.output.uri, run.run_id, name, run.cfg.storage)
        failed = Counter({REJECT_LABELER_ERROR: len(rejects)})
        ray.get(run.counter.add_labeler_errors.remote(name, failed, rejects[0].detail))
    ray.get(run.labels.count.remote(path, filled.num_rows))
    # A copy costs the labeler nothing: no tokens for the padding figures.
    zeros = pa.array(np.zeros(filled.num_rows, dtype=np.int64))
    return filled.append_column(USEFUL_TOKENS, zeros).append_column(PADDED_TOKENS, zeros)


def _labels_actor() -> Any:
    import ray

    @ray.remote(num_cpus=0)
    class CopyLabels:
        """The labels of the chunks that have copies (no text), and the copies written, keyed
        by waiting file so a retried fill task counts once."""

        def __init__(self) -> None:
            self.tables: list[pa.Table] = []
            self.by_file: dict[str, int] = {}

        def add(self, rows: pa.Table) -> None:
            self.tables.append(rows)

        def table(self) -> pa.Table | None:
            if not self.tables:  # every chunk with copies failed to label
                return None
            # A retried label batch adds its rows twice; the labels are the same.
            table = pa.concat_tables(self.tables)
            _, first = np.unique(table.column(TEXT_HASH).to_numpy(), return_index=True)
            return table.take(pa.array(first))

        def count(self, path: str, filled: int) -> None:
            self.by_file[path] = filled

        def saved(self) -> int:
            return sum(self.by_file.values())

    return CopyLabels.remote()  # type: ignore[attr-defined]  # ray.remote wraps the class
