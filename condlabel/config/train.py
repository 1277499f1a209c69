"""Settings of a conditional finetuning run (`condlabel train`): data, model, optimization,
checkpoints and compute."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from condlabel.config.common import (
    FormatConfig,
    RayConnection,
    RunConfig,
    StorageConfig,
    StrictModel,
)

DEFAULT_CONTROL_TOKENS = ["<|pos|>", "<|neg|>", "<|toxic|>", "<|nontoxic|>"]
DEFAULT_NEW_TOKEN_WORDS = {
    "<|pos|>": "positive good happy great",
    "<|neg|>": "negative bad sad terrible",
    "<|toxic|>": "toxic offensive insulting hateful",
    "<|nontoxic|>": "polite kind respectful friendly",
}


class TrainDataConfig(StrictModel):
    paths: list[str] = Field(default_factory=list)
    """Tagged output prefixes (or parquet files) written by `condlabel convert`; local or s3://.
    Bookkeeping paths (`_manifest/`, `_rejects/`) are skipped. Each entry keeps its own latest
    versions: outputs of one corpus with other labels are all trained on."""
    prefix: Literal["template", "control_tokens"] = "template"
    """Training text = prefix + text; `template` renders `format.prefix_template` (synopsis, tags,
    control tokens, as in conversion), `control_tokens` puts only the control tokens in front."""
    format: FormatConfig = Field(default_factory=FormatConfig)
    """Prefix template used when `prefix: template` (default: the conversion default)."""
    url_field: str = "url"
    """The kept input field holding a row's URL, for `{url_domain}` in the template (the
    conversion's `input.url_field`)."""
    untagged_fraction: float = Field(0.01, ge=0, le=1)
    """Share of examples trained without any prefix, so the model also works unconditioned."""
    shuffle_tags: bool = False
    """Shuffle the order of each example's tags (the model should not learn an order)."""
    tag_drop_probability: float = Field(0.0, ge=0, le=1)
    """Each tag is dropped with this probability (robustness to partial conditionals)."""
    control_token_drop_probability: float = Field(0.0, ge=0, le=1)
    """Each of an example's control tokens is dropped with this probability, so a row labelled
    by several classifiers also trains each token alone (evaluation conditions on one)."""
    synopsis_drop_probability: float = Field(0.0, ge=0, le=1)
    """Each example's synopsis is dropped with this probability, so the model also learns
    tags-only conditionals (evaluation renders a conditional without synopsis the same way)."""
    cooldown_fraction: float = Field(0.0, ge=0, lt=1)
    """The last share of optimizer steps trains on plain text without any prefix (MeCo's
    cooldown: the model keeps its unconditioned ability); 0 disables it."""
    shuffle: bool = True
    """Train the rows in a new seeded order each pass over the data (seeded by
    `optimization.seed`; the same seed gives the same order). Data read into the object store
    (up to `condlabel.train.dataset.MATERIALIZE_MAX_ROWS` rows) is shuffled whole: each pass is a
    full random permutation of every row, divided among the workers so that a step trains the
    same rows whatever the number of workers. Larger data, streamed from storage, is read in a
    new random file order each pass and mixed in each worker's buffer of `shuffle_buffer_rows`.
    Corpora are grouped (by topic file, domain or crawl segment): in read order the model sees
    one group after another and learns the control tokens far less (bench/README.md). false:
    the read order, every pass."""
    shuffle_buffer_rows: int = Field(10_000, ge=0)
    """Data streamed from storage with `shuffle` on: rows in each worker's local shuffle buffer,
    which mixes rows across the files it reads (10,000 rows of 2,000-word chunks hold about
    120 MB); 0 shuffles the file order only. Data in the object store is shuffled whole and
    needs no buffer."""


class LoraTrainConfig(StrictModel):
    enabled: bool = False
    """Train a LoRA adapter instead of every weight; the export is merged into the base model."""
    r: int = Field(8, ge=1)
    """LoRA rank."""
    alpha: int = Field(16, ge=1)
    """LoRA scaling numerator (scale = alpha / r)."""
    target_modules: list[str] | None = None
    """Modules that get adapters; default: peft's choice for the architecture."""


