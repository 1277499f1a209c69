"""Labels depend on the text alone: when only a document's kept input fields changed (a new
value, or a new `input.keep_fields` list), its rows are written again with the labels they
already have, never relabeled.

    read step (a file read again, kept fields on): its chunks found done (text labeled)
      + their current rows in the output  --`stale_rows`-->  the chunks whose fields differ
      --`relabeled`-->  held under `_rewrites/<run_id>/` (old labels, new fields)
    after the graph: the run's write step writes them under the run's seq, so the rewritten
    rows are the current ones (`condlabel.current`); nothing is sent to the labeler.

A file is read again when it changed (its size or version) or when the ledger's fingerprint
changed, which covers `input.keep_fields` and `input.url_field`. The rows of a file read again
are looked up in the shards the done check scanned; only the chunks whose fields differ are
held. No Ray here but the tasks of `Rewrites.written`.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from condlabel.config import ConvertConfig
from condlabel.convert.copies import copy_groups, hold_rows, write_in_shards
from condlabel.convert.stages import PADDED_TOKENS, USEFUL_TOKENS
from condlabel.readback import latest_versions
from condlabel.schema import LABEL_FIELDS, output_schema
from condlabel.storage import filesystem, resolve, split_uri

REWRITES_DIR = "_rewrites"
"""A run's rewritten rows wait here until the graph has run (removed when the run ends)."""
KEY = ("doc_id", "doc_hash", "chunk_index")
# What a rewritten row takes from the row already written: its labels and where they came from.
KEPT_LABELS = [name for name, _ in LABEL_FIELDS] + ["raw_tags", "copied_from"]
ORDER_COLUMNS = ["run_id", "seq"]


def kept_fields_key(row: Mapping[str, Any], names: Iterable[str]) -> str:
    """A hash of a row's kept fields (names and values, null included): a changed value, type
    or list of names gives another key."""
    values = [[name, row.get(name)] for name in sorted(names)]
    text = json.dumps(values, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _keys(table: pa.Table) -> list[tuple]:
    return list(zip(*(table.column(k).to_pylist() for k in KEY), strict=True))


def _fields(table: pa.Table, names: list[str]) -> list[dict[str, Any]]:
    return table.select([n for n in names if n in table.column_names]).to_pylist()


def stale_rows(chunks: pa.Table, written: pa.Table, kept: Mapping[str, str]) -> pa.Table:
    """The chunks whose text is labeled in `written` (the same key) but whose kept fields
    differ from that row's (a field the row lacks counts as null)."""
    names = list(kept)
    held = {
        key: kept_fields_key(row, names)
        for key, row in zip(_keys(written), _fields(written, names), strict=True)
    }
    mask = [
        key in held and held[key] != kept_fields_key(row, names)
        for key, row in zip(_keys(chunks), _fields(chunks, names), strict=True)
    ]
    return chunks.filter(pa.array(mask, pa.bool_()))


def relabeled(chunks: pa.Table, written: pa.Table) -> pa.Table:
    """`chunks` (read now, with their kept fields) carrying the labels of their rows in
    `written`, as the write step takes a labeled batch: it renders the prefix from the new
    fields. Chunks without a row in `written` are left out (they need labeling)."""
    index = {key: i for i, key in enumerate(_keys(written))}
    found = [index.get(key) for key in _keys(chunks)]
    table = chunks.filter(pa.array([i is not None for i in found], pa.bool_()))
    labels = written.take(pa.array([i for i in found if i is not None], pa.int64()))
    for name in KEPT_LABELS:
        if name in labels.column_names and name not in table.column_names:
            table = table.append_column(labels.schema.field(name), labels.column(name))
    # A rewrite costs the labeler nothing: no tokens for the padding figures.
    zeros = pa.array(np.zeros(table.num_rows, dtype=np.int64))
    return table.append_column(USEFUL_TOKENS, zeros).append_column(PADDED_TOKENS, zeros)


def current_labels(
    shards: list[str], scheme: str, cfg: ConvertConfig, doc_ids: list[str]
) -> pa.Table:
    """The current rows (`condlabel.current`) of `doc_ids` in `shards`: the key and order
    columns, the labels and the kept fields (null in shards written without them). The key
    columns of every shard are read first; the labels only from the shards that hold a
    current row."""
    kept = cfg.input.kept_types
    names = [*KEY, *ORDER_COLUMNS, *KEPT_LABELS, *kept]
    schema = pa.schema([output_schema(kept).field(n) for n in names])
    if not shards or not doc_ids:
        return schema.empty_table()
    fs = filesystem(scheme, cfg.storage)
    wanted = pc.field("doc_id").isin(doc_ids)
    keys = pads.dataset(shards, format="parquet", filesystem=fs, schema=schema).to_table(
        columns=[*KEY, *ORDER_COLUMNS, "__filename"], filter=wanted
    )
    holding = sorted(set(latest_versions(keys).column("__filename").to_pylist()))
    if not holding:
        return schema.empty_table()
    dataset = pads.dataset(holding, format="parquet", filesystem=fs, schema=schema)
    return latest_versions(dataset.to_table(filter=wanted))


@dataclass
class Rewrites:
    """A run's metadata rewrites: where their rows wait, and the shards that hold the labels
    (those the done check scanned). Pickled into the read tasks."""

    cfg: ConvertConfig
    run_id: str
    shards_ref: Any
    """Object ref to the list of shard paths (on the output's filesystem)."""

    def _dir(self) -> tuple[Any, str]:
        fs, root = resolve(self.cfg.output.uri, self.cfg.storage)
        return fs, posixpath.join(root, REWRITES_DIR, self.run_id)

    def hold(self, done: pa.Table) -> None:
        """Read step, for a file read again: of its chunks found done, hold those whose kept
        fields changed, with their labels."""
        import ray

        if done.num_rows == 0:
            return
        scheme = split_uri(self.cfg.output.uri)[0]
        doc_ids = pc.unique(done.column("doc_id")).to_pylist()
        written = current_labels(ray.get(self.shards_ref), scheme, self.cfg, doc_ids)
        rows = relabeled(stale_rows(done, written, self.cfg.input.kept_types), written)
        hold_rows(*self._dir(), rows)

    def written(self, write: Callable[[pa.Table], dict], cpus: float) -> Iterator[pa.Table]:
        """After the graph: the held rows passed through the run's `write` step, in Ray tasks
        of up to `output.rows_per_file` rows; yields shard rows as the graph does."""
        import ray

        fs, root = self._dir()
        fs.invalidate_cache(root)  # written by the read tasks, never listed here before
        paths = sorted(fs.find(root)) if fs.exists(root) else []
        task = ray.remote(num_cpus=cpus)(_write_held)
        groups = copy_groups(paths, self.cfg.output.rows_per_file)
        pending = [task.remote(group, self, write) for group in groups]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def finish(self) -> None:
        """Remove `_rewrites/` whole: this run holds the writer lease, so anything else there
        was left by a run that failed."""
        fs, root = self._dir()
        parent = posixpath.dirname(root)
        if fs.exists(parent):
            fs.rm(parent, recursive=True)


def _write_held(paths: list[str], run: Rewrites, write: Callable[[pa.Table], dict]) -> pa.Table:
    """A group of held files, written in shards of `output.rows_per_file` rows."""
    fs, _ = run._dir()
    tables = []
    for path in paths:
        with fs.open(path, "rb") as f:
            tables.append(pq.read_table(f))
    return write_in_shards(pa.concat_tables(tables), write, run.cfg.output.rows_per_file)
