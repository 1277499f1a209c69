"""Duplicate-aware labeling on Ray (the rules are in `condlabel.convert.dedup`).

    input files ──key pass (`graph_steps.key_pass`)──► plan (driver: 8-byte hashes only)
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
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from condlabel.config import ConvertConfig
from condlabel.convert.dedup import (
    TEXT_HASH,
    CopyPlan,
    canonical_labels,
    fill_copies,
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

log = logging.getLogger("condlabel")

LABEL_COLUMNS = [name for name, _ in LABEL_FIELDS]


def copy_run(
    cfg: ConvertConfig, run_id: str, plan: CopyPlan | None, counter: Any
) -> CopyRun | None:
    """A run's copies from the key pass's plan (`graph_steps.key_pass`); None when dedup is
    off or no chunk text repeats. `counter`: the run's counter actor, which counts the copies
    rejected with their labeled chunk."""
    import ray

    if plan is None or not plan.copies:
        return None
    return CopyRun(ray.put(plan), _labels_actor(), counter, cfg, run_id, plan.copies)


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
        hold_rows(*self._dir(), held)
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
        `write` step, in Ray tasks of about `output.rows_per_file` copies each (light tasks,
        not another Ray Data graph), so a run with a few copies per read task writes a few
        full shards, not one small shard per read task; yields shard rows as the graph does."""
        import ray

        fs, root = self._dir()
        fs.invalidate_cache(root)  # written by the read tasks, never listed here before
        paths = sorted(fs.find(root)) if fs.exists(root) else []
        if not paths:
            return
        labels = ray.put(ray.get(self.labels.table.remote()))
        task = ray.remote(num_cpus=cpus)(_fill_and_write)
        groups = copy_groups(paths, self.cfg.output.rows_per_file)
        pending = [task.remote(group, self, labels, write) for group in groups]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            shards = ray.get(done[0])
            if shards is not None:  # None: every copy of the group was rejected
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


def hold_rows(fs: Any, directory: str, rows: pa.Table) -> None:
    """Keep rows that wait for the end of the graph (copies, rewrites) as one file under
    `directory`, named by content, as shards are: a retried read task rewrites the same file.
    The row count in the name lets the driver group waiting files without reading them."""
    if not rows.num_rows:
        return
    cols = rows.select(["source", POSITION, "chunk_index"]).to_pydict().values()
    keys = sorted(f"{s}/{p}/{c}" for s, p, c in zip(*cols, strict=True))
    name = hashlib.blake2b("\n".join(keys).encode(), digest_size=10).hexdigest()
    sink = pa.BufferOutputStream()
    pq.write_table(rows, sink, compression="zstd")
    path = f"{directory}/{name}.{rows.num_rows}.parquet"
    write_bytes_atomic(fs, path, sink.getvalue().to_pybytes())


def write_in_shards(rows: pa.Table, write: Callable[[pa.Table], dict], size: int) -> pa.Table:
    """`rows` through the run's write step in shards of `size` rows; the shard list's rows."""
    return pa.concat_tables(
        [pa.table(write(rows.slice(i, size))) for i in range(0, rows.num_rows, size)]
    )


def copy_groups(paths: list[str], rows: int) -> list[list[str]]:
    """Waiting files (`<digest>.<rows>.parquet`) in input order, grouped into runs of about
    `rows` rows: a group closes before the file that would take it past `rows`. A name
    without a count is a group of its own."""
    groups: list[list[str]] = []
    held = 0
    for path in paths:
        count = _held_rows(path)
        if count is None or not groups or held + count > rows:
            groups.append([])
            held = 0
        groups[-1].append(path)
        held += rows if count is None else count
    return groups


def _held_rows(path: str) -> int | None:
    parts = posixpath.basename(path).split(".")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _fill_and_write(
    paths: list[str], run: CopyRun, labels: pa.Table | None, write: Callable
) -> pa.Table | None:
    """A group of waiting files' copies, filled and written in shards of
    `output.rows_per_file`. `labels` arrives resolved (Ray passes an object ref given as an
    argument by value)."""
    filled = pa.concat_tables(
        [_fill(path, run, labels) for path in paths], promote_options="permissive"
    )
    return write_in_shards(filled, write, run.cfg.output.rows_per_file) if filled.num_rows else None


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
        name = "copies-" + posixpath.basename(path).split(".")[0]
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
