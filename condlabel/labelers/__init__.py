"""The labeler protocol and the registry of backends.

A labeler takes a batch of chunk texts and returns one `LabelResult` per chunk; its
`fingerprint` (model, adapter, revision, prompt version, generation parameters) is stored with
every row so outputs of different labelers are never silently mixed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:  # config imports the prompt templates from this package
    from condlabel.config import LabelerConfig


@dataclass
class LabelResult:
    synopsis: str
    tags: list[str]
    raw_output: str
    parse_ok: bool
    logprob: float | None = None
    """Sum of raw log-probabilities of the generated tokens, EOS included; None without a model."""
    mean_logprob: float | None = None
    num_generated_tokens: int = 0
    truncated: bool = False
    """The chunk was cut to fit the labeler's input limit."""
    input_tokens: int | None = None
    """Tokens of the chunk fed to the model (after truncation); None without a tokenizer."""
    padded_tokens: int | None = None
    """This chunk's share of the padded batch the model ran over (input + generated positions,
    padding included); summed over a run and divided by the useful tokens it gives the
    padding overhead. None without a model."""
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Labeler(Protocol):
    @property
    def fingerprint(self) -> str: ...

    def label(self, texts: list[str]) -> list[LabelResult]: ...


def make_fingerprint(backend: str, params: dict[str, Any]) -> str:
    """`<backend>:<name>:<hash of every parameter that changes outputs>` — readable and exact."""
    blob = json.dumps(params, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:12]
    name = params.get("name") or params.get("model") or backend
    return f"{backend}:{name}:{digest}"


# Generation settings that only matter when sampling; left out of a greedy labeler's fingerprint.
SAMPLING_ONLY = frozenset({"temperature", "top_p", "top_k", "seed"})


def _short_name(source: str) -> str:
    return source.rstrip("/").rsplit("/", 1)[-1] or source


def model_fingerprint(backend: str, cfg: Any, runtime_only: set[str], prompt_version: str) -> str:
    """Fingerprint of a generative labeler from its config alone (no model load): every field
    but the runtime-only ones (and sampling settings when decoding greedily), named after the
    model and adapter."""
    exclude = set(runtime_only) | (set() if cfg.do_sample else set(SAMPLING_ONLY))
    name = _short_name(cfg.model or "")
    if cfg.adapter:
        name += "+" + _short_name(cfg.adapter)
    return make_fingerprint(
        backend, {**cfg.model_dump(exclude=exclude), "name": name, "prompt": prompt_version}
    )


@dataclass(frozen=True)
class Backend:
    build: Callable[[LabelerConfig], Labeler]
    """Loads the labeler (weights and all); called once per actor."""
    fingerprint: Callable[[LabelerConfig], str]
    """The fingerprint from config alone, so the driver never loads a model to know it."""


def _keyphrase() -> Backend:
    from condlabel.labelers import keyphrase

    return Backend(
        lambda c: keyphrase.KeyphraseLabeler(c.keyphrase),
        lambda c: keyphrase.fingerprint(c.keyphrase),
    )


def _hf() -> Backend:
    from condlabel.labelers import hf

    return Backend(lambda c: hf.HFLabeler(c.hf), lambda c: hf.fingerprint(c.hf))


def _vllm() -> Backend:
    from condlabel.labelers import vllm

    return Backend(lambda c: vllm.VLLMLabeler(c.vllm), lambda c: vllm.fingerprint(c.vllm))


class NoLabeler:
    """No synopsis and no tags: for runs whose prefix is control tokens only."""

    fingerprint = "none"

    def label(self, texts: list[str]) -> list[LabelResult]:
        return [LabelResult(synopsis="", tags=[], raw_output="", parse_ok=True) for _ in texts]


def _none() -> Backend:
    return Backend(lambda c: NoLabeler(), lambda c: NoLabeler.fingerprint)


# Backends are imported lazily: torch/transformers/vllm load only where they are used.
BACKENDS: dict[str, Callable[[], Backend]] = {
    "keyphrase": _keyphrase,
    "hf": _hf,
    "vllm": _vllm,
    "none": _none,
}


def _backend(name: str) -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ValueError(
            f"unknown labeler backend {name!r}; valid: {', '.join(sorted(BACKENDS))}"
        ) from None


def build_labeler(cfg: LabelerConfig) -> Labeler:
    return _backend(cfg.backend).build(cfg)


def labeler_fingerprint(cfg: LabelerConfig) -> str:
    return _backend(cfg.backend).fingerprint(cfg)
