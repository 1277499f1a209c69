"""Conditional finetuning of a causal LM on tagged shards, on Ray Train.

    tagged parquet (s3://) --Ray Data, one shard per worker--> rows
      -> training text = prefix + text (a seeded fraction untagged; tags shuffled/dropped)
      -> tokens, packed into fixed-length sequences joined by EOS (prefix optionally masked)
      -> DDP/FSDP finetune (full or LoRA) -> HF checkpoints to storage every N steps -> export

The pure pieces (example building, packing, masking, schedule, checkpoint files) take no Ray
and are unit-tested directly; `train_loop_per_worker` and `run_training` are the Ray wiring
and import Ray inside.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from condlabel.config import (
    FormatConfig,
    OptimizationConfig,
    StorageConfig,
    TrainConfig,
    TrainDataConfig,
)
from condlabel.convert.format import render_prefix

log = logging.getLogger("condlabel")

IGNORE_INDEX = -100
"""Label value that PyTorch's cross-entropy (and every HF causal LM) leaves out of the loss."""
DATA_COLUMNS = ["text", "synopsis", "tags", "control_tokens", "parse_ok"]
TRAINER_STATE = "trainer_state.json"
OPTIMIZER_STATE = "optimizer.pt"
TRAIN_DATASET = "train"

# --------------------------------------------------------------------------- training text


def training_prefix(row: dict[str, Any], cfg: TrainDataConfig, rng: random.Random) -> str:
    """The prefix of one row, drawn with `rng` (one untagged draw, then tag shuffling/dropping).

    `prefix: control_tokens` keeps only the control tokens; a row whose label did not parse gets
    only its control tokens (as in conversion).
    """
    # Always draw, so whether a row is untagged does not shift the draws of later rows.
    untagged = rng.random() < cfg.untagged_fraction
    tags = list(row.get("tags") or [])
    if cfg.shuffle_tags:
        rng.shuffle(tags)
    if cfg.tag_drop_probability > 0:
        tags = [t for t in tags if rng.random() >= cfg.tag_drop_probability]
    if untagged:
        return ""
    control = list(row.get("control_tokens") or [])
    if cfg.prefix == "control_tokens":
        return "".join(control)
    return render_prefix(
        cfg.format, row.get("synopsis") or "", tags, control, bool(row.get("parse_ok", True))
    )


def build_examples(
    rows: Sequence[dict[str, Any]], cfg: TrainDataConfig, rng: random.Random
) -> list[tuple[str, str]]:
    """(prefix, text) per row, in order."""
    return [(training_prefix(row, cfg, rng), row["text"] or "") for row in rows]


def conditional_prompt(
    fmt: FormatConfig, mode: str, control_tokens: list[str], tags: list[str], synopsis: str | None
) -> str:
    """The prefix a model trained with `prefix: mode` expects for a conditional (evaluation)."""
    if mode == "control_tokens" or not (tags or synopsis):
        return "".join(control_tokens)
    return render_prefix(fmt, synopsis or "", tags, control_tokens, True)


# --------------------------------------------------------------------------- tokens and packing


def tokenize_examples(
    tokenizer, examples: Sequence[tuple[str, str]]
) -> list[tuple[list[int], list[int]]]:
    """(prefix ids, text ids) per example, tokenized apart.

    Apart, because at generation time the prefix is the whole prompt: the boundary tokens the
    model learns are the ones it will see, and the prefix length in tokens is exact.
    """
    if not examples:
        return []
    prefixes = tokenizer([p for p, _ in examples], add_special_tokens=False)["input_ids"]
    texts = tokenizer([t for _, t in examples], add_special_tokens=False)["input_ids"]
    return list(zip(prefixes, texts, strict=True))


