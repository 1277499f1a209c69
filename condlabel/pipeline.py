"""The Ray Data graph of a conversion: the only module that wires Ray Data.

    input files ──read+chunk (tasks)──► chunks ──label (actor pool)──► labeled
                ──format+write (tasks, one complete-or-absent shard per batch)──► shard list

The driver consumes the small shard list, so it sees progress as shards land and can print
rows/s without a second pass over the data.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute.sum

from condlabel.config import ConvertConfig, LabelerConfig
from condlabel.corpus import SUPPORTED_SUFFIXES
from condlabel.labelers import build_labeler, labeler_fingerprint
from condlabel.stages import (
    PADDED_TOKENS,
    USEFUL_TOKENS,
    FileStats,
    format_table,
    label_table,
    read_and_chunk,
    write_shard,
)
from condlabel.storage import InputFile, StorageError, ensure_writable, expand_inputs

log = logging.getLogger("condlabel")

# Write tasks are light (parquet encode + one PUT); a small reservation keeps them schedulable.
_WRITER_CPUS = 0.25


@dataclass
class RunSummary:
    run_id: str
    output: str
    labeler: str
    input_files: int = 0
    input_bytes: int = 0
    documents: int = 0
    chunks: int = 0
    skipped_done: int = 0
    rows_written: int = 0
    shards_written: int = 0
    useful_tokens: int = 0
    padded_tokens: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    labeler_actors: int = 0
    seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def padding_ratio(self) -> float | None:
        """Padded / useful token positions the labeler computed (1.0 = no padding)."""
        return self.padded_tokens / self.useful_tokens if self.useful_tokens else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "chunks_per_second": round(self.chunks_per_second, 3),
                "padding_ratio": self.padding_ratio}

    def lines(self) -> list[str]:
        rejected = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return [
            f"run {self.run_id} -> {self.output}",
            f"  labeler       {self.labeler} ({self.labeler_actors} actor(s))",
            f"  input         {self.input_files} file(s), {self.input_bytes / 1e6:.1f} MB",
            f"  documents     {self.documents} read, rejected: {rejected}",
            f"  chunks        {self.chunks} ({self.skipped_done} already in the output)",
            f"  written       {self.rows_written} rows in {self.shards_written} shard(s)",
            f"  time          {self.seconds:.1f} s, {self.chunks_per_second:.1f} chunks/s",
        ] + ([f"  padding       {self.padding_ratio:.3f} padded/useful tokens"]
             if self.padding_ratio is not None and self.padded_tokens != self.useful_tokens else [])


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def plan_inputs(cfg: ConvertConfig) -> list[InputFile]:
    """Expand and check inputs; fail before any work when something is missing."""
    if not cfg.input.paths:
        raise StorageError("no input given: pass --input URI (or set input.paths in the config)")
    suffixes = SUPPORTED_SUFFIXES if cfg.input.format == "auto" else ()
    return expand_inputs(cfg.input.paths, cfg.storage, suffixes=suffixes)


def init_ray(cfg: ConvertConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": True}
    if cfg.compute.address:
        kwargs["address"] = cfg.compute.address
    elif cfg.compute.num_cpus:
        kwargs["num_cpus"] = cfg.compute.num_cpus
    ray.init(**kwargs)


def pool_size(cfg: ConvertConfig, resources: dict[str, float]) -> int:
    """Labeler actors: as configured, else as many as fit beside one reader and one writer."""
    c = cfg.compute
    if c.actors:
        return c.actors
    if c.num_gpus_per_actor > 0:
        return max(1, math.floor(resources.get("GPU", 0) / c.num_gpus_per_actor))
    spare = resources.get("CPU", 1) - c.num_cpus_per_reader - _WRITER_CPUS
    return max(1, math.floor(spare / c.num_cpus_per_actor))


class _LabelStage:
    """Stateful per-actor UDF: builds the labeler (loads weights) once, then labels batches."""

    def __init__(self, labeler_cfg: LabelerConfig):
        self.labeler = build_labeler(labeler_cfg)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return label_table(self.labeler, batch)


def _stats_actor():
    import ray

    @ray.remote(num_cpus=0)
    class RunCounter:
        def __init__(self) -> None:
            self.stats: list[FileStats] = []

        def add(self, stats: FileStats) -> None:
            self.stats.append(stats)

        def all(self) -> list[FileStats]:
            return self.stats

    return RunCounter.remote()


def run_conversion(cfg: ConvertConfig, run_id: str | None = None) -> RunSummary:
    """Convert the configured inputs into tagged parquet shards under `cfg.output.uri`."""
    import ray
    import ray.data

    run_id = run_id or new_run_id()
    started = time.monotonic()
    files = plan_inputs(cfg)
    ensure_writable(cfg.output.uri, cfg.storage)
    fingerprint = labeler_fingerprint(cfg.labeler)
    summary = RunSummary(run_id, cfg.output.uri, fingerprint, input_files=len(files),
                         input_bytes=sum(f.size for f in files))
    log.info("run %s: %d input file(s), %.1f MB -> %s", run_id, len(files),
             summary.input_bytes / 1e6, cfg.output.uri)

    init_ray(cfg)
    summary.labeler_actors = pool_size(cfg, ray.cluster_resources())
    counter = _stats_actor()

    def read(batch: dict[str, Any]):
        for uri in batch["uri"]:
            for item in read_and_chunk(str(uri), cfg, run_id, rows_per_batch=cfg.compute.batch_size * 8):
                if isinstance(item, FileStats):
                    ray.get(counter.add.remote(item))
                else:
                    yield item

    def format_and_write(batch: pa.Table) -> dict[str, list]:
        shard = write_shard(format_table(cfg.format, batch, run_id), cfg.output.uri, cfg.storage,
                            cfg.output.compression)
        return {"path": [shard], "rows": [batch.num_rows],
                "useful": [pa.compute.sum(batch.column(USEFUL_TOKENS)).as_py() or 0],
                "padded": [pa.compute.sum(batch.column(PADDED_TOKENS)).as_py() or 0]}

    ds = (
        ray.data.from_items([{"uri": f.uri} for f in files], override_num_blocks=len(files))
        .map_batches(read, batch_size=1, num_cpus=cfg.compute.num_cpus_per_reader)
        .map_batches(
            _LabelStage,
            fn_constructor_args=(cfg.labeler,),
            batch_size=cfg.compute.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=summary.labeler_actors),
            num_cpus=cfg.compute.num_cpus_per_actor,
            num_gpus=cfg.compute.num_gpus_per_actor or None,
        )
        .map_batches(format_and_write, batch_size=cfg.output.rows_per_file,
                     batch_format="pyarrow", num_cpus=_WRITER_CPUS)
    )

    last_report = time.monotonic()
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        summary.rows_written += sum(batch.column("rows").to_pylist())
        summary.shards_written += batch.num_rows
        summary.useful_tokens += sum(batch.column("useful").to_pylist())
        summary.padded_tokens += sum(batch.column("padded").to_pylist())
        now = time.monotonic()
        if now - last_report >= cfg.compute.progress_interval_s:
            last_report = now
            rate = summary.rows_written / (now - started)
            log.info("progress: %d chunks labeled and written, %.1f chunks/s",
                     summary.rows_written, rate)

    rejected: Counter[str] = Counter()
    for stats in ray.get(counter.all.remote()):
        summary.documents += stats.documents
        summary.chunks += stats.chunks
        summary.skipped_done += stats.skipped_done
        rejected.update(stats.rejected)
    summary.rejected = dict(rejected)
    summary.seconds = time.monotonic() - started
    ray.kill(counter)
    return summary
