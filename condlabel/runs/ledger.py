"""The input-file ledger: which input files a rerun need not open again.

When every chunk of an input file is in the output, the run records the file under
`<output>/_ledger/<run_id>.parquet`: its identity (the path relative to the input it was found
under, so a moved prefix is the same file), size and version (ETag, or mtime on a local disk),
the fingerprint of everything that decides its chunks and labels (the input fields, the
chunking, the labeler and classifiers) and the run's `seq`. The ledger is append-only and a
file's state is its NEWEST entry: a rerun skips a file, without opening it, only when its size,
version and fingerprint equal that entry's. A file restored to an earlier version matches an
older entry, not the newest, so it is read again. A new, changed or partial file is read and
its chunks are checked one by one against the output (the done index, read from the shards
that may hold them: `scope.py`, which keeps its started records in `_ledger/_started/`). Changing the chunking
or the labeler changes the fingerprint, so every entry stops matching and every file is read.

The ledger is derived from the output, never the other way round: an entry is written only for
a file whose chunks the run found all in the output or wrote all itself. With
`output.done_check=full` a run ignores the ledger (reads every file) and the entries it writes
rebuild it; deleting `_ledger/` does the same (one full check, never a wrong row). Entries of
older releases name files by URI only: they are matched by URI, once, and the entries that run
writes carry the identity. No Ray here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from condlabel.config import ConvertConfig, StorageConfig
from condlabel.runs.summary import FileStats
from condlabel.schema import LEDGER_DIR
from condlabel.storage import InputFile, resolve, write_bytes_atomic

if TYPE_CHECKING:
    from condlabel.runs.summary import RunSummary

log = logging.getLogger("condlabel")

LEDGER_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("version", pa.string()),
        ("fingerprint", pa.string()),
        ("documents", pa.int64()),
        ("chunks", pa.int64()),
        ("run_id", pa.string()),
        ("key", pa.string()),
        ("seq", pa.int64()),
        # Data shards under the output when the entry was written: fewer now means shards
        # were deleted, and the ledger no longer says what the output holds.
        ("output_shards", pa.int64()),
        # The file's rejected records by reason (JSON), counted again by a run that skips it.
        ("rejected", pa.string()),
    ]
)
LedgerState = tuple[int, str, str]
"""(size, version, fingerprint): what must equal a file's newest entry for it to be skipped."""


@dataclass(frozen=True)
class LedgerEntry:
    uri: str
    size: int
    version: str
    fingerprint: str
    documents: int
    chunks: int
    run_id: str
    output_shards: int = 0
    rejected: str = "{}"
    key: str = ""
    """The file's identity (`InputFile.key`); "" in entries of older releases (the URI then)."""
    seq: int = 0

    @property
    def state(self) -> LedgerState:
        return (self.size, self.version, self.fingerprint)

    @property
    def order(self) -> tuple[int, str]:
        return (self.seq, self.run_id)


