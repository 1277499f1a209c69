"""The registry of labeler backends, and the labeler protocol re-exported from `base`.

`build_labeler(cfg, storage)` loads the configured backend (once per actor), fetching an s3://
model with the run's `storage` settings; `labeler_fingerprint(cfg)` gives its fingerprint from
config alone, so the driver never loads a model to know it. Backends are imported lazily:
torch/transformers/vllm load only where they are used, and no backend imports this module (they
import `condlabel.labelers.base`).
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
    from condlabel.config import LabelerConfig, StorageConfig

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
    build: Callable[..., Labeler]
    """Loads the labeler (weights and all); called once per actor with the labeler config, and
    with the run's `StorageConfig` too when `fetches_models`."""
    fingerprint: Callable[[LabelerConfig], str]
    """The fingerprint from config alone, so the driver never loads a model to know it."""
    fetches_models: bool = False
    """The backend downloads weights (s3:// models): `build(cfg, storage)` gets the endpoint and
    credentials of the run's `storage:` section, not only the environment's."""


def _keyphrase() -> Backend:
    from condlabel.labelers import keyphrase

    return Backend(
        lambda c: keyphrase.KeyphraseLabeler(c.keyphrase),
        lambda c: keyphrase.fingerprint(c.keyphrase),
    )


def _hf() -> Backend:
    from condlabel.labelers import hf

    return Backend(
        lambda c, storage: hf.HFLabeler(c.backend_config(), storage),
        lambda c: hf.fingerprint(c.backend_config()),
        fetches_models=True,
    )


def _vllm() -> Backend:
    from condlabel.labelers import vllm

    return Backend(
        lambda c, storage: vllm.VLLMLabeler(c.backend_config(), storage),
        lambda c: vllm.fingerprint(c.backend_config()),
        fetches_models=True,
    )


def _ct2() -> Backend:
    from condlabel.labelers import ct2

    return Backend(
        lambda c, storage: ct2.CT2Labeler(c.backend_config(), storage),
        lambda c: ct2.fingerprint(c.backend_config()),
        fetches_models=True,
    )


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
    "ct2": _ct2,
    "none": _none,
}


def _backend(name: str) -> Backend:
    try:
        return BACKENDS[name]()
    except KeyError:
        raise ValueError(
            f"unknown labeler backend {name!r}; valid: {', '.join(sorted(BACKENDS))}"
        ) from None


def build_labeler(cfg: LabelerConfig, storage: StorageConfig | None = None) -> Labeler:
    """The configured labeler, loaded; `storage` is the run's storage section (None: the
    environment's AWS chain only)."""
    backend = _backend(cfg.backend)
    return backend.build(cfg, storage) if backend.fetches_models else backend.build(cfg)


def labeler_fingerprint(cfg: LabelerConfig) -> str:
    return _backend(cfg.backend).fingerprint(cfg)
