"""The Ray Data graph of a conversion: the only module that wires Ray Data.

    input files ──keys (tasks)──► the later occurrences of each id (driver: hashes only)
    input files ──read+chunk, skip done and duplicates (tasks)──► chunks
                ──label (actor pool; a failing chunk is retried alone, then rejected)──► labeled
                ──format+write (tasks, one complete-or-absent shard per batch)──► shard list

Input files are read in tasks of several small files each (`compute.bytes_per_read_task`). The
driver consumes the small shard list, so it sees progress as shards land and shows rows/s and
an ETA without a second pass over the data. Around the graph: the writer lease, the done index
read from the output (resume), the labeler fingerprint guard and the run manifest.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConvertConfig
from condlabel.convert.budget import InFlight, RemoteTracker, label_with_budget
from condlabel.convert.copies import CopyRun, plan_copy_run
from condlabel.convert.duplicates import KEY_FIELDS, document_keys, find_duplicates
from condlabel.convert.inputs import check_overlap, plan_inputs, read_tasks
from condlabel.convert.progress import Progress
from condlabel.convert.runstate import (
    Lease,
    LeaseGuard,
    OutputState,
    check_fingerprint,
    read_output_state,
)
from condlabel.convert.stages import (
    PADDED_TOKENS,
    USEFUL_TOKENS,
    FileStats,
    format_table,
    label_or_reject,
    labeler_rejects_name,
    read_and_chunk,
    write_rejects,
    write_shard,
)
from condlabel.convert.summary import RunSummary, check_labeler_errors, new_run_id, recorded
from condlabel.labelers import Labeler, build_labeler, labeler_fingerprint
from condlabel.ray_runtime import connect, is_verbose, ray_session
from condlabel.storage import InputFile, ensure_writable

if TYPE_CHECKING:
    import ray.data

__all__ = [
    "RunSummary",
    "dry_run",
    "init_ray",
    "new_run_id",
    "plan_lines",
    "run_conversion",
]

log = logging.getLogger("condlabel")

# Write tasks are light (parquet encode + one PUT); a small reservation keeps them schedulable.
_WRITER_CPUS = 0.25


def build_graph(
    cfg: ConvertConfig,
    files: list[InputFile],
    skip_refs: tuple[Any, Any],
    counter: Any,
    summary: RunSummary,
    lease: LeaseGuard | None = None,
    copies: CopyRun | None = None,
) -> ray.data.Dataset:
    """The graph, lazily: iterating it runs the conversion and yields one row per shard.
    `skip_refs`: object refs of the done index and of the duplicates (`find_duplicates`);
    `lease`: checked before every shard write, so a run that lost its lease stops writing;
    `copies`: held back by the read step, their labels kept by the label stage."""
    import ray.data

    read = partial(_read_files, cfg=cfg, run_id=summary.run_id, refs=skip_refs, counter=counter)
    read = partial(read, copies=copies)
    return (
        _reads_dataset(cfg, files)
        .map_batches(read, batch_size=1, batch_format="pyarrow", **_reader(cfg))
        .map_batches(
            _LabelStage,
            fn_constructor_args=(cfg, summary.run_id, counter, copies),
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
            partial(_format_and_write, cfg=cfg, run_id=summary.run_id, lease=lease),
            batch_size=cfg.output.rows_per_file,
            batch_format="pyarrow",
            num_cpus=_WRITER_CPUS,
        )
    )


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
        log.warning("took over the lease of run %s", lease.previous.get("run_id"))
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
        with recorded(cfg, summary, files, state, started, started_at):
            log.info(
                "run %s: %d input file(s), %.1f MB; %d chunk(s) already in %s",
                run_id,
                len(files),
                summary.input_bytes / 1e6,
                len(state.done),
                cfg.output.uri,
            )
            _execute(cfg, summary, files, state, started, lease)
    finally:
        lease.release()
    return summary


def _execute(
    cfg: ConvertConfig,
    summary: RunSummary,
    files: list[InputFile],
    state: OutputState,
    started: float,
    lease: Lease,
) -> None:
    """Run the graph and fill in the summary as its shards land."""
    import ray

    with _ray(cfg):
        summary.labeler_actors = pool_size(cfg, ray.cluster_resources())
        counter = _counter_actor()

        def read_stats() -> list[FileStats]:
            return ray.get(counter.all.remote())

        skip_refs = (ray.put(state.done), ray.put(_find_duplicates(cfg, files)))
        copies = plan_copy_run(
            cfg, summary.run_id, _reads_dataset(cfg, files), _reader(cfg), skip_refs, counter
        )
        graph = build_graph(cfg, files, skip_refs, counter, summary, lease.guard(), copies)
        write = partial(_format_and_write, cfg=cfg, run_id=summary.run_id, lease=lease.guard())
        with Progress(summary, started, cfg.compute.progress_interval_s, read_stats) as progress:
            shards = graph.iter_batches(batch_size=None, batch_format="pyarrow")
            # The copies are written once the whole graph has run: their labels are all known.
            for batch in chain(shards, copies.written(write, _WRITER_CPUS) if copies else ()):
                _add_shards(summary, cast(pa.Table, batch))
                lease.ensure_held()  # a run that lost its lease stops now (exit 4)
                progress.update()
        summary.tally(read_stats())
        summary.labeler_calls_saved = copies.finish() if copies else 0
        failed, first_error = ray.get(counter.labeler_errors.remote())
        ray.kill(counter)
    if failed:
        summary.rejected.update(failed)
        check_labeler_errors(
            summary, sum(failed.values()), first_error, cfg.compute.max_labeler_error_share
        )


def dry_run(cfg: ConvertConfig, allow_mixed: bool = False) -> dict[str, Any]:
    """What a run would do, per input file, without labeling or writing anything."""
    import ray

    files, fingerprint = prepare_run(cfg)
    state = output_state(cfg, fingerprint, allow_mixed)
    with _ray(cfg):
        refs = (ray.put(state.done), ray.put(_find_duplicates(cfg, files)))
        count = partial(_count_files, cfg=cfg, refs=refs)
        per_file = (
            _reads_dataset(cfg, files)
            .map_batches(count, batch_size=1, batch_format="pyarrow", **_reader(cfg))
            .take_all()
        )
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


# --- the graph's steps (they run in Ray tasks and actors) ---


def _reads_dataset(cfg: ConvertConfig, files: list[InputFile]) -> ray.data.Dataset:
    """One row (and block) per read task: the URIs, sizes and input-order indices of its files."""
    import ray.data

    index = {f.uri: i for i, f in enumerate(files)}
    groups = read_tasks(files, cfg.compute.bytes_per_read_task)
    return ray.data.from_items(
        [
            {
                "uri": [f.uri for f in g],
                "size": [f.size for f in g],
                "index": [index[f.uri] for f in g],
            }
            for g in groups
        ],
        override_num_blocks=len(groups),
    )


def _reader(cfg: ConvertConfig) -> dict[str, Any]:
    return {"num_cpus": cfg.compute.num_cpus_per_reader}


def _files_of(batch: pa.Table) -> Iterator[tuple[str, int, int]]:
    """(uri, size, input-order index) of each file of a read task."""
    for task in batch.to_pylist():
        yield from zip(task["uri"], task["size"], task["index"], strict=True)


def _find_duplicates(cfg: ConvertConfig, files: list[InputFile]) -> dict:
    """The key pass: every document's keys, read in tasks, then the later occurrence of each id
    (`condlabel.convert.duplicates`); the driver holds 40 bytes per document, no text."""
    parts = [
        cast(dict, batch)
        for batch in _reads_dataset(cfg, files)
        .map_batches(
            partial(_read_keys, cfg=cfg), batch_size=1, batch_format="pyarrow", **_reader(cfg)
        )
        .iter_batches(batch_size=None, batch_format="numpy")
    ]
    keys = {k: np.concatenate([p[k] for p in parts]).astype(np.int64) for k in KEY_FIELDS}
    found = find_duplicates(keys, [f.uri for f in files]) if parts else {}
    if found:
        later = sum(len(positions) for positions in found.values())
        log.warning("%d later occurrence(s) of an id go to _rejects/ (duplicate_id/_text)", later)
    return found


def _read_keys(batch: pa.Table, cfg: ConvertConfig) -> dict[str, np.ndarray]:
    parts = [document_keys(uri, index, cfg) for uri, _, index in _files_of(batch)]
    return {k: np.concatenate([p[k] for p in parts]) for k in KEY_FIELDS}


def _chunks_and_stats(
    batch: pa.Table, cfg: ConvertConfig, run_id: str, refs: tuple[Any, Any], keep_rejects: bool
):
    """Each file of the read task read and chunked: chunk tables, then the file's stats."""
    import ray

    done, duplicates = ray.get(list(refs))
    for uri, size, _ in _files_of(batch):
        for item in read_and_chunk(
            uri,
            cfg,
            run_id,
            done=done,
            rows_per_batch=cfg.compute.batch_size * 8,
            keep_rejects=keep_rejects,
            duplicates=duplicates.get(uri),
        ):
            if isinstance(item, FileStats):
                item.bytes = int(size)
            yield item


