"""The Ray Data graph of a conversion: this module wires Ray Data (the steps that run inside its
tasks and actors are in `graph_steps.py`).

    input files ──key pass (tasks; the driver for a small input)──► later occurrences of ids,
                copy plan (driver: hashes only)
    input files ──read+chunk, skip done and duplicates (tasks)──► chunks
                ──label (actor pool; a failing chunk is retried alone, then rejected)──► labeled
                ──format+write (tasks, one complete-or-absent shard per batch)──► shard list

Input files are read in tasks of several small files each (`inputs.BYTES_PER_READ_TASK`). The
driver consumes the small shard list, so it sees progress as shards land and shows rows/s and
an ETA without a second pass over the data. Around the graph, `condlabel.runs.open_run`: the
writer lease, the run's seq, the done index read from the output (resume), the labeler
fingerprint guard and the run manifest.
"""

from __future__ import annotations

import logging
import math
import os
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from itertools import chain
from typing import TYPE_CHECKING, Any, cast

import pyarrow as pa
import pyarrow.compute as pc

from condlabel import runs
from condlabel.config import ConvertConfig
from condlabel.convert.copies import CopyRun, copy_run
from condlabel.convert.graph_steps import (
    LABEL_COLUMNS,
    READ_SCHEMA,
    SHARD_COLUMNS,
    WRITER_CPUS,
    LabelStage,
    Rewrites,
    Stage,
    count_files,
    counter_actor,
    format_and_write,
    key_pass,
    prepare_inputs,
    read_files,
    reader_options,
    reads_dataset,
    rewrite_run,
    run_fingerprint,
    run_record,
    teacher_labelers,
    teacher_stages,
)
from condlabel.ray_runtime import connect, is_verbose, ray_session

if TYPE_CHECKING:
    import ray.data

__all__ = ["dry_run", "init_ray", "plan_lines", "run_conversion", "run_fingerprint"]

log = logging.getLogger("condlabel")


@dataclass
class Reads:
    """What the read step is handed besides the config and the run."""

    skip_refs: tuple[Any, Any]
    """Object refs of the done index and of the later occurrences of ids (`key_pass`)."""
    counter: Any
    """The run's counter actor: each file's stats."""
    copies: CopyRun | None = None
    """Chunks whose text another chunk has, held back; their labels kept by the write step."""
    rewrites: Rewrites | None = None
    """Chunks found done whose kept fields changed, held with their labels."""


def conversion_stages(cfg: ConvertConfig, run: runs.Run, reads: Reads) -> list[Stage]:
    """The data path as a list of stages: read+chunk, label+classify, the cascade's teacher
    (when on), format+write (the write step keeps the labels the copies need after the
    teacher, so a copy gets its chunk's final labels)."""
    import ray.data

    pool = ray.data.ActorPoolStrategy(
        # Start the whole pool at once (loading weights in parallel while the readers work);
        # it may shrink when input runs dry and grow up to compute.max_actors.
        **cast(dict[str, Any], pool_bounds(cfg, run.summary.labeler_actors))
    )
    label_placement = {
        "fn_constructor_args": (cfg, run.run_id, reads.counter),
        "compute": pool,
        "num_cpus": cfg.compute.num_cpus_per_actor,
        "num_gpus": cfg.compute.num_gpus_per_actor or None,
        "resources": cfg.compute.actor_resources or None,
    }
    # A writer task gets whole labeled blocks, at least rows_per_file rows, and writes their
    # remainder as a short shard. Regrouping rows across blocks first (Ray Data's strict
    # streaming repartition) would give exact shards, but as a task op of 1 CPU that waits
    # behind an actor pool sized to the CPUs, holding labeled rows in the object store.
    return [
        read_stage(cfg, run, reads),
        Stage("label", LabelStage, LABEL_COLUMNS, cfg.compute.batch_size, label_placement),
        *teacher_stages(cfg),
        Stage(
            "write",
            partial(writer(cfg, run), copies=reads.copies),
            SHARD_COLUMNS,
            cfg.output.rows_per_file,
            {"num_cpus": WRITER_CPUS},
        ),
    ]


