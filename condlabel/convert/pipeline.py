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
import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from datetime import datetime, timezone
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConvertConfig
from condlabel.convert.budget import InFlight, RemoteTracker, label_with_budget
from condlabel.convert.cascade import cascade_labelers, routed_rows, with_teacher
from condlabel.convert.copies import CopyRun, plan_copy_run
from condlabel.convert.costs import (
    ActorClock,
    AliveReporter,
    add_tokens,
    counter_seconds,
    shard_tokens,
)
from condlabel.convert.donecheck import scan_output
from condlabel.convert.duplicates import KEY_FIELDS, document_keys, find_duplicates
from condlabel.convert.format import vocabulary_for
from condlabel.convert.inputs import check_overlap, plan_inputs, read_tasks
from condlabel.convert.ledger import (
    RerunPlan,
    add_written,
    complete_rows,
    count_complete,
    record_ledger,
    rerun_plan,
    shard_sources,
)
from condlabel.convert.progress import Progress
from condlabel.convert.runstate import (
    DoneIndex,
    Lease,
    LeaseGuard,
    OutputState,
    check_fingerprint,
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
    `copies`: held back by the read step, their labels kept by the write step (after the
    teacher, so a copy gets its chunk's final labels)."""
    import ray.data

    read = partial(_read_files, cfg=cfg, run_id=summary.run_id, refs=skip_refs, counter=counter)
    read = partial(read, copies=copies)
    labeled = (
        _reads_dataset(cfg, files)
        .map_batches(read, batch_size=1, batch_format="pyarrow", **_reader(cfg))
        .map_batches(
            _LabelStage,
            fn_constructor_args=(cfg, summary.run_id, counter),
            batch_size=cfg.compute.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(
                # Start the whole pool at once (loading weights in parallel while the readers
                # work); it may shrink when input runs dry and grow up to compute.max_actors.
                **cast(dict[str, Any], pool_bounds(cfg, summary.labeler_actors)),
            ),
            num_cpus=cfg.compute.num_cpus_per_actor,
            num_gpus=cfg.compute.num_gpus_per_actor or None,
            resources=cfg.compute.actor_resources or None,
        )
    )
    # `cascade:` the teacher relabels what the student is unsure of, on its own actor pool.
    return with_teacher(labeled, cfg, summary.run_id).map_batches(
        partial(_format_and_write, cfg=cfg, run_id=summary.run_id, lease=lease, copies=copies),
        batch_size=cfg.output.rows_per_file,
        batch_format="pyarrow",
        num_cpus=_WRITER_CPUS,
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
        routed_to_teacher=0 if cfg.cascade.enabled else None,
    )
    session = ExitStack()
    try:
        # Under the lease (nobody else adds rows now): files complete in the ledger are not
        # read, and the output is scanned (in Ray tasks) only when some file is.
        plan = rerun_plan(cfg, files, fingerprint)
        if plan.to_read:
            session.enter_context(_ray(cfg))  # one Ray session for the scan and the graph
            if cfg.compute.address or os.environ.get("RAY_ADDRESS"):  # a cluster others reach
                lease.attach_ray()  # a later run on it takes over once this job ends
        state = output_state(cfg, fingerprint, allow_mixed, scan=bool(plan.to_read))
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
            if plan.to_read:
                _execute(cfg, summary, plan.to_read, state, started, lease, plan)
            else:
                count_complete(summary, plan)
    finally:
        lease.release()
        session.close()
    return summary


def _execute(
    cfg: ConvertConfig,
    summary: RunSummary,
    files: list[InputFile],
    state: OutputState,
    started: float,
    lease: Lease,
    plan: RerunPlan | None = None,
) -> None:
    """Run the graph and fill in the summary as its shards land; record the files it completed
    in the ledger (`plan`: the files the ledger shows complete, counted as done)."""
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
        written: Counter[str] = Counter()  # rows per input file, for the ledger
        with Progress(summary, started, cfg.compute.progress_interval_s, read_stats) as progress:
            shards = graph.iter_batches(batch_size=None, batch_format="pyarrow")
            # The copies are written once the whole graph has run: their labels are all known.
            for batch in chain(shards, copies.written(write, _WRITER_CPUS) if copies else ()):
                _add_shards(summary, cast(pa.Table, batch))
                add_written(written, cast(pa.Table, batch))
                add_tokens(summary.cost, cast(pa.Table, batch))
                lease.ensure_held()  # a run that lost its lease stops now (exit 4)
                progress.update()
        summary.tally(read_stats())
        record_ledger(cfg, summary, plan or RerunPlan([]), files, read_stats(), written)
        summary.labeler_calls_saved = copies.finish() if copies else 0
        failed, first_error = ray.get(counter.labeler_errors.remote())
        summary.cost.update(chunks=summary.rows_written, actor_seconds=counter_seconds(counter))
        ray.kill(counter)
    if failed:
        summary.rejected.update(failed)
        check_labeler_errors(
            summary, sum(failed.values()), first_error, cfg.compute.max_labeler_error_share
        )


def dry_run(cfg: ConvertConfig, allow_mixed: bool = False) -> dict[str, Any]:
    """What a run would do, per input file, without labeling or writing anything."""

    files, fingerprint = prepare_run(cfg)
    plan = rerun_plan(cfg, files, fingerprint)
    with _ray(cfg) if plan.to_read else nullcontext():
        state = output_state(cfg, fingerprint, allow_mixed, scan=bool(plan.to_read))
        per_file = _count_to_read(cfg, plan.to_read, state) if plan.to_read else []
    sizes = {f.uri: f.size for f in files}
    per_file = sorted(
        [
            *(
                {**r, "bytes": sizes[r["uri"]], "to_label": r["chunks"] - r["done"]}
                for r in per_file
            ),
            *complete_rows(plan),
        ],
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


def _count_to_read(cfg: ConvertConfig, files: list[InputFile], state: OutputState) -> list[dict]:
    import ray

    refs = (ray.put(state.done), ray.put(_find_duplicates(cfg, files)))
    count = partial(_count_files, cfg=cfg, refs=refs)
    return (
        _reads_dataset(cfg, files)
        .map_batches(count, batch_size=1, batch_format="pyarrow", **_reader(cfg))
        .take_all()
    )


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

    def __init__(self, cfg: ConvertConfig, run_id: str, counter: Any):
        self.cfg = cfg
        self.run_id = run_id
        self.counter = counter
        self.fingerprint = run_fingerprint(cfg)
        self.labeler: Labeler | None = None
        self.classifiers: list = []
        self.alive = AliveReporter(cfg, counter)  # actor-seconds for the cost record

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
        self.alive()
        return table


def _format_and_write(
    batch: pa.Table,
    cfg: ConvertConfig,
    run_id: str,
    lease: LeaseGuard | None = None,
    copies: CopyRun | None = None,
) -> dict[str, list]:
    """Write step: one shard per batch; returns the shard's row in the shard list. With
    `copies`, the labels of the batch's chunks that have copies are kept for them."""
    if batch.num_rows == 0:  # every chunk of a labeler batch was rejected
        return {
            "path": [],
            "rows": [],
            "useful": [],
            "padded": [],
            "routed": [],
            **shard_sources(None),
            **shard_tokens(None),
        }
    if lease is not None:
        lease.ensure_held()
    if copies is not None:
        copies.keep_labels(batch)
    shard = write_shard(
        format_table(cfg.format, batch, run_id, vocabulary_for(cfg.format, cfg.storage)),
        cfg.output.uri,
        cfg.storage,
        cfg.output.compression,
    )
    if lease is not None:
        lease.confirm_written(shard)
    return {
        "path": [shard],
        "rows": [batch.num_rows],
        "useful": [pc.sum(batch.column(USEFUL_TOKENS)).as_py() or 0],
        "padded": [pc.sum(batch.column(PADDED_TOKENS)).as_py() or 0],
        "routed": [routed_rows(batch)],
        **shard_sources(batch),
        **shard_tokens(batch),
    }


# --- the driver's side ---


def _add_shards(summary: RunSummary, shards: pa.Table) -> None:
    summary.rows_written += pc.sum(shards.column("rows")).as_py()
    summary.shards_written += shards.num_rows
    summary.useful_tokens += pc.sum(shards.column("useful")).as_py()
    summary.padded_tokens += pc.sum(shards.column("padded")).as_py()
    if "routed" in shards.column_names and summary.routed_to_teacher is not None:
        summary.routed_to_teacher += pc.sum(shards.column("routed")).as_py() or 0


def _counter_actor():
    import ray

    @ray.remote(num_cpus=0)
    class RunCounter(InFlight, ActorClock):
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
    """Labeler actors at the start: as configured, else as many as fit beside one reader and
    one writer, within compute.min_actors..max_actors."""
    c = cfg.compute
    if c.actors:
        return c.actors
    if c.num_gpus_per_actor > 0:
        fit = max(1, math.floor(resources.get("GPU", 0) / c.num_gpus_per_actor))
    else:
        spare = resources.get("CPU", 1) - c.num_cpus_per_reader - _WRITER_CPUS
        fit = max(1, math.floor(spare / c.num_cpus_per_actor))
    fit = max(fit, c.min_actors or 1)
    return min(fit, c.max_actors or fit)


def pool_bounds(cfg: ConvertConfig, initial: int) -> dict[str, int]:
    """Ray Data's actor pool: `initial` actors (`pool_size`), between min_actors (default 1,
    so an idle pool shrinks) and max_actors (default `initial`)."""
    c = cfg.compute
    high = c.max_actors or initial
    return {"min_size": min(c.min_actors or 1, initial), "max_size": high, "initial_size": initial}


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


def output_state(
    cfg: ConvertConfig, fingerprint: str, allow_mixed: bool, scan: bool = True
) -> OutputState:
    """Scan the output's key columns once, in Ray tasks (the done index), and apply the
    fingerprint guard; without `scan` (no file to read, nothing to write) neither."""
    if not scan:
        return OutputState(0, DoneIndex(np.empty(0, np.int64)), {}, 0, scanned=False)
    state = scan_output(cfg.output.uri, cfg.storage, cfg.compute.num_cpus_per_reader)
    labelers = cascade_labelers(cfg, state.labelers)  # a cascade's teacher rows are its own
    check_fingerprint(fingerprint, labelers, allow_mixed or cfg.output.allow_mixed_labelers)
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
