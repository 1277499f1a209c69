"""The done check's scope: which output shards a rerun must read to learn which chunks of the
files it reads are already written, so that a rerun with new files costs what they cost.

    before its first shard, a run records the files it is about to read:
        _ledger/_started/<run_id>.parquet    (uri, key, size, version, fingerprint, labeler,
                                              run_id, seq)
    a rerun's files (those the ledger does not show complete) are then
        brand-new   no run ever started a file of that identity (its path under the input it
                    was found under): none of its chunks can be in the output, so it needs no
                    done check at all, unless no input file of the run is known while the
                    output holds shards (a moved or renamed input root): then the full check;
        started     some run started it (a partial file, or a complete one that changed since):
                    its chunks can only be in shards written since the earliest such run
                    recorded it, and only those shards are read.

A shard's age comes from the output's listing (mtime, or LastModified on S3): the same storage
clock that dated the started record, which is complete before the run's first shard exists,
so a run killed at any point leaves no shard outside the scope. Matching is by URI alone (any
size, version or fingerprint), as the full check would find a changed file's unchanged
documents too.

The scope falls back to the whole output (the full check) whenever it cannot be trusted:
`output.done_check=full`; no started record, or one that cannot be
read; a shard older than every started record (written before runs kept them, or `_ledger/`
was deleted); a run in `_manifest/` without a started record; a ledger that disagrees with the
output. A full-check run writes its record too.

What the scope does not see: a document whose (doc_id, doc_hash) reached the output from
another input file, by a run that never started this one. The full check skips such a copy;
the scoped check labels it again, so the output holds that key twice (readers keep one row per
key, `condlabel status` counts the other under duplicate keys). `output.done_check=full`
keeps the full check for corpora where ids repeat across files. No Ray here.
"""

from __future__ import annotations

import logging
import math
import posixpath
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from condlabel.config import ConvertConfig, StorageConfig
from condlabel.schema import LEDGER_DIR
from condlabel.storage import InputFile, is_hidden, resolve, write_bytes_atomic

if TYPE_CHECKING:
    from condlabel.runs.ledger import RerunPlan
    from condlabel.runs.sequence import OutputListing

log = logging.getLogger("condlabel")

STARTED_DIR = "_started"
"""Under `_ledger/`; `_`-prefixed, so the ledger's reader skips it."""
STARTED_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("size", pa.int64()),
        ("version", pa.string()),
        ("fingerprint", pa.string()),
        ("labeler", pa.string()),
        ("run_id", pa.string()),
        ("key", pa.string()),
        ("seq", pa.int64()),
    ]
)
# Record and shards are dated by the store (whole seconds on S3, which rounds both alike); an
# object store's front ends may differ by a little, so shards this close before a record still
# count as written after it (reading a few more is harmless).
CLOCK_MARGIN_S = 2.0
SEQ_KEY = "condlabel.seq"
"""Metadata key of a record's run `seq` (kept there too: a record may list no file)."""
WROTE_NOTHING = "condlabel.wrote_nothing"
"""Metadata key of a record rewritten by a run that ended without writing a shard."""


@dataclass(frozen=True)
class Started:
    """One run's started record, dated by the listing."""

    run_id: str
    since: float
    uris: frozenset[str] | None
    """The identities (`InputFile.identity`) of the files it started; None when the record
    could not be read."""
    labeler: str = ""
    seq: int = 0


@dataclass
class DoneScope:
    """The shards the done check reads: None means every shard (the full check)."""

    shards: list[str] | None
    reason: str
    started_files: int = 0
    labelers: dict[str, int] = field(default_factory=dict)
    """Run labelers by input files started (the fingerprint guard when not every shard is read)."""

    @property
    def mode(self) -> str:
        return "full" if self.shards is None else "scoped"


def plan_scope(
    to_read: list[InputFile],
    records: list[Started],
    shards: list[tuple[str, float | None]],
    manifest_runs: Iterable[str],
    inputs: list[InputFile] | None = None,
) -> DoneScope:
    """The shards that may hold chunks of `to_read`, from the started records, the output's
    shards (path, listing time) and the run ids that have a manifest; `inputs`: all the run's
    files (default `to_read`), of which at least one must be known for "never started" to be
    believed."""
    if not shards:
        return DoneScope([], "the output holds no shard")
    if not records:
        return DoneScope(None, "no started record under _ledger/_started/")
    if unreadable := [r.run_id for r in records if r.uris is None]:
        return DoneScope(None, f"the started record of run {unreadable[0]} cannot be read or dated")
    if unrecorded := sorted(set(manifest_runs) - {r.run_id for r in records}):
        return DoneScope(None, f"run {unrecorded[0]} has a manifest but no started record")
    if undated := [p for p, t in shards if t is None]:
        return DoneScope(None, f"the listing gives no time for {undated[0]}")
    first = min(r.since for r in records)
    if older := [p for p, t in shards if t is not None and t < first - CLOCK_MARGIN_S]:
        return DoneScope(
            None, f"{len(older)} shard(s) older than the first started record (e.g. {older[0]})"
        )
    labelers: Counter[str] = Counter()
    earliest: dict[str, float] = {}
    for r in records:
        uris = r.uris or frozenset()
        if uris and r.labeler:  # no labeler: the run wrote nothing
            labelers[r.labeler] += len(uris)
        for uri in uris:
            earliest[uri] = min(earliest.get(uri, math.inf), r.since)
    starts = [earliest[i] for i in _identities(to_read) if i in earliest]
    if not starts:
        if not any(i in earliest for i in _identities(inputs or to_read)):
            # Output exists, yet no input file is known: a moved or renamed input root, or
            # records of another corpus. Check everything rather than label it all again.
            return DoneScope(None, "no input file is known to an earlier run")
        return DoneScope([], "no earlier run started these files", 0, dict(labelers))
    since = min(starts) - CLOCK_MARGIN_S
    return DoneScope(
        [p for p, t in shards if t is not None and t >= since],
        f"{len(starts)} file(s) started by an earlier run: the shards written since",
        len(starts),
        dict(labelers),
    )


