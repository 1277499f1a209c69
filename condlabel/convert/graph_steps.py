"""The steps of the conversion graph that run inside Ray tasks and actors: the read tasks, the
labeler actor (`LabelStage`), the write tasks, and the run's counter actor. `pipeline.py` wires
them into the graph; the table-level logic they call is in `stages.py` (free of Ray).
"""

from __future__ import annotations

import gc
import logging
import time
from collections import Counter
from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConvertConfig
from condlabel.convert.budget import InFlight, RemoteTracker, label_with_budget
from condlabel.convert.cascade import routed_rows, teacher_fingerprint
from condlabel.convert.cascade import teacher_stages as teacher_stages  # the pipeline's
from condlabel.convert.copies import CopyRun
from condlabel.convert.dedup import CHUNK_KEY_FIELDS, CopyPlan, file_keys, plan_keys
from condlabel.convert.duplicates import KEY_FIELDS, Duplicate
from condlabel.convert.inputs import check_overlap, plan_inputs, read_tasks
from condlabel.convert.kept_fields import check_names
from condlabel.convert.metadata_rewrite import Rewrites
from condlabel.convert.reading import check_first_file
from condlabel.convert.sampling import sample_record
from condlabel.convert.stages import (
    PADDED_TOKENS,
    USEFUL_TOKENS,
    DoneChunks,
    FileStats,
    format_table,
    label_or_reject,
    labeler_rejects_name,
    read_and_chunk,
    write_rejects,
    write_shard,
)
from condlabel.convert.stages import READ_SCHEMA as READ_SCHEMA  # the pipeline's stage list
from condlabel.convert.stages import Stage as Stage
from condlabel.labelers import Labeler, build_labeler, labeler_fingerprint
from condlabel.prefix import vocabulary_for
from condlabel.runs.costs import (
    TOKEN_FIELDS,
    ActorClock,
    AliveReporter,
    shard_tokens,
)
from condlabel.runs.ledger import (
    shard_sources,
)
from condlabel.runs.runstate import (
    LeaseGuard,
)
from condlabel.schema import LABEL_FIELDS
from condlabel.storage import InputFile, ensure_writable

if TYPE_CHECKING:
    import ray.data


log = logging.getLogger("condlabel")

# Write tasks are light (parquet encode + one PUT); a small reservation keeps them schedulable.
WRITER_CPUS = 0.25
LABEL_COLUMNS = tuple(name for name, _ in LABEL_FIELDS)
"""What the label stage adds (the label fields of the output contract)."""
SHARD_COLUMNS = (
    *("path", "rows", "useful", "padded", "routed", "source_uris", "source_rows"),
    *TOKEN_FIELDS,
)
"""What the write stage returns: one row per shard written (the driver's shard list)."""


def run_fingerprint(cfg: ConvertConfig) -> str:
    """What the `labeler` column records: the labeler, plus each control-token classifier."""
    from condlabel.classifiers import classifier_fingerprints

    return "+".join([labeler_fingerprint(cfg.labeler), *classifier_fingerprints(cfg.classifiers)])


KEY_PASS_DRIVER_BYTES = 32 * 2**20
"""The key pass before labeling reads inputs of at most this many bytes in all in the driver,
and a larger input in Ray tasks: a Ray Data pass takes seconds to start on a fresh cluster
(worker processes, Ray Data's own actors), more than a small input takes to read (a test, a
scheduled run's few new files). Measured in bench/README.md."""


def teacher_labelers(cfg: ConvertConfig) -> frozenset[str]:
    """Fingerprints a run writes besides `run_fingerprint`: a cascade's teacher's."""
    return frozenset([teacher_fingerprint(cfg)]) if cfg.cascade.enabled else frozenset()


def run_record(cfg: ConvertConfig) -> dict[str, Any]:
    """What the manifest records of the format and the sample. A vocabulary that cannot be
    read fails here, before any work (exit 2, naming the key)."""
    vocabulary = vocabulary_for(cfg.format, cfg.storage)
    return {
        "tag_vocabulary": vocabulary.record() if vocabulary else None,
        "sample": sample_record(cfg.input),
    }