@dataclass
class SequencePacker:
    """Joins examples into one stream (`prefix text EOS prefix text EOS ...`) and cuts it into
    `seq_len` blocks. Labels equal the input ids, except the prefix tokens when `mask_prefix`.

    Attention crosses the EOS separators inside a block (plain packing, as in GPT-2 pretraining);
    the tail shorter than `seq_len` waits for the next examples.
    """

    seq_len: int
    eos_id: int
    mask_prefix: bool = False
    _ids: list[int] = field(default_factory=list)
    _labels: list[int] = field(default_factory=list)

    def add(
        self, prefix_ids: Sequence[int], text_ids: Sequence[int]
    ) -> list[tuple[list[int], list[int]]]:
        """Append one example; returns the blocks it completed."""
        self._ids.extend(prefix_ids)
        self._labels.extend([IGNORE_INDEX] * len(prefix_ids) if self.mask_prefix else prefix_ids)
        self._ids.extend(text_ids)
        self._labels.extend(text_ids)
        self._ids.append(self.eos_id)
        self._labels.append(self.eos_id)
        blocks = []
        while len(self._ids) >= self.seq_len:
            blocks.append((self._ids[: self.seq_len], self._labels[: self.seq_len]))
            del self._ids[: self.seq_len], self._labels[: self.seq_len]
        return blocks

    @property
    def pending_tokens(self) -> int:
        return len(self._ids)


def pack_examples(
    tokenized: Sequence[tuple[Sequence[int], Sequence[int]]],
    seq_len: int,
    eos_id: int,
    mask_prefix: bool = False,
) -> list[tuple[list[int], list[int]]]:
    """Every full block from a list of tokenized examples (the tail is dropped)."""
    packer = SequencePacker(seq_len, eos_id, mask_prefix)
    return [block for prefix, text in tokenized for block in packer.add(prefix, text)]


# --------------------------------------------------------------------------- optimization


def lr_multiplier(step: int, cfg: OptimizationConfig) -> float:
    """Learning rate at optimizer step `step` (0-based) as a fraction of the peak."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def add_control_tokens(tokenizer, model, tokens: Sequence[str]) -> list[int]:
    """Add missing control tokens as special tokens (never split by BPE) and grow the embeddings.

    New rows start at the mean of the existing embeddings (transformers' default), so the first
    steps do not see huge logits for them. Returns the ids of every control token.
    """
    missing = [t for t in dict.fromkeys(tokens) if t not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    return tokenizer.convert_tokens_to_ids(list(tokens))


def new_token_ids(tokenizer, model_vocab_before: int, tokens: Sequence[str]) -> list[int]:
    return [i for i in tokenizer.convert_tokens_to_ids(list(tokens)) if i >= model_vocab_before]


# --------------------------------------------------------------------------- model and checkpoints


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    step: int = 0
    tokens_seen: int = 0
    optimizer_state: dict[str, Any] | None = None


def load_for_training(cfg: TrainConfig, checkpoint_dir: str | None = None) -> LoadedModel:
    """The model to train: from the latest checkpoint when resuming, else from `model.path`.

    A full finetune's checkpoint is a complete HF model; a LoRA checkpoint is an adapter on the
    configured base (with the control-token embedding rows it trained).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from condlabel.model_files import local_model_path

    if not cfg.model.path:
        raise ValueError("model.path: set the causal LM to finetune (local dir, s3:// or hub id)")
    lora = cfg.model.lora.enabled
    base_path = local_model_path(cfg.model.path, cfg.storage)
    source = checkpoint_dir if (checkpoint_dir and not lora) else base_path
    tokenizer = AutoTokenizer.from_pretrained(
        checkpoint_dir or base_path, revision=cfg.model.revision
    )
    model: Any = AutoModelForCausalLM.from_pretrained(
        source, revision=cfg.model.revision, use_safetensors=True, dtype=torch.float32
    )
    vocab_before = model.get_input_embeddings().weight.shape[0]
    add_control_tokens(tokenizer, model, cfg.model.control_tokens)
    if lora:
        from peft import LoraConfig, PeftModel, get_peft_model

        if checkpoint_dir:
            model = PeftModel.from_pretrained(model, checkpoint_dir, is_trainable=True)
        else:
            added = new_token_ids(tokenizer, vocab_before, cfg.model.control_tokens)
            lcfg = cfg.model.lora
            model = get_peft_model(
                model,
                LoraConfig(
                    task_type="CAUSAL_LM",
                    r=lcfg.r,
                    lora_alpha=lcfg.alpha,
                    lora_dropout=lcfg.dropout,
                    target_modules=lcfg.target_modules,
                    # The new control-token rows must learn, or every conditional looks the same.
                    trainable_token_indices=added or None,
                ),
            )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if lora:
            model.enable_input_require_grads()
    loaded = LoadedModel(model, tokenizer)
    if checkpoint_dir:
        state = json.loads(Path(checkpoint_dir, TRAINER_STATE).read_text())
        loaded.step, loaded.tokens_seen = int(state["step"]), int(state["tokens_seen"])
        opt_path = Path(checkpoint_dir, OPTIMIZER_STATE)
        if opt_path.exists():
            loaded.optimizer_state = torch.load(opt_path, map_location="cpu", weights_only=True)
    return loaded


def unwrap(model):
    """The model inside a DDP/FSDP wrapper."""
    return getattr(model, "module", model)


def gather_full_state(model, strategy: str) -> dict[str, Any] | None:
    """FSDP: every rank takes part, rank 0 gets the full state dict. DDP: None (use the module)."""
    if strategy != "fsdp" or not hasattr(model, "module"):
        return None
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.state_dict_type(
        model,
        StateDictType.FULL_STATE_DICT,
        FullStateDictConfig(offload_to_cpu=True, rank0_only=True),
    ):
        return model.state_dict()


def save_checkpoint(
    directory: str | Path,
    model,
    tokenizer,
    step: int,
    tokens_seen: int,
    optimizer_state: dict[str, Any] | None,
    full_state: dict[str, Any] | None = None,
) -> Path:
    """A Hugging Face checkpoint (safetensors) plus the trainer state needed to resume."""
    import torch

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    module = unwrap(model)
    if full_state is not None:
        module.save_pretrained(directory, state_dict=full_state, safe_serialization=True)
    else:
        module.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    if optimizer_state is not None:
        torch.save(optimizer_state, directory / OPTIMIZER_STATE)
    (directory / TRAINER_STATE).write_text(json.dumps({"step": step, "tokens_seen": tokens_seen}))
    return directory


def export_model(
    directory: str | Path, model, tokenizer, full_state: dict[str, Any] | None = None
) -> Path:
    """The final model as a plain HF checkpoint `from_pretrained` loads (LoRA merged in)."""
    directory = Path(directory)
    module = unwrap(model)
    if hasattr(module, "merge_and_unload"):
        module = module.merge_and_unload()
    if full_state is not None:
        module.save_pretrained(directory, state_dict=full_state, safe_serialization=True)
    else:
        module.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    return directory


def make_optimizer(model, cfg: OptimizationConfig):
    """AdamW; no weight decay on biases and norm weights (1-d parameters)."""
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=cfg.learning_rate,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, cfg))
    return optimizer, scheduler