def _identities(files: list[InputFile]) -> list[str]:
    """Each file's identity, and its URI (older releases' records name files by URI)."""
    return [i for f in files for i in dict.fromkeys((f.identity, f.uri))]


def done_scope(
    cfg: ConvertConfig, plan: RerunPlan, inputs: list[InputFile], listing: OutputListing
) -> DoneScope:
    """The scope of this run's done check, from the run's one listing of the output, of
    `_manifest/` and of the started records (each record is a few bytes per file)."""
    o = cfg.output
    if o.done_check == "full":
        return DoneScope(None, "output.done_check=full")
    if plan.output_changed:
        return DoneScope(None, "the ledger disagrees with the output")
    scope = plan_scope(plan.to_read, listing.started, listing.shards, listing.manifest_runs, inputs)
    log.info(
        "done check: %s (%s)",
        "the whole output" if scope.shards is None else f"{len(scope.shards)} shard(s)",
        scope.reason,
    )
    return scope


def write_started(
    cfg: ConvertConfig,
    run_id: str,
    files: list[InputFile],
    fingerprint: str,
    labeler: str,
    wrote_nothing: bool = False,
    seq: int = 0,
) -> str:
    """Record the files this run is about to read, before its first shard (a run with none to
    read records an empty list: its manifest then has a record). `wrote_nothing`: rewritten
    so by a run that ended without a shard (its labeler then holds no rows here); never after
    a shard, whose date must stay after its run's record."""
    table = pa.Table.from_pylist(
        [
            {
                "uri": f.uri,
                "size": f.size,
                "version": f.version,
                "fingerprint": fingerprint,
                "labeler": labeler,
                "run_id": run_id,
                "key": f.key,
                "seq": seq,
            }
            for f in files
        ],
        schema=STARTED_SCHEMA.with_metadata(
            {SEQ_KEY: str(seq), **({WROTE_NOTHING: "1"} if wrote_nothing else {})}
        ),
    )
    fs, root = resolve(cfg.output.uri, cfg.storage)
    path = posixpath.join(root, LEDGER_DIR, STARTED_DIR, f"{run_id}.parquet")
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    write_bytes_atomic(fs, path, sink.getvalue().to_pybytes())
    return path


def read_started(output_uri: str, storage: StorageConfig) -> list[Started]:
    """Every run's started record, dated by the listing; one that cannot be read is kept with
    `uris=None` (the done check then reads the whole output)."""
    fs, root = resolve(output_uri, storage)
    directory = posixpath.join(root, LEDGER_DIR, STARTED_DIR)
    if not fs.exists(directory):
        return []
    records = []
    for path, info in sorted(fs.find(directory, detail=True).items()):
        name = posixpath.basename(path)
        if not name.endswith(".parquet") or name.startswith((".", "_")):
            continue
        run_id = name.removesuffix(".parquet")
        since = listing_time(info)
        if since is None:  # undated: which shards came after it is unknown
            records.append(Started(run_id, 0.0, None))
            continue
        try:
            with fs.open(path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                empty = WROTE_NOTHING.encode() in (parquet.schema_arrow.metadata or {})
                names = parquet.schema_arrow.names
                table = parquet.read(
                    columns=[c for c in ("uri", "labeler", "key", "seq") if c in names]
                )
        except (OSError, ValueError, pa.ArrowException) as exc:
            log.warning("started record %s cannot be read (%s)", path, exc)
            records.append(Started(run_id, since, None))
            continue
        labelers = [] if empty else table.column("labeler").unique().to_pylist()
        keys = table.column("key").to_pylist() if "key" in names else [None] * table.num_rows
        uris = frozenset(k or u for k, u in zip(keys, table.column("uri").to_pylist(), strict=True))
        seq = int((parquet.schema_arrow.metadata or {}).get(SEQ_KEY.encode(), b"0"))
        labeler = str(labelers[0]) if labelers else ""
        records.append(Started(run_id, since, uris, labeler, seq))
    return records


def list_shards(output_uri: str, storage: StorageConfig) -> list[tuple[str, float | None]]:
    """The output's data shards (as `readback.tagged_dataset` finds them) with their listing
    time."""
    fs, root = resolve(output_uri, storage)
    root = root.rstrip("/")
    shards = []
    for path, info in sorted(fs.find(root, detail=True).items()):
        if path.endswith(".parquet") and not is_hidden(path, root):
            shards.append((path, listing_time(info)))
    return shards


def listing_time(info: dict[str, Any]) -> float | None:
    """Seconds since the epoch when the store last wrote an object, from its listing entry
    (`mtime` on local disks, `LastModified` on S3, `updated` on GCS)."""
    value = info.get("mtime") or info.get("LastModified") or info.get("updated")
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return float(value) if isinstance(value, (int, float)) else None
