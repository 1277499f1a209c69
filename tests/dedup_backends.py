"""A labeler that records every text it is asked to label, so a test can count labeler calls in
a real run. Its config class lives here: a labeler actor that unpickles the run's config imports
this module (tests/ is on the test Ray's PYTHONPATH), which registers the backend there, as a
plugin would."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

from condlabel.config import ConvertConfig, LabelerConfig
from condlabel.labelers import BACKENDS, Backend, LabelResult, keyphrase


class CountingLabelerConfig(LabelerConfig):
    count_dir: str = ""
    """Directory that receives one file per labeler instance, one JSON text per labeled chunk."""


class CountingLabeler:
    """The keyphrase labeler, recording each text it labels."""

    def __init__(self, cfg: CountingLabelerConfig) -> None:
        self.inner = keyphrase.KeyphraseLabeler(cfg.keyphrase)
        self.fingerprint = fingerprint(cfg)
        self.path = Path(cfg.count_dir) / f"{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"

    def label(self, texts: list[str]) -> list[LabelResult]:
        with self.path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(t) + "\n" for t in texts)
        return self.inner.label(texts)


def fingerprint(cfg) -> str:
    return "counting+" + keyphrase.fingerprint(cfg.keyphrase)


BACKENDS["counting"] = lambda: Backend(CountingLabeler, fingerprint)


def counting(cfg: ConvertConfig, count_dir: Path) -> ConvertConfig:
    """`cfg` with the counting backend writing under `count_dir`."""
    fields = {**dict(cfg.labeler), "backend": "counting", "count_dir": str(count_dir)}
    return cfg.model_copy(update={"labeler": CountingLabelerConfig.model_construct(**fields)})


def labeled_texts(count_dir: Path) -> list[str]:
    """Every text the counting labelers were asked to label, in no particular order."""
    return [
        json.loads(line)
        for path in sorted(count_dir.glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
