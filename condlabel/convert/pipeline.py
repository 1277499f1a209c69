"""The Ray Data graph of a conversion: the only module that wires Ray Data.

    input files ──read+chunk, skip done (tasks)──► chunks ──label (actor pool)──► labeled
                ──format+write (tasks, one complete-or-absent shard per batch)──► shard list

The driver consumes the small shard list, so it sees progress as shards land and prints rows/s
and an ETA without a second pass over the data. Around the graph: the writer lease, the done
index read from the output (resume), the labeler fingerprint guard and the run manifest.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConvertConfig
from condlabel.convert.reading import SUPPORTED_SUFFIXES
from condlabel.convert.runstate import (
    Lease,
    OutputState,
    check_fingerprint,
    read_output_state,
    versions,
    write_manifest,
)
from condlabel.convert.stages import (
    PADDED_TOKENS,
    USEFUL_TOKENS,
    FileStats,
    format_table,
    label_table,
    read_and_chunk,
    write_shard,
)
from condlabel.labelers import Labeler, build_labeler, labeler_fingerprint
from condlabel.ray_runtime import connect
from condlabel.storage import InputFile, StorageError, ensure_writable, expand_inputs

log = logging.getLogger("condlabel")

# Write tasks are light (parquet encode + one PUT); a small reservation keeps them schedulable.
_WRITER_CPUS = 0.25


@dataclass
class RunSummary:
    run_id: str
    output: str
    labeler: str
    status: str = "running"
    input_files: int = 0
    input_bytes: int = 0
    documents: int = 0
    chunks: int = 0
    skipped_done: int = 0
    rows_written: int = 0
    shards_written: int = 0
    rows_before: int = 0
    useful_tokens: int = 0
    padded_tokens: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    labeler_actors: int = 0
    seconds: float = 0.0
    seconds_planning: float = 0.0
    error: str | None = None

    @property
    def chunks_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_ratio(self) -> float | None:
        """Padded / useful token positions the labeler computed (1.0 = no padding)."""
        return self.padded_tokens / self.useful_tokens if self.useful_tokens else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "chunks_per_second": round(self.chunks_per_second, 3),
            "padding_ratio": self.padding_ratio,
        }

    def lines(self) -> list[str]:
        rejected = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        lines = [
            f"run {self.run_id} -> {self.output}: {self.status}",
            f"  labeler       {self.labeler} ({self.labeler_actors} actor(s))",
            f"  input         {self.input_files} file(s), {self.input_bytes / 1e6:.1f} MB",
            f"  documents     {self.documents} read, rejected: {rejected}",
            f"  chunks        {self.chunks} ({self.skipped_done} already in the output)",
            f"  written       {self.rows_written} rows in {self.shards_written} shard(s)",
            f"  time          {self.seconds:.1f} s, {self.chunks_per_second:.1f} chunks/s",
        ]
        if self.padding_ratio is not None and self.padded_tokens != self.useful_tokens:
            lines.append(f"  padding       {self.padding_ratio:.3f} padded/useful tokens")
        return lines


def new_run_id() -> str:
    """Sortable by start time, so "latest run" is a string comparison."""
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ") + "-" + uuid.uuid4().hex[:6]


def plan_inputs(cfg: ConvertConfig) -> list[InputFile]:
    """Expand and check inputs; fail before any work when something is missing."""
    if not cfg.input.paths:
        raise StorageError("no input given: pass --input URI (or set input.paths in the config)")
    suffixes = SUPPORTED_SUFFIXES if cfg.input.format == "auto" else ()
    return expand_inputs(cfg.input.paths, cfg.storage, suffixes=suffixes)


def init_ray(cfg: ConvertConfig) -> bool:
    """Connect to (or start) Ray for this run; True when this call did."""
    return connect(cfg.compute.address, cfg.compute.num_cpus)


def pool_size(cfg: ConvertConfig, resources: dict[str, float]) -> int:
    """Labeler actors: as configured, else as many as fit beside one reader and one writer."""
    c = cfg.compute
    if c.actors:
        return c.actors
    if c.num_gpus_per_actor > 0:
        return max(1, math.floor(resources.get("GPU", 0) / c.num_gpus_per_actor))
    spare = resources.get("CPU", 1) - c.num_cpus_per_reader - _WRITER_CPUS
    return max(1, math.floor(spare / c.num_cpus_per_actor))


def run_fingerprint(cfg: ConvertConfig) -> str:
    """What the `labeler` column records: the labeler, plus each control-token classifier."""
    from condlabel.classifiers import classifier_fingerprints

    return "+".join([labeler_fingerprint(cfg.labeler), *classifier_fingerprints(cfg.classifiers)])


class _LabelStage:
    """Stateful per-actor UDF: builds the labeler and classifiers (loads weights) once, then
    labels batches. One actor holds both, so they share its GPU.

    The build happens on the first batch rather than in __init__, so a rerun over a complete
    output (nothing left to label) never loads a model.
    """

    def __init__(self, cfg: ConvertConfig):
        self.cfg = cfg
        self.fingerprint = run_fingerprint(cfg)
        self.labeler: Labeler | None = None
        self.classifiers: list = []

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self.labeler is None:
            from condlabel.classifiers import build_classifiers

            self.labeler = build_labeler(self.cfg.labeler)
            self.classifiers = build_classifiers(self.cfg.classifiers, self.cfg.storage)
        table = label_table(self.labeler, batch, self.fingerprint)
        if self.classifiers:
            from condlabel.classifiers import classify_table

            table = classify_table(self.classifiers, table)
        return table


def _counter_actor():
    import ray

    @ray.remote(num_cpus=0)
    class RunCounter:
        """Per-file read statistics; keyed by file so a retried read task counts once."""

        def __init__(self) -> None:
            self.by_file: dict[str, FileStats] = {}

        def add(self, stats: FileStats) -> None:
            self.by_file[stats.source] = stats

        def all(self) -> list[FileStats]:
            return list(self.by_file.values())

    return RunCounter.remote()


def _tally(summary: RunSummary, stats: list[FileStats]) -> None:
    rejected: Counter[str] = Counter()
    summary.documents = sum(s.documents for s in stats)
    summary.chunks = sum(s.chunks for s in stats)
    summary.skipped_done = sum(s.skipped_done for s in stats)
    for s in stats:
        rejected.update(s.rejected)
    summary.rejected = dict(rejected)


def _eta(summary: RunSummary, stats: list[FileStats], elapsed: float) -> str:
    """Remaining time from the labeling rate; the amount of work left is extrapolated from
    the files read so far (chunks to label per input byte) until every file has been read."""
    if not summary.rows_written or not stats:
        return "ETA unknown"
    read_bytes = sum(s.bytes for s in stats)
    to_label = sum(s.to_label for s in stats)
    if len(stats) < summary.input_files and read_bytes:
        to_label = round(to_label * summary.input_bytes / read_bytes)
    rate = summary.rows_written / elapsed
    left = max(0, to_label - summary.rows_written)
    approx = "~" if len(stats) < summary.input_files else ""
    return f"ETA {approx}{left / rate:.0f} s ({summary.rows_written}/{approx}{to_label})"


def prepare_run(cfg: ConvertConfig) -> tuple[list[InputFile], str]:
    """Checks that need no Ray and touch nothing: the inputs exist, the output is writable."""
    files = plan_inputs(cfg)
    ensure_writable(cfg.output.uri, cfg.storage)
    return files, run_fingerprint(cfg)


def output_state(cfg: ConvertConfig, fingerprint: str, allow_mixed: bool) -> OutputState:
    """Scan the output's key columns once (the done index) and apply the fingerprint guard."""
    state = read_output_state(cfg.output.uri, cfg.storage)
    check_fingerprint(fingerprint, state.labelers, allow_mixed or cfg.output.allow_mixed_labelers)
    return state


