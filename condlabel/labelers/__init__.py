"""The registry of labeler backends, and the labeler protocol re-exported from `base`.

`build_labeler(cfg)` loads the configured backend (once per actor); `labeler_fingerprint(cfg)`
gives its fingerprint from config alone, so the driver never loads a model to know it. Backends
are imported lazily: torch/transformers/vllm load only where they are used, and no backend
imports this module (they import `condlabel.labelers.base`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from condlabel.labelers.base import (
    SAMPLING_ONLY,
    Labeler,
    LabelResult,
    make_fingerprint,
    model_fingerprint,
)

if TYPE_CHECKING:  # config imports the prompt templates from this package
    from condlabel.config import LabelerConfig

__all__ = [
    "BACKENDS",
    "SAMPLING_ONLY",
    "Backend",
    "LabelResult",
    "Labeler",
    "NoLabeler",
    "build_labeler",
    "labeler_fingerprint",
    "make_fingerprint",
    "model_fingerprint",
]


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
