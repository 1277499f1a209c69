"""GPU scheduling, tested on the CPU: a real `ray start --head --num-gpus 4` on this machine
declares four GPUs it does not have. Labeler actors reserve them as on a GPU node: one GPU per
actor gives 4 actors, half a GPU gives 8, each actor is handed its own GPU ids (and
CUDA_VISIBLE_DEVICES), `compute.max_actors` bounds the pool; the train job with `use_gpu` asks
one GPU per worker; and an actor that reserved a GPU but sees no CUDA device (these are not
real) fails at once naming the key, instead of labeling on the CPU or waiting."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from conftest import free_port
from gpu_probe import EXPECTED
from helpers import make_docs, write_jsonl
from test_ray_job_submit import _kill_head

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).parent / "ray")
PROBE = Path(__file__).with_name("gpu_probe.py")
LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture(scope="module")
def gpu_head():
    """A head with 4 declared GPUs and 6 logical CPUs; yields (address, env for drivers)."""
    temp_dir = tempfile.mkdtemp(prefix="clg-", dir="/tmp")  # short: Ray's socket paths
    token_file = Path(temp_dir) / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    env = {
        **os.environ,
        **LOOPBACK_ENV,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    port = free_port()
    cmd = [RAY, "start", "--head", "--num-gpus", "4", "--num-cpus", "6"]
    cmd += ["--include-dashboard", "false", "--temp-dir", temp_dir, "--disable-usage-stats"]
    cmd += ["--node-ip-address", "127.0.0.1", "--port", str(port)]
    for flag in (
        "--dashboard-port",  # bound even without the dashboard; 8265 may be another's
        "--ray-client-server-port",
        "--node-manager-port",
        "--object-manager-port",
        "--dashboard-agent-listen-port",
        "--dashboard-agent-grpc-port",
        "--runtime-env-agent-port",
        "--metrics-export-port",
    ):
        cmd += [flag, str(free_port())]
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
        if started.returncode != 0:
            pytest.fail(f"ray start failed:\n{started.stdout}\n{started.stderr}")
        yield f"127.0.0.1:{port}", env
    finally:
        _kill_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    source = tmp_path_factory.mktemp("gpu-in")
    docs = make_docs(24, "g")
    for i in range(4):
        write_jsonl(source / f"{i}.jsonl", docs[i::4])
    return source


def _convert(
    gpu_head, corpus: Path, tmp_path: Path, *overrides: str, actors: int = 0
) -> tuple[dict, list[dict]]:
    """Run a conversion through the probe; its result and one record per labeler actor started
    (`actors`: how many the probe's first batches wait for, so none is let go unstarted)."""
    address, env = gpu_head
    env = {**env, EXPECTED: str(actors)}
    records = tmp_path / "records"
    records.mkdir()
    args = [sys.executable, str(PROBE), address, str(records), str(corpus), str(tmp_path / "out")]
    args += ["chunking.max_words=60", "compute.batch_size=1", "compute.num_cpus_per_actor=0.25"]
    done = subprocess.run([*args, *overrides], env=env, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-3000:]
    # Ray forwards the raylet's warnings to the driver's stdout too: the probe's line is the
    # last JSON object.
    [*_, line] = [ln for ln in done.stdout.splitlines() if ln.startswith('{"code"')]
    result = json.loads(line)
    return result, [json.loads(p.read_text()) for p in sorted(records.glob("*.json"))]


def test_one_gpu_per_actor_gives_four_actors_each_on_its_own_gpu(gpu_head, corpus, tmp_path):
    result, actors = _convert(gpu_head, corpus, tmp_path, "compute.num_gpus_per_actor=1", actors=4)
    assert result["code"] == 0, result
    assert len(actors) == 4, actors
    assert len({a["pid"] for a in actors}) == 4
    assert sorted(a["gpu_ids"][0] for a in actors) == ["0", "1", "2", "3"]
    assert all(a["cuda_visible_devices"] == a["gpu_ids"][0] for a in actors)


def test_half_a_gpu_per_actor_gives_eight_two_on_each_gpu(gpu_head, corpus, tmp_path):
    result, actors = _convert(
        gpu_head, corpus, tmp_path, "compute.num_gpus_per_actor=0.5", actors=8
    )
    assert result["code"] == 0, result
    assert len(actors) == 8, actors
    assert all(a["cuda_visible_devices"] == a["gpu_ids"][0] for a in actors)
    assert Counter(a["gpu_ids"][0] for a in actors) == {"0": 2, "1": 2, "2": 2, "3": 2}


def test_max_actors_bounds_a_gpu_pool(gpu_head, corpus, tmp_path):
    overrides = ("compute.num_gpus_per_actor=1", "compute.max_actors=2")
    result, actors = _convert(gpu_head, corpus, tmp_path, *overrides, actors=2)
    assert result["code"] == 0, result
    assert len(actors) == 2 and len({a["gpu_ids"][0] for a in actors}) == 2


def test_an_actor_that_sees_no_cuda_device_fails_at_once_naming_the_key(
    gpu_head, corpus, tmp_path, tiny_t5
):
    overrides = (
        "compute.num_gpus_per_actor=1",
        "compute.actors=1",
        "labeler.backend=hf",
        f"labeler.model={tiny_t5}",
        "labeler.generation.max_new_tokens=4",
    )
    result, _ = _convert(gpu_head, corpus, tmp_path, *overrides)
    assert result["code"] == 2, result
    assert "compute.num_gpus_per_actor: this actor reserved GPU" in result["reason"]
    assert "sees no CUDA device" in result["reason"]
    assert result["seconds"] < 300  # failed, not waited
    assert not list((tmp_path / "out").glob("*.parquet"))  # nothing labeled on the CPU


def test_the_train_job_asks_one_gpu_per_worker(gpu_head):
    """The trainer the train job builds reserves one GPU per worker (Ray Train places them)."""
    from condlabel.config import load_train_config
    from condlabel.train.loop import torch_trainer

    cfg = load_train_config(
        overrides=[
            "data.paths=[/tmp/none]",
            "model.path=/tmp/none",
            "compute.use_gpu=true",
            "compute.num_workers=4",
            "checkpoint.storage_path=/tmp/condlabel-gpu-check",
        ]
    )
    trainer = torch_trainer(lambda config: None, {}, cfg, dataset=None)
    scaling = trainer.scaling_config
    assert scaling.use_gpu and scaling.num_workers == 4
    assert scaling._resources_per_worker_not_none["GPU"] == 1
    assert scaling.total_resources["GPU"] == 4  # what the 4-GPU head holds