# --------------------------------------------------------------------------- Ray Train wiring


def _micro_batches(
    shard, tokenizer, cfg: TrainConfig, rank: int, epoch: int
) -> Iterator[tuple[list, list]]:
    """One epoch of this worker's micro-batches: rows -> examples -> packed blocks."""
    data, opt = cfg.data, cfg.optimization
    rng = random.Random(f"{data.seed}:{rank}:{epoch}")
    packer = SequencePacker(opt.seq_len, tokenizer.eos_token_id, opt.loss_on == "text")
    pending: list[tuple[list[int], list[int]]] = []
    kwargs: dict[str, Any] = {"batch_size": data.rows_per_batch, "batch_format": "pyarrow"}
    if data.shuffle_buffer_rows:
        kwargs.update(
            local_shuffle_buffer_size=data.shuffle_buffer_rows,
            local_shuffle_seed=data.seed + 1000 * epoch + rank,
        )
    for batch in shard.iter_batches(**kwargs):
        examples = build_examples(batch.to_pylist(), data, rng)
        for prefix_ids, text_ids in tokenize_examples(tokenizer, examples):
            pending.extend(packer.add(prefix_ids, text_ids))
            while len(pending) >= opt.micro_batch_size:
                micro, pending = pending[: opt.micro_batch_size], pending[opt.micro_batch_size :]
                yield [ids for ids, _ in micro], [labels for _, labels in micro]


