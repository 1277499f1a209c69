"""Distillation on Ray: train the student on the teacher's labels, gate it, export it.

    teacher's tagged parquet --Ray Data (latest versions, parse_ok, training side)--> rows
      -> Ray Train workers: prompt/target ids (`distill.data`), seq2seq or causal loss,
         checkpoints to storage every N steps (resume by run name), the candidate at the end
      -> the gate: the candidate labels the held-out chunks as an `hf` labeler (one Ray task
         on a worker's resources) and is compared with the teacher (`distill.metrics`)
      -> passed: the candidate is copied to `output` beside `distill_report.json`;
         failed: only the report is written there, and the command exits 1

`run_distill` is the driver; `distill_loop_per_worker` is what each worker runs, top to bottom.
The optimizer, schedule, checkpoint files, worker setup and the DDP step-together helpers are
those of conditional finetuning (`condlabel.train`): one training machinery.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa

from condlabel.config import ConfigError, DistillConfig, StorageConfig
from condlabel.distill.data import (
    EXAMPLE_COLUMNS,
    READ_COLUMNS,
    collate,
    encode_examples,
    holdout_rank,
    select_examples,
    student_encoding,
)
from condlabel.distill.metrics import compare, comparison_dicts, gate_report, report_lines
from condlabel.distill.student import labeler_overrides, load_student, student_labeler_config
from condlabel.train.checkpoint import export_model, full_model_state
from condlabel.train.data import VERSION_COLUMNS, latest_row_keys, row_keys, version_keys
from condlabel.train.loop import (  # the training machinery of `condlabel train`, reused
    arrow_storage,
    report_with_checkpoint,
    setup_worker,
    torch_trainer,
)
from condlabel.train.steps import (
    Passes,
    StepLoop,
    StepState,
    prepare_training,
    worker_context,
)

log = logging.getLogger("condlabel")

TRAIN_DATASET = "train"
# Fixed, not a setting: rows in each worker's local shuffle buffer (reshuffled every pass);
# a teacher's chunk is short, so a buffer of this size costs little memory.
SHUFFLE_BUFFER_ROWS = 256
REPORT_NAME = "distill_report.json"


# --------------------------------------------------------------------------- driver


@dataclass
class DistillPlan:
    files: list[str]
    kept: pa.Array | None
    """Row keys of the latest versions (None: every row is one)."""
    train_chunks: int
    holdout_chunks: int
    gate_keys: pa.Array
    """Row keys of the held-out chunks the gate labels."""


@dataclass
class DistillSummary:
    name: str
    candidate: str
    output: str
    exported: bool
    report: dict[str, Any]
    start_step: int = 0
    final_step: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        r = self.report
        lines = [
            f"distill run {self.name}: {r['train_chunks']} training chunks, "
            f"{r['holdout_chunks']} held out; steps {self.start_step} -> {self.final_step}"
            + (" (resumed)" if self.start_step else "")
            + f"; {self.seconds:.1f} s",
            *report_lines(r),
            f"report: {self.output.rstrip('/')}/{REPORT_NAME}",
        ]
        if self.exported:
            flags = " ".join(f"--set {f}" for f in r["labeler_overrides"])
            lines.append(f"student exported to {self.output}\nlabel with it: {flags}")
        else:
            lines.append(f"student NOT exported (candidate kept at {self.candidate})")
        return lines


def plan_distill(cfg: DistillConfig) -> DistillPlan:
    """Check the config and the teacher's data before any worker starts; count both sides."""
    import pyarrow.dataset as pads

    from condlabel.storage import StorageError, expand_inputs

    missing = [
        f"{key}: required"
        for key, value in (("student.model", cfg.student.model), ("output", cfg.output))
        if not value
    ]
    if not cfg.data.paths:
        missing.append("data.paths: required (the teacher's tagged output prefix)")
    if missing:
        raise ConfigError(missing)
    files = [f.uri for f in expand_inputs(cfg.data.paths, cfg.storage, suffixes=(".parquet",))]
    if not files:
        raise StorageError(f"data.paths: no parquet files under {cfg.data.paths}")
    paths, fs = arrow_storage(files, cfg.storage)
    keys = version_keys(pads.dataset(paths, format="parquet", filesystem=fs), ["parse_ok"])
    kept = latest_row_keys(keys.select([c for c in keys.column_names if c != "parse_ok"]))
    keys = keys.select([*VERSION_COLUMNS, "parse_ok"])
    keys = keys.append_column("text", pa.nulls(keys.num_rows, pa.string()))
    keys = keys.append_column("synopsis", pa.nulls(keys.num_rows, pa.string()))
    keys = keys.append_column("tags", pa.nulls(keys.num_rows, pa.list_(pa.string())))
    split = partial(select_examples, kept=kept, holdout_fraction=cfg.holdout_fraction)
    train, holdout = split(keys, holdout=False), split(keys, holdout=True)
    if not train.num_rows:
        raise StorageError(f"data.paths: no training chunk (parse_ok, latest) in {cfg.data.paths}")
    if not holdout.num_rows:
        raise StorageError(
            f"data.paths: no held-out chunk at holdout_fraction={cfg.holdout_fraction}; "
            "raise it or add documents"
        )
    return DistillPlan(
        files, kept, train.num_rows, holdout.num_rows, _held_out_keys(keys, kept, cfg)
    )


