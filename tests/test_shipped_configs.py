"""Every config shipped in ray_jobs/configs/ loads and validates."""

from __future__ import annotations

from pathlib import Path

import pytest

from condlabel.cli import main

CONFIGS = sorted((Path(__file__).parent.parent / "ray_jobs" / "configs").glob("*.yaml"))


def test_there_are_shipped_configs():
    assert len(CONFIGS) >= 2


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_validates(path, capsys):
    # train_*.yaml and eval_*.yaml are training/evaluation configs; the rest are conversions.
    kind = path.name.split("_", 1)[0] if path.name.startswith(("train_", "eval_")) else "convert"
    rc = main(["config", "--kind", kind, "--config", str(path)])
    assert rc == 0, capsys.readouterr().err