def _all_workers_have(flag: bool, device) -> bool:
    """True when every worker has a batch; DDP needs all of them to step together."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def _mean_over_workers(values: list[float], device) -> list[float]:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return (t / dist.get_world_size()).tolist()


def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """The training loop each Ray Train worker runs, top to bottom."""
    import ray.train
    import ray.train.torch
    import torch

    cfg: TrainConfig = config["cfg"]
    opt = cfg.optimization
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        torch.set_num_threads(cfg.compute.torch_threads or max(1, int(cfg.compute.cpus_per_worker)))
    torch.manual_seed(opt.seed)

    # Resume from the latest checkpoint of this run when there is one (rerun or retried failure).
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            loaded = load_for_training(cfg, ckpt_dir)
    else:
        loaded = load_for_training(cfg)
    tokenizer, start_step = loaded.tokenizer, loaded.step
    if rank == 0 and start_step:
        print(f"[condlabel train] resuming from step {start_step}", flush=True)

    model: Any = ray.train.torch.prepare_model(loaded.model, parallel_strategy=opt.strategy)
    optimizer, scheduler = make_optimizer(model, opt)
    if loaded.optimizer_state is not None:
        state = loaded.optimizer_state
        if opt.strategy == "fsdp" and hasattr(model, "module"):
            from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

            state = {
                **state,
                "optimizer": FSDP.optim_state_dict_to_load(model, optimizer, state["optimizer"]),
            }
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    use_bf16 = opt.precision == "bf16" or (opt.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16)

    shard = ray.train.get_dataset_shard(TRAIN_DATASET)
    epoch = start_step  # a resumed run starts a fresh, differently seeded pass over the data
    batches = _micro_batches(shard, tokenizer, cfg, rank, epoch)
    fresh_epoch = True

    def next_micro_batch():
        nonlocal batches, epoch, fresh_epoch
        while True:
            item = next(batches, None)
            if _all_workers_have(item is not None, device):
                fresh_epoch = False
                return item
            # Some worker ran dry: every worker closes its pass and all start the next together
            # (Ray Data starts an epoch only when every shard asks for it).
            if fresh_epoch:
                raise RuntimeError(
                    "the training data gives a worker no full micro-batch: add data or lower "
                    "optimization.seq_len / micro_batch_size / compute.num_workers"
                )
            batches.close()
            epoch += 1
            fresh_epoch = True
            batches = _micro_batches(shard, tokenizer, cfg, rank, epoch)

    model.train()
    step, tokens_seen = start_step, loaded.tokens_seen
    window_loss, window_steps, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
    history: list[dict[str, float]] = []
    while step < opt.max_steps:
        for micro in range(opt.grad_accum_steps):
            ids, labels = next_micro_batch()
            input_ids = torch.tensor(ids, device=device)
            label_ids = torch.tensor(labels, device=device)
            # Only the last micro-batch of an accumulation synchronises gradients across workers.
            sync = micro == opt.grad_accum_steps - 1 or not hasattr(model, "no_sync")
            with torch.enable_grad() if sync else model.no_sync(), autocast:
                loss = model(input_ids=input_ids, labels=label_ids).loss / opt.grad_accum_steps
            loss.backward()
            window_loss += loss.item()
            window_tokens += input_ids.numel()
        if opt.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt.max_grad_norm)
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window_steps += 1

        save = step % cfg.checkpoint.every_steps == 0 or step == opt.max_steps
        if step % opt.log_every_steps and not save:
            continue
        elapsed = time.perf_counter() - window_start
        loss_mean, tokens_total = _mean_over_workers(
            [window_loss / window_steps, window_tokens], device
        )
        tokens_total *= world
        tokens_seen += int(tokens_total)
        metrics = {
            "step": step,
            "loss": loss_mean,
            "learning_rate": lr,
            "epoch": epoch,
            "tokens_per_s": tokens_total / elapsed if elapsed > 0 else 0.0,
            "tokens_seen": tokens_seen,
        }
        history.append(metrics)
        if rank == 0:
            print(
                f"[condlabel train] step {step}/{opt.max_steps} loss {loss_mean:.4f} "
                f"lr {lr:.2e} tokens/s {metrics['tokens_per_s']:.0f}",
                flush=True,
            )
        window_loss, window_steps, window_tokens = 0.0, 0, 0
        if save:
            _report_with_checkpoint(model, optimizer, scheduler, tokenizer, cfg, metrics, rank)
        else:
            ray.train.report(metrics)
        window_start = time.perf_counter()

    full_state = gather_full_state(model, opt.strategy)
    export_uri = cfg.checkpoint.effective_export_uri
    if rank == 0:
        from condlabel.model_files import upload_directory

        with tempfile.TemporaryDirectory(prefix="condlabel-export-") as tmp:
            export_model(tmp, model, tokenizer, full_state)
            upload_directory(tmp, export_uri, cfg.storage)
        print(f"[condlabel train] exported the final model to {export_uri}", flush=True)
        return {
            "start_step": start_step,
            "final_step": step,
            "history": history,
            "export_uri": export_uri,
        }
    return None


def _report_with_checkpoint(
    model, optimizer, scheduler, tokenizer, cfg: TrainConfig, metrics: dict[str, Any], rank: int
) -> None:
    import ray.train

    full_state = gather_full_state(model, cfg.optimization.strategy)
    optimizer_state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    if cfg.optimization.strategy == "fsdp" and hasattr(model, "module"):
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        optimizer_state["optimizer"] = FSDP.optim_state_dict(model, optimizer)
    if rank != 0:
        ray.train.report(metrics)
        return
    tmp = tempfile.mkdtemp(prefix="condlabel-ckpt-")
    try:
        save_checkpoint(
            tmp,
            model,
            tokenizer,
            metrics["step"],
            metrics["tokens_seen"],
            optimizer_state,
            full_state,
        )
        ray.train.report(
            metrics,
            checkpoint=ray.train.Checkpoint.from_directory(tmp),
            checkpoint_dir_name=f"checkpoint-{metrics['step']:08d}",
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
    from condlabel.storage import StorageError, expand_inputs

    if not cfg.model.path:
        raise StorageError("no model given: set model.path (local dir, s3:// or hub id)")
    if not cfg.data.paths:
        raise StorageError("no training data given: set data.paths to a tagged output prefix")
    files = [f.uri for f in expand_inputs(cfg.data.paths, cfg.storage, suffixes=(".parquet",))]
    if not files:
        raise StorageError(f"no parquet files under {cfg.data.paths}")
    return files


def _arrow_filesystem(storage: StorageConfig):
    """A pyarrow S3 filesystem when the config overrides the AWS chain, else None."""
    if not (storage.endpoint_url or storage.region or storage.access_key_id or storage.anon):
        return None
    from pyarrow import fs as pafs

    kwargs: dict[str, Any] = {"anonymous": storage.anon}
    if storage.endpoint_url:
        kwargs["endpoint_override"] = storage.endpoint_url
    if storage.region:
        kwargs["region"] = storage.region
    if storage.access_key_id is not None and storage.secret_access_key is not None:
        kwargs["access_key"] = storage.access_key_id.get_secret_value()
        kwargs["secret_key"] = storage.secret_access_key.get_secret_value()
    return pafs.S3FileSystem(**kwargs)


def _strip_scheme(uri: str) -> str:
    return uri.split("://", 1)[1] if "://" in uri else uri


def _run_storage(uri: str, storage: StorageConfig):
    """(path, pyarrow filesystem) for Ray Train's RunConfig.

    Remote storage goes through our fsspec filesystem (s3fs) wrapped for pyarrow: it honours
    `storage:` overrides, and it writes small objects with one PUT, where pyarrow's own S3 client
    completes an empty multipart upload for Ray's marker file, which some S3 servers reject.
    """
    from condlabel.storage import filesystem, split_uri

    scheme, path = split_uri(uri)
    if scheme == "file":
        return path, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return path, PyFileSystem(FSSpecHandler(filesystem(scheme, storage)))


def run_training(cfg: TrainConfig) -> TrainSummary:
    """Read the tagged shards through Ray Data and finetune on a Ray Train worker group."""
    import ray
    import ray.data
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    files = plan_training(cfg)
    log.info("training on %d parquet file(s) from %s", len(files), cfg.data.paths)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"ignore_reinit_error": True}
        if cfg.compute.address:
            kwargs["address"] = cfg.compute.address
        elif cfg.compute.num_cpus:
            kwargs["num_cpus"] = cfg.compute.num_cpus
        ray.init(**kwargs)

    arrow_fs = _arrow_filesystem(cfg.storage)
    remote_files = all("://" in f and not f.startswith("file://") for f in files)
    if arrow_fs is not None and remote_files:
        dataset = ray.data.read_parquet(
            [_strip_scheme(f) for f in files], columns=DATA_COLUMNS, filesystem=arrow_fs
        )
    else:
        dataset = ray.data.read_parquet(files, columns=DATA_COLUMNS)

    ck = cfg.checkpoint
    storage_path, storage_fs = _run_storage(ck.storage_path, cfg.storage)
    resources = {"CPU": cfg.compute.cpus_per_worker}
    if cfg.compute.use_gpu:
        resources["GPU"] = cfg.compute.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,  # type: ignore[arg-type]  # Train V2 passes its return value on
        train_loop_config={"cfg": cfg},
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
    )
