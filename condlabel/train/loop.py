"""Conditional finetuning of a causal LM on tagged shards, on Ray Train.

    tagged parquet (s3://) --Ray Data, one shard per worker--> rows
      -> training text, tokens, packed blocks (`condlabel.train.data`)
      -> DDP/FSDP finetune (full or LoRA) -> HF checkpoints to storage every N steps
      -> export (`condlabel.train.checkpoint`)

`run_training` is the driver: it checks the inputs, connects to Ray and starts the worker group;
`train_loop_per_worker` is what each worker runs, top to bottom. Everything Ray-free (data,
optimizer, checkpoint files) lives in the sibling modules and is unit-tested directly.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condlabel.config import TrainConfig
from condlabel.config.train import TrainComputeConfig
from condlabel.prefix import RAW_TAGS, metadata_columns, vocabulary_for
from condlabel.train.checkpoint import (
    TrainingState,
    export_model,
    full_model_state,
    load_for_training,
    save_checkpoint,
    training_state,
)
from condlabel.train.data import (
    cooldown_start,
    document_positions,
    micro_batches,
)
from condlabel.train.dataset import (
    MATERIALIZE_MAX_ROWS,
    arrow_storage,
    is_materialized,
    read_training_rows,
    shuffle_files,
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
PROVENANCE_FILE = "condlabel_provenance.json"


# --------------------------------------------------------------------------- driver


@dataclass
class TrainSummary:
    name: str
    storage_path: str
    export_uri: str
    start_step: int
    final_step: int
    metrics: dict[str, Any]
    checkpoint: str | None
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    """The training config (redacted) and the tag vocabulary applied; also exported beside the
    model as `PROVENANCE_FILE`."""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}

    def lines(self) -> list[str]:
        m = self.metrics
        return [
            f"run {self.name} -> {self.storage_path}",
            f"  steps        {self.start_step} -> {self.final_step}"
            + (" (resumed)" if self.start_step else ""),
            f"  last loss    {m.get('loss', float('nan')):.4f}   lr {m.get('learning_rate', 0):.2e}"
            f"   tokens/s {m.get('tokens_per_s', 0):.0f}",
            f"  checkpoint   {self.checkpoint}",
            f"  final model  {self.export_uri}",
            f"  time         {self.seconds:.1f} s",
        ]


def plan_training(cfg: TrainConfig) -> list[str]:
    """Check the inputs and the model before any worker starts; returns the parquet file URIs."""
    return [uri for output in training_outputs(cfg) for uri in output]


def training_outputs(cfg: TrainConfig) -> list[list[str]]:
    """The parquet file URIs of each `data.paths` entry (a file under two entries counts once,
    under the first), after checking the inputs and the model."""
    from condlabel.storage import StorageError, expand_inputs, split_uri

    if not cfg.model.path:
        raise StorageError("no model given: set model.path (local dir, s3:// or hub id)")
    if not cfg.data.paths:
        raise StorageError("no training data given: set data.paths to a tagged output prefix")
    outputs: list[list[str]] = []
    seen: set[str] = set()
    for path in cfg.data.paths:
        found = [f.uri for f in expand_inputs([path], cfg.storage, suffixes=(".parquet",))]
        outputs.append([uri for uri in found if uri not in seen])
        seen.update(found)
    files = [uri for output in outputs for uri in output]
    if not files:
        raise StorageError(f"no parquet files under {cfg.data.paths}")
    schemes = sorted({split_uri(f)[0] for f in files})
    if len(schemes) > 1:
        raise StorageError(
            f"data.paths: the files are on {' and '.join(schemes)}; Ray Data reads one storage "
            "per dataset, so keep the training data on one (e.g. copy it to the same bucket)"
        )
    return outputs


def plan_lines(cfg: TrainConfig, files: list[str]) -> list[str]:
    """What `condlabel train --dry-run` prints: the model, the data and the plan of the run."""
    c, o = cfg.compute, cfg.optimization
    lines = [
        f"would train {cfg.model.path} ({'LoRA' if cfg.model.lora.enabled else 'full'}, "
        f"{o.strategy}) on {len(files)} parquet file(s):",
        *(f"  {uri}" for uri in files[:20]),
    ]
    if len(files) > 20:
        lines.append(f"  ... and {len(files) - 20} more")
    lines.append(
        f"workers {c.num_workers} x {c.cpus_per_worker} CPU"
        + (f" + {c.gpus_per_worker} GPU" if c.use_gpu else "")
        + f"; {o.max_steps} steps of {c.num_workers * o.micro_batch_size * o.grad_accum_steps}"
        f" x {o.seq_len} tokens; checkpoints every {cfg.checkpoint.every_steps} steps to "
        f"{cfg.checkpoint.storage_path}/{cfg.checkpoint.name}; export to "
        f"{cfg.checkpoint.effective_export_uri}"
    )
    return lines


def run_training(cfg: TrainConfig) -> TrainSummary:
    """Read the tagged shards through Ray Data and finetune on a Ray Train worker group.

    Connects to Ray as every command does (`condlabel.ray_runtime`); an embedded Ray started
    here is shut down when training returns.
    """
    from condlabel.ray_runtime import ray_session

    outputs = training_outputs(cfg)
    files = [uri for output in outputs for uri in output]
    log.info("training on %d parquet file(s) from %s", len(files), cfg.data.paths)
    with ray_session(cfg.compute.address, cfg.compute.num_cpus):
        return _fit(cfg, outputs)


def _fit(cfg: TrainConfig, outputs: list[list[str]]) -> TrainSummary:

    # The vocabulary is read here first, so a bad one fails before any worker starts (exit 2).
    vocabulary = vocabulary_for(cfg.data.format, cfg.storage, "data.format.tag_vocabulary")
    provenance = {"config": cfg.redacted(), "tag_vocabulary": vocabulary and vocabulary.record()}
    files = [uri for output in outputs for uri in output]
    dataset = read_training_rows(
        files,
        cfg.storage,
        ((RAW_TAGS,) if vocabulary else ()) + tuple(metadata_columns_of(cfg)),
        MATERIALIZE_MAX_ROWS,
        outputs=outputs,
        file_shuffle=shuffle_files(cfg.data, cfg.optimization.seed),
    )
    # Data in the object store goes whole to every worker, which shuffles all of it each pass
    # and takes its share (`condlabel.train.shuffle`); streamed data is split among them.
    whole = cfg.data.shuffle and is_materialized(dataset)
    ck = cfg.checkpoint
    trainer = torch_trainer(
        train_loop_per_worker,
        {"cfg": cfg, "provenance": provenance, "whole": whole},
        cfg,
        dataset,
        split=not whole,
    )
    start = time.perf_counter()
    result = trainer.fit()
    seconds = time.perf_counter() - start
    if result.error is not None:
        raise RuntimeError(f"training failed: {result.error}") from result.error
    returned = getattr(result, "return_value", None) or {}  # Train V2 Result
    return TrainSummary(
        name=ck.name,
        storage_path=ck.storage_path,
        export_uri=ck.effective_export_uri,
        start_step=int(returned.get("start_step", 0)),
        final_step=int(returned.get("final_step", (result.metrics or {}).get("step", 0))),
        metrics=dict(result.metrics or {}),
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        seconds=seconds,
        history=list(returned.get("history", [])),
        provenance=provenance,
    )


def metadata_columns_of(cfg: TrainConfig) -> list[str]:
    """The kept input fields the training prefix shows (`{meta.NAME}`, `{url_domain}`)."""
    if cfg.data.prefix != "template":
        return []
    return metadata_columns(cfg.data.format.prefix_template, cfg.data.url_field)


def torch_trainer(
    loop: Any, loop_config: dict[str, Any], cfg: Any, dataset: Any, split: bool = True
) -> Any:
    """A TorchTrainer over `cfg`'s `compute:` and `checkpoint:` sections (a train or distill
    config): workers and their resources, checkpoints in object storage, retries. `split`:
    each worker reads its own part of `dataset`; otherwise every worker reads all of it."""
    from ray.train import (
        CheckpointConfig,
        DataConfig,
        FailureConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchTrainer

    ck = cfg.checkpoint
    [storage_path], storage_fs = arrow_storage([ck.storage_path], cfg.storage)
    resources = {"CPU": cfg.compute.cpus_per_worker}
    if cfg.compute.use_gpu:
        resources["GPU"] = cfg.compute.gpus_per_worker
    return TorchTrainer(
        loop,  # Train V2 passes its return value on
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=cfg.compute.num_workers,
            use_gpu=cfg.compute.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=ck.name,
            storage_path=storage_path,
            storage_filesystem=storage_fs,
            failure_config=FailureConfig(max_failures=ck.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=ck.num_to_keep),
        ),
        datasets={TRAIN_DATASET: dataset},
        dataset_config=DataConfig(datasets_to_split="all" if split else []),
    )


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """The training loop each Ray Train worker runs, top to bottom."""
    import ray.train
    import ray.train.torch
    import torch

    cfg: TrainConfig = config["cfg"]
    opt = cfg.optimization
    rank, world, device = worker_context()
    setup_worker(cfg.compute, cfg.optimization.seed, device)

    # Resume from the latest checkpoint of this run when there is one (rerun or retried failure).
    loaded = _load_latest(cfg)
    tokenizer, start_step = loaded.tokenizer, loaded.step
    model, optimizer, scheduler, autocast = prepare_training(
        loaded, opt, opt.precision, device, opt.strategy
    )
    # The cooldown (MeCo): from step `plain_from` on, examples carry no prefix. A resumed run
    # starts a fresh, differently seeded pass over the data.
    plain_from = cooldown_start(cfg)
    shard = ray.train.get_dataset_shard(TRAIN_DATASET)

    model.train()
    state = StepState(start_step, loaded.tokens_seen)
    data = Passes(
        lambda epoch: micro_batches(
            shard,
            tokenizer,
            cfg,
            rank,
            epoch,
            lambda: state.step >= plain_from,
            world,
            bool(config.get("whole")),
        ),
        device,
        start_step,
        "the training data gives a worker no full micro-batch: add data or lower "
        "optimization.seq_len / micro_batch_size / compute.num_workers",
    )

    def micro_batch() -> tuple[dict[str, Any], int]:
        ids, labels = data.next()
        input_ids = torch.tensor(ids, device=device)
        # No KV cache in training: with one, transformers would not read the packed position ids.
        batch = {
            "input_ids": input_ids,
            "labels": torch.tensor(labels, device=device),
            "use_cache": False,
        }
        if opt.packing == "documents":
            eos = tokenizer.eos_token_id
            batch["position_ids"] = torch.tensor(
                [document_positions(row, eos) for row in ids], device=device
            )
        return batch, int(input_ids.numel())

    loop = StepLoop(
        model, optimizer, scheduler, opt, cfg.checkpoint.every_steps, world, rank, device, autocast
    )
    loop.run(
        state,
        micro_batch,
        lambda: data.epoch,
        lambda metrics: report_with_checkpoint(
            model, optimizer, scheduler, tokenizer, metrics, rank
        ),
    )
    step, history = state.step, state.history

    export = _export(model, tokenizer, cfg, rank, config.get("provenance"))
    if export is None:
        return None
    return {"start_step": start_step, "final_step": step, "history": history, "export_uri": export}


def setup_worker(compute: TrainComputeConfig, seed: int, device) -> None:
    """Logging to the worker's stderr (Ray forwards it to the driver), CPU threads, seed; for
    the workers of `condlabel train` and `condlabel distill`."""
    import torch

    if not log.handlers:  # a fresh worker process: nothing configured logging
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[condlabel train] %(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(compute.cpus_per_worker)))
    torch.manual_seed(seed)


def _load_latest(cfg: TrainConfig) -> TrainingState:
    """The model from this run's latest checkpoint (Ray Train hands it over), else the base."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return load_for_training(cfg)
    with checkpoint.as_directory() as ckpt_dir:
        loaded = load_for_training(cfg, ckpt_dir)
    if ray.train.get_context().get_world_rank() == 0:
        log.info("resuming from step %d", loaded.step)
    return loaded


