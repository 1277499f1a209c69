"""The Ray Data graph of a conversion: this module wires Ray Data (the steps that run inside its
tasks and actors are in `graph_steps.py`).

    input files ──key pass (tasks; the driver for a small input)──► later occurrences of ids,
                copy plan (driver: hashes only)
    input files ──read+chunk, skip done and duplicates (tasks)──► chunks
                ──label (actor pool; a failing chunk is retried alone, then rejected)──► labeled
                ──format+write (tasks, one complete-or-absent shard per batch)──► shard list

Input files are read in tasks of several small files each (`inputs.BYTES_PER_READ_TASK`). The
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
from contextlib import AbstractContextManager, ExitStack, nullcontext
from datetime import datetime, timezone
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConvertConfig
from condlabel.convert.cascade import cascade_labelers, with_teacher
from condlabel.convert.copies import CopyRun, copy_run
from condlabel.convert.costs import (
    add_tokens,
    busy_share,
    counter_seconds,
)
from condlabel.convert.donecheck import scan_output
from condlabel.convert.graph_steps import (
    WRITER_CPUS,
    LabelStage,
    count_files,
    counter_actor,
    format_and_write,
    key_pass,
    read_files,
    reader_options,
    reads_dataset,
    run_fingerprint,
)
from condlabel.convert.inputs import check_overlap, plan_inputs
from condlabel.convert.ledger import (
    RerunPlan,
    add_written,
    complete_rows,
    count_complete,
    record_ledger,
    rerun_plan,
)
from condlabel.convert.progress import Progress
from condlabel.convert.runstate import (
    DoneIndex,
    Lease,
    LeaseGuard,
    OutputState,
    check_fingerprint,
)
from condlabel.convert.scope import DoneScope, done_scope, write_started
from condlabel.convert.stages import (
    FileStats,
)
from condlabel.convert.summary import RunSummary, check_labeler_errors, new_run_id, recorded
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

    read = partial(read_files, cfg=cfg, run_id=summary.run_id, refs=skip_refs, counter=counter)
    read = partial(read, copies=copies)
    labeled = (
        reads_dataset(cfg, files)
        .map_batches(read, batch_size=1, batch_format="pyarrow", **reader_options(cfg))
        .map_batches(
            LabelStage,
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
    # A writer task gets whole labeled blocks, at least rows_per_file rows, and writes their
    # remainder as a short shard. Regrouping rows across blocks first (Ray Data's strict
    # streaming repartition) would give exact shards, but as a task op of 1 CPU that waits
    # behind an actor pool sized to the CPUs, holding labeled rows in the object store.
    return with_teacher(labeled, cfg, summary.run_id).map_batches(
        partial(format_and_write, cfg=cfg, run_id=summary.run_id, lease=lease, copies=copies),
        batch_size=cfg.output.rows_per_file,
        batch_format="pyarrow",
        num_cpus=WRITER_CPUS,
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
        state = output_state(cfg, fingerprint, allow_mixed, scan=bool(plan.to_read), plan=plan)
        # Before the first shard: a later run then knows which shards may hold these files.
        write_started(cfg, run_id, plan.to_read, plan.fingerprint, fingerprint)
        summary.rows_before = state.rows
        summary.shards_scanned = state.shards_scanned
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
                if not summary.shards_written:  # its labeler holds no rows here (guard)
                    write_started(cfg, run_id, plan.to_read, plan.fingerprint, fingerprint, True)
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
        counter = counter_actor()

        def read_stats() -> list[FileStats]:
            return ray.get(counter.all.remote())

        done = ray.put(state.done)
        duplicates, copy_plan = key_pass(cfg, files, done)
        skip_refs = (done, ray.put(duplicates))
        copies = copy_run(cfg, summary.run_id, copy_plan, counter)
        graph = build_graph(cfg, files, skip_refs, counter, summary, lease.guard(), copies)
        write = partial(format_and_write, cfg=cfg, run_id=summary.run_id, lease=lease.guard())
        written: Counter[str] = Counter()  # rows per input file, for the ledger
        with Progress(summary, started, cfg.compute.progress_interval_s, read_stats) as progress:
            shards = graph.iter_batches(batch_size=None, batch_format="pyarrow")
            # The copies are written once the whole graph has run: their labels are all known.
            for batch in chain(shards, copies.written(write, WRITER_CPUS) if copies else ()):
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
        summary.labeler_busy_share = busy_share(counter)
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
        state = output_state(cfg, fingerprint, allow_mixed, scan=bool(plan.to_read), plan=plan)
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

    done = ray.put(state.done)
    refs = (done, ray.put(key_pass(cfg, files, done, chunks=False)[0]))
    count = partial(count_files, cfg=cfg, refs=refs)
    return (
        reads_dataset(cfg, files)
        .map_batches(count, batch_size=1, batch_format="pyarrow", **reader_options(cfg))
        .take_all()
    )


# --- the driver's side ---


def _add_shards(summary: RunSummary, shards: pa.Table) -> None:
    summary.rows_written += pc.sum(shards.column("rows")).as_py()
    summary.shards_written += shards.num_rows
    summary.useful_tokens += pc.sum(shards.column("useful")).as_py()
    summary.padded_tokens += pc.sum(shards.column("padded")).as_py()
    if "routed" in shards.column_names and summary.routed_to_teacher is not None:
        summary.routed_to_teacher += pc.sum(shards.column("routed")).as_py() or 0


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
        spare = resources.get("CPU", 1) - c.num_cpus_per_reader - WRITER_CPUS
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


def output_state(
    cfg: ConvertConfig,
    fingerprint: str,
    allow_mixed: bool,
    scan: bool = True,
    plan: RerunPlan | None = None,
) -> OutputState:
    """Scan the key columns of the shards that may hold chunks of `plan.to_read` once, in Ray
    tasks (the done index; `convert/scope.py`: every shard without `plan`), and apply the
    fingerprint guard; without `scan` (no file to read, nothing to write) neither."""
    if not scan:
        return OutputState(0, DoneIndex(np.empty(0, np.int64)), {}, 0, scanned=False)
    scope = done_scope(cfg, plan) if plan is not None else DoneScope(None, "no plan")
    state = scan_output(
        cfg.output.uri, cfg.storage, cfg.compute.num_cpus_per_reader, shards=scope.shards
    )
    state.scope = scope.mode
    # Not every shard read: the guard takes the labelers from the runs' started records.
    held, unit = (
        (state.labelers, "rows") if scope.shards is None else (scope.labelers, "files started")
    )
    labelers = cascade_labelers(cfg, held)  # a cascade's teacher rows are its own
    check_fingerprint(fingerprint, labelers, allow_mixed or cfg.output.allow_mixed_labelers, unit)
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