@dataclass
class RerunPlan:
    """The inputs of a run split by the ledger: files to read, and files already complete."""

    to_read: list[InputFile]
    complete: list[LedgerEntry] = field(default_factory=list)
    fingerprint: str = ""
    output_changed: bool = False
    """The output has fewer shards than the ledger recorded: the done check reads it whole."""

    @property
    def documents(self) -> int:
        return sum(e.documents for e in self.complete)

    @property
    def chunks(self) -> int:
        return sum(e.chunks for e in self.complete)

    @property
    def rejected(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for e in self.complete:
            total.update(json.loads(e.rejected))
        return total


def ledger_fingerprint(cfg: ConvertConfig, labels: str) -> str:
    """What decides a file's rows: the input fields and format, the chunking, the labels'
    fingerprint (`labels`: the `labeler` column, labeler + classifiers) and the kept input
    fields (only when some are kept, so outputs without any keep their ledger)."""
    decides: dict[str, Any] = {
        "input": cfg.input.model_dump(
            include={"text_field", "id_field", "format", "sample_fraction", "sample_stratified"}
        ),
        "chunking": cfg.chunking.model_dump(),
        "labels": labels,
    }
    if cfg.input.kept_types:
        decides["kept"] = [cfg.input.kept_types, cfg.input.url_field]
    text = json.dumps(decides, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def newest_entries(
    entries: Iterable[LedgerEntry], files: Iterable[InputFile]
) -> dict[str, LedgerEntry]:
    """Each file's newest entry by identity (`InputFile.identity`). An older release's entry
    (no identity) stands for the current file of the same URI."""
    identity_of = {f.uri: f.identity for f in files}
    newest: dict[str, LedgerEntry] = {}
    for e in entries:
        ident = e.key or identity_of.get(e.uri, e.uri)
        if ident not in newest or e.order > newest[ident].order:
            newest[ident] = e
    return newest


def plan_rerun(files: list[InputFile], newest: Mapping[str, LedgerEntry], fp: str) -> RerunPlan:
    """Split `files` into those to read and those the ledger shows complete: a file whose
    size, version and fingerprint equal its newest entry's (`newest_entries`). A file without a
    version (its listing gave neither ETag nor mtime) is always read: a change would go unseen."""
    plan = RerunPlan(to_read=[])
    for f in files:
        entry = newest.get(f.identity) if f.version else None
        if entry is None or entry.state != (f.size, f.version, fp):
            plan.to_read.append(f)
        else:
            plan.complete.append(entry)
    return plan


def read_ledger(output_uri: str, storage: StorageConfig) -> list[LedgerEntry]:
    """Every entry under `_ledger/`. A file that cannot be read is skipped with a warning
    naming it: its files are read again and get new entries (the ledger rebuilds itself)."""
    fs, root = resolve(output_uri, storage)
    directory = posixpath.join(root, LEDGER_DIR)
    if not fs.exists(directory):
        return []
    entries: list[LedgerEntry] = []
    for path in sorted(fs.find(directory)):
        # `_`/`.` names (anywhere below, e.g. `_started/`) are not ledger files.
        rel = posixpath.relpath(path, directory).split("/")
        if not path.endswith(".parquet") or any(p.startswith((".", "_")) for p in rel):
            continue
        try:
            with fs.open(path, "rb") as handle:
                table = pq.read_table(handle, schema=LEDGER_SCHEMA)
        except (OSError, ValueError, pa.ArrowException) as exc:
            log.warning("ledger file %s skipped (%s): its files are read again", path, exc)
            continue
        for row in table.to_pylist():
            fixed = {
                "output_shards": row["output_shards"] or 0,
                "rejected": row["rejected"] or "{}",
                "key": row["key"] or "",
                "seq": row["seq"] or 0,
            }
            entries.append(LedgerEntry(**{**row, **fixed}))
    return entries


def completed_files(
    files: Iterable[InputFile], stats: Iterable[FileStats], written: Mapping[str, int]
) -> list[tuple[InputFile, FileStats]]:
    """The files of a run whose every chunk is in the output: each chunk was found done or
    written by this run (`written`: rows written per source). A chunk that failed to label, or
    a file whose read did not finish (no stats), keeps its file out of the ledger."""
    by_uri = {s.source: s for s in stats}
    done = []
    for f in files:
        s = by_uri.get(f.uri)
        if s is not None and f.version and written.get(f.uri, 0) == s.to_label:
            done.append((f, s))
    return done


def write_ledger(
    output_uri: str,
    run_id: str,
    completed: list[tuple[InputFile, FileStats]],
    fp: str,
    storage: StorageConfig,
    output_shards: int = 0,
    seq: int = 0,
) -> str | None:
    """Record the completed files as `_ledger/<run_id>.parquet` (rewritten whole: a run that
    records twice keeps its latest list). None when there is nothing to record."""
    if not completed:
        return None
    table = pa.Table.from_pylist(
        [
            {
                "uri": f.uri,
                "size": f.size,
                "version": f.version,
                "fingerprint": fp,
                "documents": s.documents,
                "chunks": s.chunks,
                "run_id": run_id,
                "key": f.key,
                "seq": seq,
                "output_shards": output_shards,
                "rejected": json.dumps(dict(s.rejected), sort_keys=True),
            }
            for f, s in completed
        ],
        schema=LEDGER_SCHEMA,
    )
    fs, root = resolve(output_uri, storage)
    path = posixpath.join(root, LEDGER_DIR, f"{run_id}.parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(fs, path, sink.getvalue().to_pybytes())
    return path


def written_by_source(sources: pa.ChunkedArray | pa.Array) -> Counter[str]:
    """Rows per `source` of a written shard (what the write step reports to the driver)."""
    import pyarrow.compute as pc

    return Counter({d["values"]: d["counts"] for d in pc.value_counts(sources).to_pylist()})


# --------------------------------------------------------------------------- a run's side


def rerun_plan(cfg: ConvertConfig, files: list[InputFile], labels: str) -> RerunPlan:
    """The run's inputs split by the ledger (every file is read with `output.done_check=full`)."""
    fp = ledger_fingerprint(cfg, labels)
    entries = newest_entries(read_ledger(cfg.output.uri, cfg.storage), files)
    if cfg.output.done_check == "full":
        entries = {}
    recorded = max((e.output_shards for e in entries.values()), default=0)
    if recorded and (present := count_shards(cfg)) < recorded:
        log.warning(
            "ledger disagrees with the output (%d shards when last recorded, %d now): every "
            "input file is read and the ledger rebuilt",
            recorded,
            present,
        )
        entries = {}
    plan = plan_rerun(files, entries, fp)
    plan.fingerprint = fp
    plan.output_changed = bool(recorded) and not entries
    if plan.complete:
        log.info(
            "%d of %d input file(s) complete in the ledger (%d chunks): not read",
            len(plan.complete),
            len(files),
            plan.chunks,
        )
    return plan


def count_shards(cfg: ConvertConfig) -> int:
    """Data shards under the output prefix now (one listing)."""
    from condlabel.readback import tagged_dataset

    fs, path = resolve(cfg.output.uri, cfg.storage)
    return len(tagged_dataset(cfg.output.uri, cfg.storage).files) if fs.exists(path) else 0


def count_complete(summary: RunSummary, plan: RerunPlan) -> None:
    """Add the ledger's complete files to a run's counts, as chunks already in the output."""
    summary.files_skipped = len(plan.complete)
    summary.documents_not_read = plan.documents
    summary.documents += plan.documents
    summary.chunks += plan.chunks
    summary.skipped_done += plan.chunks
    for reason, count in plan.rejected.items():
        summary.rejected[reason] = summary.rejected.get(reason, 0) + count


def record_ledger(
    cfg: ConvertConfig,
    summary: RunSummary,
    plan: RerunPlan,
    files: list[InputFile],
    stats: list[FileStats],
    written: Mapping[str, int],
) -> None:
    """After the graph ran: count the skipped files, and record the files now complete."""
    count_complete(summary, plan)
    completed = completed_files(files, stats, written)
    shards = count_shards(cfg) if completed else 0
    if write_ledger(
        cfg.output.uri,
        summary.run_id,
        completed,
        plan.fingerprint,
        cfg.storage,
        shards,
        summary.seq,
    ):
        log.info("ledger: %d input file(s) recorded complete", len(completed))


def shard_sources(batch: pa.Table | None) -> dict[str, list]:
    """The write step's report of a shard's rows per input file (one row of the shard list;
    none for no shard)."""
    if batch is None:
        return {"source_uris": [], "source_rows": []}
    counts = written_by_source(batch.column("source"))
    return {"source_uris": [list(counts)], "source_rows": [list(counts.values())]}


def add_written(written: Counter[str], shards: pa.Table) -> None:
    """Add the rows per input file of landed shards (`shard_sources` rows) to `written`."""
    if "source_uris" not in shards.column_names:
        return
    uris, rows = shards.column("source_uris").to_pylist(), shards.column("source_rows").to_pylist()
    for shard_uris, shard_rows in zip(uris, rows, strict=True):
        written.update(dict(zip(shard_uris, shard_rows, strict=True)))


def complete_rows(plan: RerunPlan) -> list[dict]:
    """The dry run's rows for the files the ledger shows complete (not opened)."""
    return [
        {
            "uri": e.uri,
            "documents": e.documents,
            "chunks": e.chunks,
            "done": e.chunks,
            "rejected": 0,
            "bytes": e.size,
            "to_label": 0,
            "ledger": True,
        }
        for e in plan.complete
    ]
