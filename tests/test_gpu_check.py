"""bench/gpu_check.py, the check prepared for the first GPU, kept alive on the CPU: every check
passes with `--device cpu` (ct2 may be skipped with its reason; adherence is reported, not
gated), each reports one JSON line, the last line is the whole result, all within 10 minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NAMES = {
    "labeler_bf16_vs_fp32",
    "logprob_batch_invariance",
    "oom_backoff",
    "packing_isolation",
    "train_steps",
    "guided_eval",
    "ct2",
    "adherence",
}


def test_the_gpu_check_loads_without_ray_and_pytest():
    """The GPU machine it is made for has neither: every module a check imports loads with both
    made unimportable."""
    script = (
        "import sys; sys.modules.update(ray=None, pytest=None); sys.path[:0] = ['bench']\n"
        "import gpu_check, gpu_checks, gpu_adherence  # noqa\n"
        "import condlabel.labelers.hf, condlabel.train.steps, condlabel.train.evaluate  # noqa\n"
        "import condlabel.convert.stages, condlabel.train.data  # noqa\n"
        "print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.slow
def test_the_gpu_check_passes_on_the_cpu(tmp_path):
    started = time.perf_counter()
    models = tmp_path / "models"  # cold: the time includes preparing the models
    done = subprocess.run(
        [
            sys.executable,
            "bench/gpu_check.py",
            "--device",
            "cpu",
            "--json",
            "--models",
            str(models),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    seconds = time.perf_counter() - started
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    final = lines[-1]
    assert {line["check"] for line in lines[:-1]} == NAMES  # one line per check as it ends
    assert set(final["checks"]) == NAMES and final["device"].startswith("cpu")
    failed = {name: r for name, r in final["checks"].items() if not r["passed"]}
    assert not failed, failed
    for name, check in final["checks"].items():
        assert check["skipped"] is False or (name == "ct2" and check["reason"]), (name, check)
    assert final["passed"] and done.returncode == 0, done.stderr[-2000:]
    assert all(check["seconds"] > 0 for check in final["checks"].values())
    assert final["prepare_seconds"] > 0 and (models / "prepared.json").exists()
    labels = final["checks"]["labeler_bf16_vs_fp32"]
    assert labels["identical_share"] >= 0.95 and labels["parse_rate_fp32"] == 1.0
    train = final["checks"]["train_steps"]
    assert train["loss_last"] < 0.5 * train["loss_first"]
    assert seconds < 600, f"took {seconds:.0f}s"