def _held_out_keys(keys: pa.Table, kept: pa.Array | None, cfg: DistillConfig) -> pa.Array:
    """Row keys of the held-out chunks of lowest holdout hash, up to gate.max_chunks: the same
    chunks every run."""
    import pyarrow.compute as pc

    all_keys = row_keys(keys)
    mask = pc.fill_null(keys.column("parse_ok"), False)
    if kept is not None:
        mask = pc.and_(mask, pc.is_in(all_keys, value_set=kept))
    doc_ids = keys.column("doc_id").to_pylist()
    chosen = [
        (holdout_rank(doc), key)
        for doc, key, ok in zip(doc_ids, all_keys.to_pylist(), mask.to_pylist(), strict=True)
        if ok and holdout_rank(doc) < cfg.holdout_fraction
    ]
    chosen.sort()
    return pa.array([key for _, key in chosen[: cfg.gate.max_chunks]], pa.string())


def run_distill(cfg: DistillConfig) -> DistillSummary:
    """Train, gate and (when it passes) export the student; see the module docstring."""
    from condlabel.ray_runtime import ray_session

    plan = plan_distill(cfg)
    if "://" not in cfg.checkpoint.storage_path:
        # Workers and the gate's task may run in another directory than this driver.
        cfg = cfg.model_copy(deep=True)
        cfg.checkpoint.storage_path = os.path.abspath(cfg.checkpoint.storage_path)
    log.info(
        "distilling into %s: %d training chunk(s), %d held out, from %d file(s)",
        cfg.student.model,
        plan.train_chunks,
        plan.holdout_chunks,
        len(plan.files),
    )
    started = time.perf_counter()
    with ray_session(cfg.compute.address, cfg.compute.num_cpus):
        returned = _fit(cfg, plan)
        teacher, results, seconds = _label_gate_chunks(cfg, plan)
    chunks = compare(teacher, results)
    report = gate_report(chunks, cfg.gate)
    labeler = student_labeler_config(cfg, cfg.output or "")
    report |= {
        "student": cfg.student.model,
        "teacher_paths": cfg.data.paths,
        "train_chunks": plan.train_chunks,
        "holdout_chunks": plan.holdout_chunks,
        "holdout_fraction": cfg.holdout_fraction,
        "steps": returned.get("final_step", 0),
        "final_loss": (returned.get("history") or [{}])[-1].get("loss"),
        "student_chunks_per_s": len(results) / seconds if seconds > 0 else None,
        "labeler": labeler.model_dump(mode="json", exclude={"cache_dir"}),
        "labeler_overrides": labeler_overrides(labeler),
        "per_chunk": comparison_dicts(chunks),
    }
    exported = bool(report["passed"])
    if exported:
        _export_candidate(cfg)
    _write_report(cfg, report)
    return DistillSummary(
        name=cfg.checkpoint.name,
        candidate=cfg.checkpoint.candidate_uri,
        output=cfg.output or "",
        exported=exported,
        report=report,
        start_step=int(returned.get("start_step", 0)),
        final_step=int(returned.get("final_step", 0)),
        seconds=time.perf_counter() - started,
        history=list(returned.get("history", [])),
    )


