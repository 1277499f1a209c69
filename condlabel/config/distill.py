"""Settings of a distillation run (`condlabel distill`): the teacher's tagged output, the
student, optimization, checkpoints, compute, the quality gate and where the student goes."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from condlabel.config.common import RunConfig, StorageConfig, StrictModel
from condlabel.config.labelers import one_text_field
from condlabel.config.train import LoraTrainConfig, OptimizationBase, TrainComputeConfig


class DistillDataConfig(StrictModel):
    paths: list[str] = Field(default_factory=list)
    """The teacher's tagged output prefixes (or parquet files) written by `condlabel convert`,
    local or s3://; only the latest version of each document and rows with `parse_ok` are used."""


class StudentConfig(StrictModel):
    model: str | None = None
    """The student to train: a seq2seq (T5 family) or causal LM (which one: the model config's
    `is_encoder_decoder`), local directory, s3:// prefix or hub id (safetensors), e.g.
    `google/flan-t5-base`. Required."""
    revision: str | None = None
    """Hub revision when `model` is a hub id."""
    prompt_template: str = "{text}"
    """Student input; `{text}` is the chunk. The exported student is labeled with the same
    template (`labeler.hf.prompt_template`), so it is rendered and tokenized by the labeler's
    own encoding here. A causal student usually needs e.g. `"{text}\\n\\nSynopsis:"`."""
    max_input_tokens: int | None = Field(None, ge=8)
    """Longer inputs are cut as the labeler cuts them; default: the model's limit."""
    max_new_tokens: int = Field(80, ge=8)
    """Longest target (the teacher's `Synopsis: ... Tags: [...]`) trained on, in tokens, and
    the generation limit of the gate (the labeler's max_new_tokens)."""
    lora: LoraTrainConfig = Field(default_factory=LoraTrainConfig)
    """LoRA instead of a full finetune; the exported student is merged."""

    _prompt_template = field_validator("prompt_template")(one_text_field)


class DistillOptimizationConfig(OptimizationBase):
    """`condlabel train`'s optimizer settings, with a student's defaults; examples are chunks
    with their teacher label, one per sequence (no packing)."""

    micro_batch_size: int = Field(8, ge=1)
    """Examples per worker per forward pass."""
    learning_rate: float = Field(3e-4, gt=0)
    """Peak learning rate (AdamW)."""


class DistillCheckpointConfig(StrictModel):
    storage_path: str = "./condlabel-distill"
    """Where Ray Train keeps runs and checkpoints (local or s3://); the student candidate the
    gate judges is written to `<storage_path>/<name>/candidate`."""
    name: str = Field("condlabel-distill", pattern=r"^[A-Za-z0-9_.-]+$")
    """Run name; rerunning with the same name resumes from its latest checkpoint."""
    every_steps: int = Field(100, ge=1)
    """Steps between checkpoints."""
    num_to_keep: int | None = Field(2, ge=1)
    """Checkpoints kept (oldest deleted first); null keeps all."""
    max_failures: int = Field(2, ge=0)
    """Worker-group failures Ray Train retries from the latest checkpoint before giving up."""

    @property
    def candidate_uri(self) -> str:
        return f"{self.storage_path.rstrip('/')}/{self.name}/candidate"


class GateConfig(StrictModel):
    min_parse_rate: float = Field(0.9, ge=0, le=1)
    """Least share of held-out chunks whose student label parses."""
    min_tag_f1: float = Field(0.0, ge=0, le=1)
    """Least tag F1 (micro, after normalisation) of the student against the teacher."""
    min_rouge_l: float = Field(0.0, ge=0, le=1)
    """Least mean synopsis ROUGE-L F-measure against the teacher."""
    max_chunks: int = Field(1000, ge=1)
    """Held-out chunks the student labels for the gate (those of lowest holdout hash)."""


class DistillConfig(RunConfig):
    """Configuration of a distillation run (`condlabel distill`)."""

    data: DistillDataConfig = Field(default_factory=DistillDataConfig)
    """The teacher's labels."""
    student: StudentConfig = Field(default_factory=StudentConfig)
    """The model that learns to label, its prompt, and LoRA."""
    holdout_fraction: float = Field(0.1, gt=0, lt=1)
    """Share of documents (by a hash of the id, so every chunk of a document is on one side)
    held out of training; the gate compares student and teacher on them."""
    optimization: DistillOptimizationConfig = Field(default_factory=DistillOptimizationConfig)
    """Batch, schedule and precision."""
    checkpoint: DistillCheckpointConfig = Field(default_factory=DistillCheckpointConfig)
    """Where checkpoints and the gate's candidate go; resume by run name."""
    compute: TrainComputeConfig = Field(default_factory=TrainComputeConfig)
    """The Ray cluster and the training workers (the gate runs on one worker's resources)."""
    output: str | None = None
    """Where the student that passes the gate is exported (merged if LoRA; local or s3://), with
    `distill_report.json`; then `--set labeler.backend=hf --set labeler.model=<output>`.
    Required."""
    gate: GateConfig = Field(default_factory=GateConfig)
    """Below any minimum: the command exits 1 and nothing is exported."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint, profile and credentials for every s3:// path."""

    @model_validator(mode="after")
    def _consistent(self) -> DistillConfig:
        if self.optimization.warmup_steps >= self.optimization.max_steps:
            raise ValueError("optimization.warmup_steps: must be below optimization.max_steps")
        return self