def read_stage(cfg: ConvertConfig, run: runs.Run, reads: Reads) -> Stage:
    """Read+chunk: one task per group of input files; chunks done or held back (copies,
    rewrites) are counted, not passed on."""
    read = partial(
        read_files,
        cfg=cfg,
        run_id=run.run_id,
        refs=reads.skip_refs,
        counter=reads.counter,
        copies=reads.copies,
        rewrites=reads.rewrites,
    )
    return Stage("read", read, tuple(READ_SCHEMA.names), 1, reader_options(cfg))


def build_graph(stages: list[Stage], cfg: ConvertConfig, run: runs.Run) -> ray.data.Dataset:
    """The graph, lazily: the run's read tasks followed by each stage; iterating it runs the
    conversion (with the write stage last, one row per shard written). Every shard write
    checks the run's lease first, so a run that lost it stops writing."""
    dataset = reads_dataset(cfg, run.to_read)
    for stage in stages:
        dataset = stage.apply(dataset)
    return dataset


def writer(cfg: ConvertConfig, run: runs.Run) -> partial:
    """The write step of this run: its id and seq on every row, its lease checked per shard."""
    return partial(
        format_and_write, cfg=cfg, run_id=run.run_id, seq=run.seq, lease=run.lease.guard()
    )


def run_conversion(
    cfg: ConvertConfig, run_id: str | None = None, allow_mixed: bool = False
) -> runs.RunSummary:
    """Label every chunk of the configured inputs that is not yet in `cfg.output.uri`."""
    record = run_record(cfg)  # before any work: a vocabulary that cannot be read fails here
    files, fingerprint = prepare_inputs(cfg), run_fingerprint(cfg)
    with runs.open_run(
        cfg,
        files,
        fingerprint,
        run_id,
        allow_mixed,
        ray_session=lambda: _ray(cfg),
        attach_ray=bool(cfg.compute.address or os.environ.get("RAY_ADDRESS")),
        also_labelers=teacher_labelers(cfg),
        record=record,
    ) as run:
        if run.to_read:
            _execute(cfg, run, files)
    return run.summary


def _execute(cfg: ConvertConfig, run: runs.Run, files: list[Any]) -> None:
    """Run the graph and fill in the summary as its shards land; record the files it completed
    in the ledger."""
    import ray

    summary = run.summary
    with _ray(cfg):
        summary.labeler_actors = pool_size(cfg, ray.cluster_resources())
        counter = counter_actor()

        def read_stats() -> list[runs.FileStats]:
            return ray.get(counter.all.remote())

        done = ray.put(run.state.done)
        duplicates, copy_plan = key_pass(cfg, run.to_read, done)
        rewrites = rewrite_run(cfg, run.run_id, run.state.shard_paths)
        reads = Reads((done, ray.put(duplicates)), counter, rewrites=rewrites)
        write = writer(cfg, run)
        if copy_plan is not None and copy_plan.to_label == 0:
            # Every chunk is in the output already (inputs rewritten with the same bytes, say):
            # the files are read for their counts and rejects, and no labeler actor starts.
            summary.labeler_actors = 0
            _read_only(cfg, run, reads)
            _write_rewrites(run, rewrites, write)
            run.finish(run.to_read, read_stats())
            ray.kill(counter)
            return
        copies = reads.copies = copy_run(cfg, run.run_id, copy_plan, counter)
        graph = build_graph(conversion_stages(cfg, run, reads), cfg, run)
        reading = (len(run.to_read), sum(f.size for f in run.to_read))
        interval = cfg.compute.progress_interval_s
        with runs.Progress(summary, run.started, interval, read_stats, files=reading) as progress:
            shards = graph.iter_batches(batch_size=None, batch_format="pyarrow")
            # The copies are written once the whole graph has run: their labels are all known.
            for batch in chain(shards, copies.written(write, WRITER_CPUS) if copies else ()):
                _add_shards(summary, cast(pa.Table, batch))
                runs.add_written(run.written, cast(pa.Table, batch))
                runs.add_tokens(summary.cost, cast(pa.Table, batch))
                run.lease.ensure_held()  # a run that lost its lease stops now (exit 4)
                progress.update()
            _write_rewrites(run, rewrites, write)
        run.finish(run.to_read, read_stats())
        summary.labeler_calls_saved = copies.finish() if copies else 0
        failed, first_error = ray.get(counter.labeler_errors.remote())
        summary.cost.update(
            chunks=summary.rows_written, actor_seconds=runs.counter_seconds(counter)
        )
        summary.labeler_busy_share = runs.busy_share(counter)
        ray.kill(counter)
    if failed:
        summary.rejected.update(failed)
        runs.check_labeler_errors(
            summary, sum(failed.values()), first_error, cfg.compute.max_labeler_error_share
        )


