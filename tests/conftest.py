"""Shared fixtures: a moto S3 server *process* on 127.0.0.1 and a local Ray.

Nothing is mocked in-process: s3fs/pyarrow/Ray reach the S3 server over HTTP exactly as they
would reach AWS, through AWS_ENDPOINT_URL.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from lm_fixtures import tiny_gpt2_dir, tiny_sentiment_dir, tiny_toxicity_dir  # noqa: F401
from tiny_models import tiny_llama, tiny_llama_adapter, tiny_t5, tiny_t5_adapter  # noqa: F401

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")


_PORTS_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and not handed out before in this session: the OS may offer a port it
    just gave again, and a `ray start` given the same port for two components refuses to start
    (CI: client server and runtime-env agent both on 52377)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _PORTS_GIVEN:
            _PORTS_GIVEN.add(port)
            return port


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"moto_server did not listen on {port} within {timeout}s")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """Start `moto_server` as its own process; export the AWS env so every client finds it."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    _wait_for_port(port, proc)
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-never-logged",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture()
def s3_bucket(s3_server):
    """A fresh bucket on the S3 server; returns its name."""
    import s3fs

    name = f"test-{uuid.uuid4().hex[:10]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir(name)
    return name


@pytest.fixture()
def s3fs_client(s3_server):
    import s3fs

    return s3fs.S3FileSystem(
        client_kwargs={"endpoint_url": s3_server},
        skip_instance_cache=True,
        use_listings_cache=False,
    )


@pytest.fixture(scope="session")
def ray_local(s3_server):
    """One local Ray for the session (its own, never a `ray start` cluster on the machine).

    Started after the S3 server so its workers inherit AWS_ENDPOINT_URL. 4 logical CPUs on a
    2-core machine leave room for readers beside the labeler actors. Every worker registers
    the test labeler backends of `hostile_backends`, as a plugin would.
    """
    import ray

    from condlabel.ray_runtime import loopback_only

    tests = str(Path(__file__).parent)
    path = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    with loopback_only():
        ray.init(
            address="local",
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            ignore_reinit_error=True,
            runtime_env={
                "env_vars": {"PYTHONPATH": path},
                "worker_process_setup_hook": "hostile_backends.register",
            },
        )
    yield ray
    ray.shutdown()