def report_with_checkpoint(
    model, optimizer, scheduler, tokenizer, metrics: dict[str, Any], rank: int
) -> None:
    """Report the metrics with a checkpoint (rank 0 writes it; every rank gathers the state)."""
    import ray.train

    full_state = full_model_state(model)
    optimizer_state = training_state(model, optimizer, scheduler)
    if rank != 0:
        ray.train.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="condlabel-ckpt-")
    try:
        step, tokens_seen = metrics["step"], metrics["tokens_seen"]
        save_checkpoint(tmp, model, tokenizer, step, tokens_seen, optimizer_state, full_state)
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint-{step:08d}",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _export(model, tokenizer, cfg: TrainConfig, rank: int, provenance=None) -> str | None:
    """Export the final model (rank 0 writes it; every rank gathers) with its provenance; its
    URI on rank 0."""
    from condlabel.models import upload_directory

    full_state = full_model_state(model)
    if rank != 0:
        return None
    export_uri = cfg.checkpoint.effective_export_uri
    with tempfile.TemporaryDirectory(prefix="condlabel-export-") as tmp:
        export_model(tmp, model, tokenizer, full_state)
        if provenance is not None:
            Path(tmp, PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str))
        upload_directory(tmp, export_uri, cfg.storage)
    log.info("exported the final model to %s", export_uri)
    return export_uri