def _read_files(
    batch: pa.Table,
    cfg: ConvertConfig,
    run_id: str,
    refs: tuple[Any, Any],
    counter,
    copies: CopyRun | None = None,
):
    """Read step: yield the chunks still to label (copies held back); each file's stats go to
    the run's counter."""
    import ray

    for item in _chunks_and_stats(batch, cfg, run_id, refs, keep_rejects=True):
        if isinstance(item, FileStats):
            ray.get(counter.add.remote(item))
        else:
            yield copies.hold_back(item) if copies else item


def _count_files(batch: pa.Table, cfg: ConvertConfig, refs: tuple[Any, Any]) -> dict[str, list]:
    """The dry run's read step: each file's counts, nothing kept or written."""
    rows: dict[str, list] = {k: [] for k in ("uri", "documents", "chunks", "done", "rejected")}
    for item in _chunks_and_stats(batch, cfg, "dry-run", refs, keep_rejects=False):
        if isinstance(item, FileStats):
            rows["uri"].append(item.source)
            rows["documents"].append(item.documents)
            rows["chunks"].append(item.chunks)
            rows["done"].append(item.skipped_done)
            rows["rejected"].append(sum(item.rejected.values()))
    return rows


class _LabelStage:
    """Stateful per-actor UDF: builds the labeler and classifiers (loads weights) once, then
    labels batches. One actor holds both, so they share its GPU.

    The build happens on the first batch rather than in __init__, so a rerun over a complete
    output (nothing left to label) never loads a model.
    """

    def __init__(
        self, cfg: ConvertConfig, run_id: str, counter: Any, copies: CopyRun | None = None
    ):
        self.cfg, self.copies = cfg, copies
        self.run_id = run_id
        self.counter = counter
        self.fingerprint = run_fingerprint(cfg)
        self.labeler: Labeler | None = None
        self.classifiers: list = []

    def __call__(self, batch: pa.Table) -> pa.Table:
        import ray

        if self.labeler is None:
            from condlabel.classifiers import build_classifiers

            self.labeler = build_labeler(self.cfg.labeler, self.cfg.storage)
            self.classifiers = build_classifiers(self.cfg.classifiers, self.cfg.storage)
        table, rejects = label_with_budget(
            partial(label_or_reject, self.labeler, fingerprint=self.fingerprint),
            batch,
            self.cfg.compute.label_timeout_s,
            RemoteTracker(self.counter),
        )
        if rejects:
            name = labeler_rejects_name(rejects)
            write_rejects(rejects, self.cfg.output.uri, self.run_id, name, self.cfg.storage)
            reasons = Counter(r.reason for r in rejects)
            ray.get(self.counter.add_labeler_errors.remote(name, reasons, rejects[0].detail))
        if self.classifiers and table.num_rows:
            from condlabel.classifiers import classify_table

            table = classify_table(self.classifiers, table)
        if self.copies:
            self.copies.keep_labels(table)
        return table


