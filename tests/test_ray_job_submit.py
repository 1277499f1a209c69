"""`ray job submit` end to end against a real `ray start --head` on its own ports and temp dir.

The head is started with the S3 server's AWS_* environment, as a cluster node would be started
with its instance role: the job's driver and workers inherit it, and nothing secret travels in
the runtime_env. Token auth is on (Ray 2.60): the token is read from RAY_AUTH_TOKEN_PATH, a file
in the test's temp dir, by the head and by the CLI alike; the CLI sends it only with
RAY_AUTH_MODE=token. (Without RAY_AUTH_TOKEN_PATH both would use ~/.ray/auth_token, whatever
--temp-dir says.) The head is stopped by killing its own processes by id, never `ray stop`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import pytest
from conftest import free_port
from pipeline_helpers import jsonl_bytes, output_rows, row_keys

from condlabel.config import load_convert_config
from condlabel.convert.stages import read_and_chunk
from condlabel.demo import sample_documents
from condlabel.labelers import labeler_fingerprint
from condlabel.runs.summary import FileStats
from condlabel.schema import OUTPUT_SCHEMA

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
CONFIG = "ray_jobs/configs/cluster_keyphrase.yaml"


def _head_processes(temp_dir: str) -> list[psutil.Process]:
    """Every process of the head started with `temp_dir`, and all their descendants.

    Ray's daemons name the session directory on their command line; workers rename themselves
    (`ray::IDLE`), so they are found as descendants of the raylet instead.
    """
    roots = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in part for part in proc.info["cmdline"] or []):
                roots.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found: dict[int, psutil.Process] = {p.pid: p for p in roots}
    for proc in roots:
        try:
            for child in proc.children(recursive=True):
                found[child.pid] = child
        except psutil.NoSuchProcess:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _kill_head(temp_dir: str) -> None:
    procs = _head_processes(temp_dir)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def ray_head(s3_server):
    """A real Ray head: 2 CPUs, free ports, its own temp dir, token auth; yields (address, env)."""
    # Ray's unix socket paths must stay under ~107 bytes: a short dir under /tmp, not tmp_path.
    temp_dir = tempfile.mkdtemp(prefix="clr-", dir="/tmp")
    token_file = Path(temp_dir) / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    dashboard_port = free_port()
    env = {
        **os.environ,  # carries AWS_ENDPOINT_URL and the dummy keys of the S3 server fixture
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_ADDRESS", None)
    ports = {
        "--port": free_port(),
        "--dashboard-port": dashboard_port,
        "--ray-client-server-port": free_port(),
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--runtime-env-agent-port": free_port(),
        "--metrics-export-port": free_port(),
    }
    cmd = [
        RAY,
        "start",
        "--head",
        "--num-cpus",
        "2",
        "--dashboard-host",
        "127.0.0.1",
        "--include-dashboard",
        "true",
        "--temp-dir",
        temp_dir,
        "--disable-usage-stats",
    ]
    for flag, port in ports.items():
        cmd += [flag, str(port)]
    address = f"http://127.0.0.1:{dashboard_port}"
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if started.returncode != 0:
            pytest.fail(f"ray start failed:\n{started.stdout}\n{started.stderr}")
        _wait_for_job_server(address, token_file.read_text())
        yield address, env
    finally:
        _kill_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_job_server(address: str, token: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    request = urllib.request.Request(
        f"{address}/api/version", headers={"Authorization": f"Bearer {token}"}
    )
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the job server at {address} did not answer within {timeout}s")


def _ray(env: dict[str, str], *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAY, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _job_status(env: dict[str, str], address: str, job_id: str) -> str:
    out = _ray(env, "job", "status", "--address", address, job_id, timeout=60)
    for status in ("SUCCEEDED", "FAILED", "STOPPED", "RUNNING", "PENDING"):
        if f"' {status.lower()}" in out.stdout.lower() or f"status: {status}" in out.stdout:
            return status
    raise AssertionError(f"no status in `ray job status` output:\n{out.stdout}\n{out.stderr}")


def _submit_conversion(env, address, job_id, config, input_uri, output_uri):
    """The README's `ray job submit` line, word for word, with its placeholders filled in."""
    return _ray(
        env, "job", "submit", "--address", address, "--submission-id", job_id,
        "--runtime-env", "ray_jobs/runtime_env.yaml", "--working-dir", ".", "--",
        "python", "ray_jobs/convert_corpus.py", "--config", config,
        "--input", input_uri, "--output", output_uri,
    )  # fmt: skip