def prepare_inputs(cfg: ConvertConfig, dry_run: bool = False) -> list[InputFile]:
    """Checks that need no Ray: no kept field is named like an output column, the output lies
    outside every input, the inputs exist, the output is writable (a dry run creates nothing
    there), the first input file has every kept field."""
    check_names(cfg.input)
    check_overlap(cfg.input.paths, cfg.output.uri)
    files = plan_inputs(cfg)
    ensure_writable(cfg.output.uri, cfg.storage, create=not dry_run)
    check_first_file(cfg, files)
    return files


def reads_dataset(cfg: ConvertConfig, files: list[InputFile]) -> ray.data.Dataset:
    """One row (and block) per read task: the URIs, sizes and input-order indices of its files."""
    import ray.data

    index = {f.uri: i for i, f in enumerate(files)}
    groups = read_tasks(files)
    dataset = ray.data.from_items(
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
    # The dataset's own copy of the context, shared by the steps built on it (and by no other
    # dataset): every step's output blocks, the labeler's included, are cut at this size.
    dataset.context.target_max_block_size = cfg.compute.block_bytes
    return dataset


def reader_options(cfg: ConvertConfig) -> dict[str, Any]:
    return {"num_cpus": cfg.compute.num_cpus_per_reader}


def _files_of(batch: pa.Table) -> Iterator[tuple[str, int, int]]:
    """(uri, size, input-order index) of each file of a read task."""
    for task in batch.to_pylist():
        yield from zip(task["uri"], task["size"], task["index"], strict=True)


def key_pass(
    cfg: ConvertConfig, files: list[InputFile], done: Any, chunks: bool | None = None
) -> tuple[dict[str, dict[int, Duplicate]], CopyPlan | None]:
    """The run's key pass, one read of every input before the graph: the later
    occurrences of each id (`condlabel.convert.duplicates`) and, with `chunks` (default), the
    copy plan (`condlabel.convert.dedup`; without dedup, `auto` decided by the backend, it only
    counts the chunks to label, `CopyPlan.to_label`, and copies nothing). `done`: the done
    index's object ref. The driver holds 40 bytes per document and per chunk to label, no text;
    it reads the inputs itself when they total at most `KEY_PASS_DRIVER_BYTES`."""
    import ray

    # The chunks still to label are keyed (and counted: none means no labeler is started) unless
    # the caller only wants the ids (a dry run).
    chunks = True if chunks is None else chunks
    started = time.monotonic()
    in_driver = sum(f.size for f in files) <= KEY_PASS_DRIVER_BYTES
    if in_driver:  # a small input: reading it costs less than starting a Ray Data pass
        index = ray.get(done) if chunks else None
        parts = [_key_row([file_keys(f.uri, i, cfg, index, chunks)]) for i, f in enumerate(files)]
    else:
        parts = list(
            reads_dataset(cfg, files)
            .map_batches(
                partial(_file_keys, cfg=cfg, done=done, chunks=chunks),
                batch_size=1,
                batch_format="pyarrow",
                **reader_options(cfg),
            )
            .iter_batches(batch_size=None, batch_format="pyarrow")
        )
    if not parts:  # nothing readable (the reads' own errors are reported where they are read)
        return {}, None
    docs = _flat_keys(parts, "doc_", KEY_FIELDS)
    found, plan = plan_keys(
        docs,
        _flat_keys(parts, "chunk_", CHUNK_KEY_FIELDS) if chunks else None,
        [f.uri for f in files],
    )
    if plan is not None and not cfg.dedup_enabled:
        plan = CopyPlan(np.empty(0, np.int64), np.empty(0, np.int64), plan.to_label)
    later = sum(len(positions) for positions in found.values())
    if later:
        log.warning("%d later occurrence(s) of an id go to _rejects/ (duplicate_id/_text)", later)
    log.info(
        "key pass (%s): %d document(s), %d chunk(s) repeat the text of another, %.1f s",
        "driver" if in_driver else "Ray tasks",
        docs["file"].size,
        plan.copies if plan else 0,
        time.monotonic() - started,
    )
    return found, plan


def _file_keys(batch: pa.Table, cfg: ConvertConfig, done: Any, chunks: bool) -> pa.Table:
    """A read task's keys (`_key_row`)."""
    import ray

    index = ray.get(done) if chunks else None
    return _key_row([file_keys(uri, i, cfg, index, chunks) for uri, _, i in _files_of(batch)])


def _key_row(parts: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]) -> pa.Table:
    """Files' keys as one row of list columns (documents and chunks differ in number)."""
    columns = {
        f"{prefix}{name}": _one_list(np.concatenate([p[side][name] for p in parts]))
        for side, prefix, names in ((0, "doc_", KEY_FIELDS), (1, "chunk_", CHUNK_KEY_FIELDS))
        for name in names
    }
    return pa.table(columns)