def _read_only(cfg: ConvertConfig, run: runs.Run, reads: Reads) -> None:
    """The read stage alone (every chunk found done): counts, rejects, rewrites and the
    ledger, no labels."""
    read = read_stage(cfg, run, reads)
    log.info("every chunk of the files read is already in the output: no labeler started")
    for _ in build_graph([read], cfg, run).iter_batches(batch_size=None, batch_format="pyarrow"):
        pass


def _write_rewrites(run: runs.Run, rewrites: Rewrites | None, write: partial) -> None:
    """The rows whose kept fields changed, written with their labels once the graph has run.
    They are counted as written, not as this run's rows of their files (those chunks were
    found done), so the ledger's count of each file stays its chunks to label."""
    if rewrites is None:
        return
    for batch in rewrites.written(write, WRITER_CPUS):
        _add_shards(run.summary, batch)
        runs.add_tokens(run.summary.cost, batch)
        run.summary.rows_rewritten += sum(batch.column("rows").to_pylist())
        run.lease.ensure_held()
    rewrites.finish()
    if run.summary.rows_rewritten:
        log.info(
            "%d row(s) rewritten with their labels: their kept input fields changed",
            run.summary.rows_rewritten,
        )


def dry_run(cfg: ConvertConfig, allow_mixed: bool = False) -> dict[str, Any]:
    """What a run would do, per input file, without labeling or writing anything."""

    files, fingerprint = prepare_inputs(cfg, dry_run=True), run_fingerprint(cfg)
    plan = runs.rerun_plan(cfg, files, fingerprint)
    with _ray(cfg) if plan.to_read else nullcontext():
        listing = runs.list_output(cfg.output.uri, cfg.storage)
        state = runs.output_state(
            cfg, fingerprint, allow_mixed, plan, files, listing, teacher_labelers(cfg)
        )
        per_file = _count_to_read(cfg, plan.to_read, state) if plan.to_read else []
    sizes = {f.uri: f.size for f in files}
    per_file = sorted(
        [
            *(
                {**r, "bytes": sizes[r["uri"]], "to_label": r["chunks"] - r["done"]}
                for r in per_file
            ),
            *runs.complete_rows(plan),
        ],
        key=lambda r: r["uri"],
    )
    return {
        "output": cfg.output.uri,
        "labeler": fingerprint,
        "output_rows": runs.output_rows(cfg.output.uri, cfg.storage),
        "output_labelers": state.labelers,
        "files": per_file,
        "totals": {
            k: sum(r[k] for r in per_file)
            for k in ("bytes", "documents", "chunks", "done", "to_label", "rejected")
        },
    }


def _count_to_read(cfg: ConvertConfig, files: list[Any], state: Any) -> list[dict]:
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


def _add_shards(summary: runs.RunSummary, shards: pa.Table) -> None:
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