def _format_and_write(
    batch: pa.Table, cfg: ConvertConfig, run_id: str, lease: LeaseGuard | None = None
) -> dict[str, list]:
    """Write step: one shard per batch; returns the shard's row in the shard list."""
    if batch.num_rows == 0:  # every chunk of a labeler batch was rejected
        return {"path": [], "rows": [], "useful": [], "padded": []}
    if lease is not None:
        lease.ensure_held()
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


# --- the driver's side ---


def _add_shards(summary: RunSummary, shards: pa.Table) -> None:
    summary.rows_written += pc.sum(shards.column("rows")).as_py()
    summary.shards_written += shards.num_rows
    summary.useful_tokens += pc.sum(shards.column("useful")).as_py()
    summary.padded_tokens += pc.sum(shards.column("padded")).as_py()


def _counter_actor():
    import ray

    @ray.remote(num_cpus=0)
    class RunCounter(InFlight):
        """Per-file read statistics, keyed by file so a retried read task counts once; labeler
        failures by batch; the labeler calls in flight (`condlabel.convert.budget`)."""

        def __init__(self) -> None:
            super().__init__()
            self.by_file: dict[str, FileStats] = {}
            self.failed_by_batch: dict[str, Counter[str]] = {}
            self.first_error = ""

        def add(self, stats: FileStats) -> None:
            self.by_file[stats.source] = stats

        def all(self) -> list[FileStats]:
            return list(self.by_file.values())

        def add_labeler_errors(self, name: str, reasons: Counter[str], detail: str) -> None:
            self.failed_by_batch[name] = reasons
            self.first_error = self.first_error or detail

        def labeler_errors(self) -> tuple[Counter[str], str]:
            return sum(self.failed_by_batch.values(), Counter()), self.first_error

    return RunCounter.remote()