def _one_list(values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array([0, values.size], pa.int32()), pa.array(values))


def _flat_keys(parts: list[pa.Table], prefix: str, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    return {
        name: np.concatenate(
            [t.column(prefix + name).combine_chunks().flatten().to_numpy() for t in parts]
        ).astype(np.int64)
        for name in names
    }


def _chunks_and_stats(
    batch: pa.Table,
    cfg: ConvertConfig,
    run_id: str,
    refs: tuple[Any, Any],
    keep_rejects: bool,
    keep_done: bool = False,
):
    """Each file of the read task read and chunked: chunk tables (and with `keep_done` the
    chunks found done, as `DoneChunks`), then the file's stats."""
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
            keep_done=keep_done,
        ):
            if isinstance(item, FileStats):
                item.bytes = int(size)
            yield item


def read_files(
    batch: pa.Table,
    cfg: ConvertConfig,
    run_id: str,
    refs: tuple[Any, Any],
    counter,
    copies: CopyRun | None = None,
    rewrites: Rewrites | None = None,
):
    """Read step: yield the chunks still to label (copies held back); the chunks found done
    whose kept fields changed are held as `rewrites`; each file's stats go to the run's
    counter."""
    import ray

    chunks = _chunks_and_stats(batch, cfg, run_id, refs, True, keep_done=rewrites is not None)
    for item in chunks:
        if isinstance(item, FileStats):
            ray.get(counter.add.remote(item))
        elif isinstance(item, DoneChunks):
            if rewrites is not None:
                rewrites.hold(item.table)
        else:
            yield copies.hold_back(item) if copies else item


def rewrite_run(cfg: ConvertConfig, run_id: str, shards: list[str]) -> Rewrites | None:
    """The run's metadata rewrites when it keeps input fields and its done check found rows
    (`shards`: those it scanned)."""
    import ray

    if not cfg.input.kept_types or not shards:
        return None
    return Rewrites(cfg, run_id, ray.put(shards))


def count_files(batch: pa.Table, cfg: ConvertConfig, refs: tuple[Any, Any]) -> dict[str, list]:
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


class LabelStage:
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
            from condlabel.gpus import check_reserved_gpus

            # A reserved GPU this process cannot see: fail now, not label on the CPU.
            labeler_cfg = self.cfg.labeler
            backend_cfg = getattr(labeler_cfg, labeler_cfg.backend, None)
            check_reserved_gpus(ray.get_gpu_ids(), "compute.num_gpus_per_actor", backend_cfg)
            self.labeler = build_labeler(self.cfg.labeler, self.cfg.storage)
            self.classifiers = build_classifiers(self.cfg.classifiers, self.cfg.storage)
            # What is loaded now (Ray's and the labeler's imports, the model's Python objects:
            # ~100k tracked objects) lives as long as the actor; frozen, the collector's full
            # passes skip it. Measured paired in one actor (bench/gc_in_worker.py): the CPU
            # labeler takes ~9 % less time per batch.
            gc.freeze()
        with self.alive.labeling():
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

            with self.alive.labeling():
                table = classify_table(self.classifiers, table)
        self.alive()
        return table


def format_and_write(
    batch: pa.Table,
    cfg: ConvertConfig,
    run_id: str,
    seq: int | None = None,
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
        format_table(
            cfg.format, batch, run_id, vocabulary_for(cfg.format, cfg.storage), cfg.input, seq
        ),
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


def counter_actor():
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