def _manifest(
    cfg: ConvertConfig,
    summary: RunSummary,
    files: list[InputFile],
    started_at: str,
    state: OutputState,
) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "status": summary.status,
        "started_at": started_at,
        "finished_at": None
        if summary.status == "running"
        else datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "labeler": summary.labeler,
        "config": cfg.redacted(),
        "inputs": [{"uri": f.uri, "bytes": f.size} for f in files],
        "output_before": {
            "rows": state.rows,
            "labelers": state.labelers,
            "duplicate_keys": state.duplicate_keys,
        },
        "counts": {
            "documents": summary.documents,
            "chunks": summary.chunks,
            "labeled": summary.rows_written,
            "skipped_done": summary.skipped_done,
            "rejected": summary.rejected,
            "shards": summary.shards_written,
        },
        "timings": {
            "seconds": round(summary.seconds, 3),
            "seconds_planning": round(summary.seconds_planning, 3),
            "chunks_per_second": round(summary.chunks_per_second, 3),
        },
        "tokens": {
            "useful": summary.useful_tokens,
            "padded": summary.padded_tokens,
            "padding_ratio": summary.padding_ratio,
        },
        "labeler_actors": summary.labeler_actors,
        "error": summary.error,
        "versions": versions(),
    }


def run_conversion(
    cfg: ConvertConfig, run_id: str | None = None, allow_mixed: bool = False
) -> RunSummary:
    """Label every chunk of the configured inputs that is not yet in `cfg.output.uri`."""
    run_id = run_id or new_run_id()
    started = time.monotonic()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    files, fingerprint = prepare_run(cfg)
    lease = Lease(cfg.output.uri, run_id, cfg.storage, cfg.output.lease_ttl_s)
    lease.acquire()
    if lease.previous and lease.previous.get("run_id") != run_id:
        log.warning("took over the expired lease of run %s", lease.previous.get("run_id"))
    summary = RunSummary(
        run_id,
        cfg.output.uri,
        fingerprint,
        input_files=len(files),
        input_bytes=sum(f.size for f in files),
    )
    try:
        # Read the done index under the lease: nobody else can be adding rows now.
        state = output_state(cfg, fingerprint, allow_mixed)
        summary.rows_before = state.rows
        summary.seconds_planning = time.monotonic() - started
        write_manifest(
            cfg.output.uri, run_id, _manifest(cfg, summary, files, started_at, state), cfg.storage
        )
        log.info(
            "run %s: %d input file(s), %.1f MB; %d chunk(s) already in %s",
            run_id,
            len(files),
            summary.input_bytes / 1e6,
            len(state.done),
            cfg.output.uri,
        )
        try:
            _execute(cfg, summary, files, state, started)
            summary.status = "succeeded"
        except BaseException as exc:
            summary.status = "failed"
            summary.error = f"{type(exc).__name__}: {exc}"[:2000]
            raise
        finally:
            summary.seconds = time.monotonic() - started
            try:
                write_manifest(
                    cfg.output.uri,
                    run_id,
                    _manifest(cfg, summary, files, started_at, state),
                    cfg.storage,
                )
            except Exception as exc:  # noqa: BLE001 - the original error matters more
                log.warning("could not write the run manifest: %s", exc)
    finally:
        lease.release()
    return summary