class TrainModelConfig(StrictModel):
    path: str | None = None
    """Causal LM to finetune: local directory, s3:// prefix or hub id (safetensors weights)."""
    revision: str | None = None
    """Hub revision when `path` is a hub id."""
    control_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTROL_TOKENS))
    """Added to the tokenizer as special tokens (the embeddings are resized) when missing."""
    new_token_init: Literal["random", "words", "mean"] = "random"
    """Embedding rows of newly added control tokens. `random` (default): distinct rows drawn
    around the vocabulary's mean with its per-dimension spread, as far apart as two real tokens.
    `words`: the mean embedding of the words in `new_token_words` (tokens without words get
    `random`); for a pretrained base whose word embeddings carry meaning. `mean`: transformers'
    default, every new row at the vocabulary's mean: the rows start practically identical and
    the model may never tell the tokens apart (on a random-init base `words` rows,
    averages of a few random rows, stay too close as well)."""
    new_token_words: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_NEW_TOKEN_WORDS))
    """Control token -> words whose mean embedding starts its row (`new_token_init: words`)."""
    lora: LoraTrainConfig = Field(default_factory=LoraTrainConfig)
    """LoRA instead of a full finetune."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""


class OptimizationBase(StrictModel):
    """Optimizer, schedule and precision: what `condlabel train` and `condlabel distill` share
    (each command's section adds its own and may set other defaults)."""

    micro_batch_size: int = Field(4, ge=1)
    """Sequences (or examples) per worker per forward pass."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step (global batch = workers x micro x accum)."""
    max_steps: int = Field(1000, ge=1)
    """Optimizer steps of the whole run (a resumed run continues up to this number)."""
    learning_rate: float = Field(5e-5, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay (not applied to biases and norms)."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warmup from 0 to the peak learning rate."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay after warmup, down to 0.1 x peak at `max_steps`."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Gradient clipping norm; null disables clipping."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """`auto`: bf16 autocast on GPU, fp32 on CPU."""
    seed: int = 0
    """Seed of the run: new weights (added tokens, LoRA), dropout, the data's shuffle and
    `condlabel train`'s draws (untagged examples, tag shuffling and dropping)."""
    log_every_steps: int = Field(10, ge=1)
    """Steps between metric reports (loss, tokens/s, learning rate) and progress lines."""


class OptimizationConfig(OptimizationBase):
    """`condlabel train`'s optimization: the shared settings plus packing and parallelism."""

    seq_len: int = Field(1024, ge=8)
    """Tokens per packed training sequence (examples joined by EOS, then cut to this length)."""
    packing: Literal["documents", "concat"] = "documents"
    """How examples share a packed sequence. `documents`: each example (from the EOS before it)
    restarts the position ids and attends only to itself, as a generation under a conditional
    starts (`EOS prefix ...` at position 0), so the model finds its prefix at the same place in
    training and at evaluation, and never reads another example's tags (the attention mask comes
    from the position ids: transformers' packed-sequence support, flash-attention's varlen path on
    GPU). `concat`: GPT-2-style packing, attention crosses examples and positions run on."""
    loss_on: Literal["all", "text"] = "all"
    """`all`: loss on every token; `text`: prefix tokens are masked out of the loss."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism: `ddp` (a full model per worker) or `fsdp` (sharded; large models, GPU)."""


class TrainCheckpointConfig(StrictModel):
    storage_path: str = "./condlabel-train"
    """Where Ray Train keeps runs and checkpoints (local or s3://)."""
    name: str = Field("condlabel-train", pattern=r"^[A-Za-z0-9_.-]+$")
    """Run name; rerunning with the same name resumes from its latest checkpoint."""
    every_steps: int = Field(100, ge=1)
    """Steps between checkpoints (Hugging Face format, safetensors)."""
    num_to_keep: int | None = Field(2, ge=1)
    """Checkpoints kept (oldest deleted first); null keeps all."""
    max_failures: int = Field(2, ge=0)
    """Worker-group failures Ray Train retries from the latest checkpoint before giving up."""
    export_uri: str | None = None
    """Where the final model is exported for `from_pretrained` (LoRA merged); default
    `<storage_path>/<name>/final`."""

    @property
    def effective_export_uri(self) -> str:
        return self.export_uri or f"{self.storage_path.rstrip('/')}/{self.name}/final"


class TrainComputeConfig(RayConnection):
    num_workers: int = Field(1, ge=1)
    """Training workers (one process each; DDP/FSDP across them)."""
    use_gpu: bool = False
    """Give each worker GPUs (`gpus_per_worker`); bf16 and NCCL follow."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs reserved per worker (fractions allowed: 0.5 lets 2 workers share 1 core); on CPU
    a worker runs torch on max(1, floor(cpus_per_worker)) threads."""
    gpus_per_worker: float = Field(1.0, gt=0)
    """GPUs per worker when `use_gpu`."""


class TrainConfig(RunConfig):
    """Configuration of a conditional finetuning run (`condlabel train`)."""

    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    """The tagged shards, and how each example's prefix is made."""
    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    """The model to finetune, its added tokens, and LoRA."""
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    """Sequence packing, batch, schedule, precision and parallelism."""
    checkpoint: TrainCheckpointConfig = Field(default_factory=TrainCheckpointConfig)
    """Where checkpoints and the final model go; resume by run name."""
    compute: TrainComputeConfig = Field(default_factory=TrainComputeConfig)
    """The Ray cluster and the training workers."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint, profile and credentials for every s3:// path."""

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        problems = []
        if self.optimization.warmup_steps >= self.optimization.max_steps:
            problems.append("optimization.warmup_steps: must be below optimization.max_steps")
        if self.optimization.strategy == "fsdp" and self.model.lora.enabled:
            problems.append(
                "optimization.strategy: fsdp with model.lora.enabled is not supported; "
                "use ddp for LoRA (the frozen base is small to replicate)"
            )
        if self.optimization.strategy == "fsdp" and not self.compute.use_gpu:
            problems.append(
                "optimization.strategy: fsdp needs compute.use_gpu (Ray Train's FSDP "
                "runs on GPUs); use ddp on CPU"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self