def init_ray(cfg: ConvertConfig) -> bool:
    """Connect to (or start) Ray for this run; True when this call did."""
    return connect(cfg.compute.address, cfg.compute.num_cpus, worker_logs=is_verbose())


def _ray(cfg: ConvertConfig) -> AbstractContextManager[None]:
    """Ray for one run or dry run; workers' output stays in their log files unless verbose."""
    return ray_session(cfg.compute.address, cfg.compute.num_cpus, worker_logs=is_verbose())


def pool_size(cfg: ConvertConfig, resources: dict[str, float]) -> int:
    """Labeler actors: as configured, else as many as fit beside one reader and one writer."""
    c = cfg.compute
    if c.actors:
        return c.actors
    if c.num_gpus_per_actor > 0:
        return max(1, math.floor(resources.get("GPU", 0) / c.num_gpus_per_actor))
    spare = resources.get("CPU", 1) - c.num_cpus_per_reader - _WRITER_CPUS
    return max(1, math.floor(spare / c.num_cpus_per_actor))


# --- before any work: the inputs, the output and the labeler's fingerprint ---


def prepare_run(cfg: ConvertConfig) -> tuple[list[InputFile], str]:
    """Checks that need no Ray and touch nothing: the output lies outside every input, the
    inputs exist, the output is writable."""
    check_overlap(cfg.input.paths, cfg.output.uri)
    files = plan_inputs(cfg)
    ensure_writable(cfg.output.uri, cfg.storage)
    return files, run_fingerprint(cfg)


def run_fingerprint(cfg: ConvertConfig) -> str:
    """What the `labeler` column records: the labeler, plus each control-token classifier."""
    from condlabel.classifiers import classifier_fingerprints

    return "+".join([labeler_fingerprint(cfg.labeler), *classifier_fingerprints(cfg.classifiers)])


def output_state(cfg: ConvertConfig, fingerprint: str, allow_mixed: bool) -> OutputState:
    """Scan the output's key columns once (the done index) and apply the fingerprint guard."""
    state = read_output_state(cfg.output.uri, cfg.storage)
    check_fingerprint(fingerprint, state.labelers, allow_mixed or cfg.output.allow_mixed_labelers)
    return state


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