def test_token_auth_is_enforced(ray_head):
    address, env = ray_head
    wrong = {**env, "RAY_AUTH_TOKEN_PATH": "", "RAY_AUTH_TOKEN": "0" * 64}
    denied = _ray(wrong, "job", "list", "--address", address, timeout=60)
    assert denied.returncode != 0
    allowed = _ray(env, "job", "list", "--address", address, timeout=60)
    assert allowed.returncode == 0, allowed.stderr


def test_submit_conversion_as_in_the_readme(ray_head, s3_bucket, s3fs_client, tmp_path):
    address, env = ray_head
    docs = sample_documents(limit=24)
    local_corpus = tmp_path / "docs.jsonl"
    local_corpus.write_bytes(jsonl_bytes(docs))
    s3fs_client.put(str(local_corpus), f"{s3_bucket}/corpus/docs.jsonl")
    input_uri, output_uri = f"s3://{s3_bucket}/corpus/", f"s3://{s3_bucket}/tagged/"

    job_id = f"condlabel-convert-{secrets.token_hex(4)}"
    submitted = _submit_conversion(env, address, job_id, CONFIG, input_uri, output_uri)
    logs = _ray(env, "job", "logs", "--address", address, job_id, timeout=60).stdout
    assert submitted.returncode == 0, f"{submitted.stdout}\n{submitted.stderr}\n{logs}"
    assert _job_status(env, address, job_id) == "SUCCEEDED"
    # Secrets stay out of the job's logs even though the driver had them in its environment.
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in logs

    # What the driver and workers wrote, read back from the S3 server process.
    cfg = load_convert_config(CONFIG)
    expected_rows = 0
    for item in read_and_chunk(str(local_corpus), cfg, "expected"):
        if not isinstance(item, FileStats):
            expected_rows += item.num_rows
    table = output_rows(f"{s3_bucket}/tagged", s3fs_client)
    assert table.schema.names == OUTPUT_SCHEMA.names
    assert table.schema.equals(OUTPUT_SCHEMA, check_metadata=False)
    assert table.num_rows == expected_rows
    assert set(table.column("doc_id").to_pylist()) == {d["id"] for d in docs}
    assert set(table.column("labeler").to_pylist()) == {labeler_fingerprint(cfg.labeler)}
    assert all(table.column("parse_ok").to_pylist())
    keys = row_keys(table)
    assert len(keys) == len(set(keys)), "a chunk was written twice"


def test_bad_config_fails_and_says_why_in_the_job_logs(ray_head, tmp_path):
    address, env = ray_head
    bad = tmp_path / "bad.yaml"  # the head is on this machine, so an absolute path reaches it
    bad.write_text("chunking:\n  max_words: 0\nlabeler:\n  backend: keyphrase\n  tmperature: 0.5\n")
    job_id = f"condlabel-bad-{secrets.token_hex(4)}"
    submitted = _submit_conversion(
        env, address, job_id, str(bad), "s3://nowhere/in/", "s3://nowhere/out/"
    )
    assert submitted.returncode != 0
    assert _job_status(env, address, job_id) == "FAILED"
    logs = _ray(env, "job", "logs", "--address", address, job_id, timeout=60).stdout
    assert "labeler.tmperature: unknown key" in logs
    assert "chunking.max_words" in logs
    assert "invalid configuration (2 problem(s))" in logs


def _walkthrough() -> list[str]:
    """The README's local cluster walkthrough: its one bash block, as commands (joined lines)."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Running on a cluster") :]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("  #")[0].strip() for line in block.replace("\\\n", " ").splitlines()]


def test_the_readme_cluster_walkthrough_as_written(ray_head, tmp_path):
    """Each command of the walkthrough, word for word, against the test's head: `pip install`,
    `ray start` and `ray stop` are what the fixture does on its own ports (never `ray stop`
    here: it stops every Ray on the machine); the head's address and /tmp paths are swapped."""
    address, env = ray_head
    commands = _walkthrough()
    assert commands[0] == "pip install -e '.[cluster]'"
    assert commands[1].startswith("ray start --head") and commands[-1].startswith("ray stop")
    assert commands[2] == "export RAY_AUTH_MODE=token" and env["RAY_AUTH_MODE"] == "token"
    outputs = []
    for command in commands[3:-1]:
        command = command.replace("http://127.0.0.1:8265", address)
        command = command.replace("/tmp/condlabel-walk", str(tmp_path))
        done = subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        outputs.append(done.stdout)
    documents = int(outputs[0].split()[0])
    rows = output_rows(tmp_path / "tagged", columns=["doc_id"])
    assert len(set(rows.column("doc_id").to_pylist())) == documents
    assert f"documents {documents:,}" in outputs[-1]