def teacher_dataset(cfg: DistillConfig, plan: DistillPlan, holdout: bool):
    """The teacher's rows of one side of the split as a Ray dataset (`EXAMPLE_COLUMNS`)."""
    import ray.data

    paths, fs = arrow_storage(plan.files, cfg.storage)
    rows = ray.data.read_parquet(paths, filesystem=fs).select_columns(READ_COLUMNS)
    select = partial(
        select_examples, kept=plan.kept, holdout_fraction=cfg.holdout_fraction, holdout=holdout
    )
    return rows.map_batches(select, batch_format="pyarrow")


def _fit(cfg: DistillConfig, plan: DistillPlan) -> dict[str, Any]:
    # Materialized once: every pass over it (the sample is small next to the corpus) then
    # streams from the object store instead of re-reading and re-filtering the parquet.
    data = teacher_dataset(cfg, plan, holdout=False).materialize()
    trainer = torch_trainer(distill_loop_per_worker, {"cfg": cfg}, cfg, data)
    result = trainer.fit()
    if result.error is not None:
        raise RuntimeError(f"distillation training failed: {result.error}") from result.error
    return getattr(result, "return_value", None) or {}


def _label_gate_chunks(cfg: DistillConfig, plan: DistillPlan) -> tuple[list[dict], list, float]:
    """The gate's held-out rows (teacher labels) and the candidate's labels of them, labeled in
    one Ray task on a training worker's resources (its GPU on a GPU cluster)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as pads
    import ray

    paths, fs = arrow_storage(plan.files, cfg.storage)
    wanted = set(plan.gate_keys.to_pylist())
    doc_ids = sorted({key.split("\x1f", 1)[0] for key in wanted})
    rows = pads.dataset(paths, format="parquet", filesystem=fs).to_table(
        columns=READ_COLUMNS, filter=pads.field("doc_id").isin(doc_ids)
    )
    rows = rows.filter(pc.is_in(row_keys(rows), value_set=plan.gate_keys))
    rows = rows.append_column("_rank", pc.index_in(row_keys(rows), value_set=plan.gate_keys))
    teacher = rows.sort_by("_rank").select(EXAMPLE_COLUMNS).to_pylist()
    labeler = student_labeler_config(cfg, cfg.checkpoint.candidate_uri)
    task = ray.remote(_label_texts).options(
        num_cpus=cfg.compute.cpus_per_worker,
        num_gpus=cfg.compute.gpus_per_worker if cfg.compute.use_gpu else 0,
    )
    results, seconds = ray.get(task.remote(labeler, cfg.storage, [r["text"] for r in teacher]))
    return teacher, results, seconds


def _label_texts(labeler_cfg, storage: StorageConfig, texts: list[str]) -> tuple[list, float]:
    """The student labels `texts` as the `hf` labeler (the same class conversion runs); returns
    the results and the seconds spent labeling (the model load excluded)."""
    from condlabel.labelers.hf import HFLabeler

    labeler = HFLabeler(labeler_cfg, storage)
    started = time.perf_counter()
    results = []
    for i in range(0, len(texts), labeler_cfg.max_batch_size):
        results += labeler.label(texts[i : i + labeler_cfg.max_batch_size])
    return results, time.perf_counter() - started


def _export_candidate(cfg: DistillConfig) -> None:
    from condlabel.models import fetch_model, upload_directory

    local = fetch_model(cfg.checkpoint.candidate_uri, cfg.storage)
    upload_directory(local, cfg.output or "", cfg.storage)
    log.info("exported the student to %s", cfg.output)


def _write_report(cfg: DistillConfig, report: dict[str, Any]) -> None:
    import posixpath

    from condlabel.storage import resolve, write_bytes_atomic

    fs, root = resolve(cfg.output or "", cfg.storage)
    fs.makedirs(root, exist_ok=True)
    data = json.dumps(report, indent=2, default=str).encode()
    write_bytes_atomic(fs, posixpath.join(root, REPORT_NAME), data)


# --------------------------------------------------------------------------- on each worker


def distill_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """The training loop each Ray Train worker runs, top to bottom."""
    import ray.train
    import ray.train.torch
    import torch

    cfg: DistillConfig = config["cfg"]
    opt = cfg.optimization
    rank, world, device = worker_context()
    setup_worker(cfg.compute, cfg.optimization.seed, device)

    # Resume from the latest checkpoint of this run when there is one (rerun or retried failure).
    loaded, seq2seq = _load_latest(cfg)
    tokenizer, start_step = loaded.tokenizer, loaded.step
    generation_eos = getattr(loaded.model.generation_config, "eos_token_id", None)
    encoding = student_encoding(
        tokenizer, loaded.model.config, generation_eos, cfg.student, seq2seq
    )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else encoding.eos_ids[0]
    model, optimizer, scheduler, autocast = prepare_training(loaded, opt, opt.precision, device)
    shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    # A resumed run starts a fresh, differently shuffled pass over the data.
    batches = _passes(shard, encoding, cfg, pad_id, seq2seq, rank, device, start_step)

    model.train()
    state = StepState(start_step, loaded.tokens_seen)

    def micro_batch() -> tuple[dict[str, Any], int]:
        batch = {k: torch.tensor(v, device=device) for k, v in batches.next().items()}
        return batch, int((batch["labels"] >= 0).sum())

    loop = StepLoop(
        model,
        optimizer,
        scheduler,
        opt,
        cfg.checkpoint.every_steps,
        world,
        rank,
        device,
        autocast,
        rate_key="target_tokens_per_s",
    )
    loop.run(
        state,
        micro_batch,
        lambda: batches.epoch,
        lambda metrics: report_with_checkpoint(
            model, optimizer, scheduler, tokenizer, metrics, rank
        ),
    )
    step, history = state.step, state.history

    if not _write_candidate(model, tokenizer, cfg, rank):
        return None
    return {"start_step": start_step, "final_step": step, "history": history}


def _load_latest(cfg: DistillConfig):
    """The student from this run's latest checkpoint (Ray Train hands it over), else its base."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return load_student(cfg)
    with checkpoint.as_directory() as ckpt_dir:
        loaded = load_student(cfg, ckpt_dir)
    if ray.train.get_context().get_world_rank() == 0:
        log.info("resuming from step %d", loaded[0].step)
    return loaded