def _execute(
    cfg: ConvertConfig,
    summary: RunSummary,
    files: list[InputFile],
    state: OutputState,
    started: float,
) -> None:
    import ray

    started_ray = init_ray(cfg)
    try:
        _execute_graph(cfg, summary, files, state, started)
    finally:
        if started_ray:  # an embedded Ray lives as long as the run that started it
            ray.shutdown()


def _execute_graph(
    cfg: ConvertConfig,
    summary: RunSummary,
    files: list[InputFile],
    state: OutputState,
    started: float,
) -> None:
    import ray
    import ray.data

    summary.labeler_actors = pool_size(cfg, ray.cluster_resources())
    counter = _counter_actor()
    done_ref = ray.put(state.done)
    run_id = summary.run_id

    def read(batch: dict[str, Any]):
        done = ray.get(done_ref)
        for uri, size in zip(batch["uri"], batch["size"], strict=True):
            for item in read_and_chunk(
                str(uri), cfg, run_id, done=done, rows_per_batch=cfg.compute.batch_size * 8
            ):
                if isinstance(item, FileStats):
                    item.bytes = int(size)
                    ray.get(counter.add.remote(item))
                else:
                    yield item

    def format_and_write(batch: pa.Table) -> dict[str, list]:
        shard = write_shard(
            format_table(cfg.format, batch, run_id),
            cfg.output.uri,
            cfg.storage,
            cfg.output.compression,
        )
        return {
            "path": [shard],
            "rows": [batch.num_rows],
            "useful": [pc.sum(batch.column(USEFUL_TOKENS)).as_py() or 0],
            "padded": [pc.sum(batch.column(PADDED_TOKENS)).as_py() or 0],
        }

    ds = (
        ray.data.from_items(
            [{"uri": f.uri, "size": f.size} for f in files], override_num_blocks=len(files)
        )
        .map_batches(read, batch_size=1, num_cpus=cfg.compute.num_cpus_per_reader)
        .map_batches(
            _LabelStage,
            fn_constructor_args=(cfg,),
            batch_size=cfg.compute.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                # Start the whole pool at once (loading weights in parallel while the readers
                # work); it may shrink to one actor when input runs dry.
                min_size=1,
                max_size=summary.labeler_actors,
                initial_size=summary.labeler_actors,
            ),
            num_cpus=cfg.compute.num_cpus_per_actor,
            num_gpus=cfg.compute.num_gpus_per_actor or None,
            resources=cfg.compute.actor_resources or None,
        )
        .map_batches(
            format_and_write,
            batch_size=cfg.output.rows_per_file,
            batch_format="pyarrow",
            num_cpus=_WRITER_CPUS,
        )
    )

    last_report = time.monotonic()
    for raw_batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        batch = cast(pa.Table, raw_batch)
        summary.rows_written += pc.sum(batch.column("rows")).as_py()
        summary.shards_written += batch.num_rows
        summary.useful_tokens += pc.sum(batch.column("useful")).as_py()
        summary.padded_tokens += pc.sum(batch.column("padded")).as_py()
        now = time.monotonic()
        if now - last_report >= cfg.compute.progress_interval_s:
            last_report = now
            stats = ray.get(counter.all.remote())
            log.info(
                "progress: %d chunks labeled, %.1f chunks/s, %d/%d files read, %s",
                summary.rows_written,
                summary.rows_written / (now - started),
                len(stats),
                summary.input_files,
                _eta(summary, stats, now - started),
            )
    _tally(summary, ray.get(counter.all.remote()))
    ray.kill(counter)


