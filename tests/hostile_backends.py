"""A labeler backend that fails on some texts, registered in `condlabel.labelers.BACKENDS` the
way the real backends are. The test Ray runs `register` in every worker (conftest.py), so the
labeler actors of a real run build it."""

from __future__ import annotations

import time

from condlabel.config import ConvertConfig
from condlabel.labelers import BACKENDS, Backend, LabelResult, keyphrase

POISON = "POISONED"
STALL = "STALLED"  # a batch holding it never returns (sleeps an hour)


class PoisonedLabeler:
    """The keyphrase labeler, except that a batch holding a text with `POISON` raises and one
    with `STALL` hangs."""

    def __init__(self, cfg) -> None:
        self.inner = keyphrase.KeyphraseLabeler(cfg.keyphrase)
        self.fingerprint = fingerprint(cfg)

    def label(self, texts: list[str]) -> list[LabelResult]:
        for text in texts:
            if POISON in text:
                raise ValueError(f"cannot label a poisoned text ({len(text)} characters)")
            if STALL in text:
                time.sleep(3600)
        return self.inner.label(texts)


def fingerprint(cfg) -> str:
    return "poisoned+" + keyphrase.fingerprint(cfg.keyphrase)


def register() -> None:
    BACKENDS["poisoned"] = lambda: Backend(PoisonedLabeler, fingerprint)


def poisoned(cfg: ConvertConfig) -> ConvertConfig:
    """`cfg` with the poisoned backend (a name the config schema does not list)."""
    register()
    labeler = type(cfg.labeler).model_construct(**{**dict(cfg.labeler), "backend": "poisoned"})
    return cfg.model_copy(update={"labeler": labeler})