def _passes(shard, encoding, cfg: DistillConfig, pad_id: int, seq2seq, rank, device, epoch):
    """A worker's micro-batches of encoded examples, pass after pass (`train.steps.Passes`)."""
    o = cfg.optimization

    def one_pass(epoch: int):
        for batch in shard.iter_batches(
            batch_size=o.micro_batch_size,
            batch_format="pyarrow",
            local_shuffle_buffer_size=SHUFFLE_BUFFER_ROWS,
            local_shuffle_seed=(o.seed * 1_000_003 + epoch * 1_009 + rank) % 2**31,
        ):
            examples = encode_examples(encoding, batch.to_pylist(), cfg.student.max_new_tokens)
            yield collate(examples, pad_id, seq2seq)

    return Passes(
        one_pass,
        device,
        epoch,
        "the teacher's data gives a worker no micro-batch: add data or lower compute.num_workers",
    )


def _write_candidate(model, tokenizer, cfg: DistillConfig, rank: int) -> bool:
    """The trained student (LoRA merged) at `checkpoint.candidate_uri`, for the gate; rank 0
    writes it, every rank gathers the state. True on rank 0."""
    from condlabel.models import upload_directory

    full_state = full_model_state(model)
    if rank != 0:
        return False
    with tempfile.TemporaryDirectory(prefix="condlabel-student-") as tmp:
        export_model(tmp, model, tokenizer, full_state)
        upload_directory(tmp, cfg.checkpoint.candidate_uri, cfg.storage)
    return True