def dry_run(cfg: ConvertConfig, allow_mixed: bool = False) -> dict[str, Any]:
    """What a run would do, per input file, without labeling or writing anything."""
    import ray
    import ray.data

    files, fingerprint = prepare_run(cfg)
    state = output_state(cfg, fingerprint, allow_mixed)
    started_ray = init_ray(cfg)
    done_ref = ray.put(state.done)

    def count(batch: dict[str, Any]) -> dict[str, list]:
        done = ray.get(done_ref)
        rows: dict[str, list] = {
            "uri": [],
            "documents": [],
            "chunks": [],
            "done": [],
            "rejected": [],
        }
        for uri in batch["uri"]:
            for item in read_and_chunk(str(uri), cfg, "dry-run", done=done, keep_rejects=False):
                if isinstance(item, FileStats):
                    rows["uri"].append(item.source)
                    rows["documents"].append(item.documents)
                    rows["chunks"].append(item.chunks)
                    rows["done"].append(item.skipped_done)
                    rows["rejected"].append(sum(item.rejected.values()))
        return rows

    per_file = (
        ray.data.from_items([{"uri": f.uri} for f in files], override_num_blocks=len(files))
        .map_batches(count, batch_size=1, num_cpus=cfg.compute.num_cpus_per_reader)
        .take_all()
    )
    if started_ray:
        ray.shutdown()
    sizes = {f.uri: f.size for f in files}
    per_file = sorted(
        ({**r, "bytes": sizes[r["uri"]], "to_label": r["chunks"] - r["done"]} for r in per_file),
        key=lambda r: r["uri"],
    )
    return {
        "output": cfg.output.uri,
        "labeler": fingerprint,
        "output_rows": state.rows,
        "output_labelers": state.labelers,
        "files": per_file,
        "totals": {
            k: sum(r[k] for r in per_file)
            for k in ("bytes", "documents", "chunks", "done", "to_label", "rejected")
        },
    }


def plan_lines(plan: dict[str, Any]) -> list[str]:
    """The dry run's plan as a table: one line per input file, then the totals."""
    lines = [
        f"dry run: nothing labeled or written\noutput  {plan['output']} "
        f"({plan['output_rows']} rows already)\nlabeler {plan['labeler']}",
        f"{'documents':>10} {'chunks':>8} {'done':>8} {'to label':>8} {'rejected':>8}  file",
    ]
    for r in plan["files"]:
        lines.append(
            f"{r['documents']:>10} {r['chunks']:>8} {r['done']:>8} {r['to_label']:>8} "
            f"{r['rejected']:>8}  {r['uri']}"
        )
    t = plan["totals"]
    lines.append(
        f"{t['documents']:>10} {t['chunks']:>8} {t['done']:>8} {t['to_label']:>8} "
        f"{t['rejected']:>8}  total ({len(plan['files'])} files, {t['bytes'] / 1e6:.1f} MB)"
    )
    return lines
