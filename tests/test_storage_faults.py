"""Storage as it fails and as it is configured, through the command line in subprocesses with no
AWS_* variables: an S3 server process stopped for real (exit 3 within seconds, naming the
endpoint; a failing lease release does not hide the first error), S3 settings given only in
the config file or by `--set` (explicit keys are a pair), and input names with glob characters
that exist as written."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import _wait_for_port, free_port
from helpers import make_docs, write_jsonl
from pipeline_helpers import jsonl_bytes

from condlabel.config import StorageConfig
from condlabel.runs.runstate import Lease
from condlabel.storage import StorageError, expand_inputs

CONDLABEL = [sys.executable, "-m", "condlabel.cli"]
KEYS = {"access_key_id": "testing", "secret_access_key": "testing-secret-never-logged"}


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any AWS_* variable: S3 settings come from the config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return {**env, **extra}


def storage_yaml(path: Path, endpoint: str, keys: dict[str, str] | None = KEYS) -> Path:
    lines = ["storage:", f"  endpoint_url: {endpoint}"]
    lines += [f"  {k}: {v}" for k, v in (keys or {}).items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    started = time.monotonic()
    done = subprocess.run(
        [*CONDLABEL, *args],
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    last = (done.stderr.strip().splitlines() or [""])[-1]
    return done.returncode, last, time.monotonic() - started, done


@pytest.fixture()
def private_s3(tmp_path):
    """An S3 server process of this test's own, to stop for real."""
    exe = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    port = free_port()
    with open(tmp_path / "moto.log", "wb") as log:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    _wait_for_port(port, proc)
    yield f"http://127.0.0.1:{port}", proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def s3_storage(endpoint: str) -> StorageConfig:
    return StorageConfig(endpoint_url=endpoint, **KEYS)


def make_bucket(endpoint: str, name: str, files: dict[str, bytes]) -> None:
    from condlabel.storage import resolve

    fs, _ = resolve(f"s3://{name}", s3_storage(endpoint))
    if not fs.exists(name):
        fs.mkdir(name)
    for key, data in files.items():
        fs.pipe_file(f"{name}/{key}", data)


# --------------------------------------------------------------------------- storage down


def test_endpoint_down_at_start_exits_3_within_seconds_naming_it(private_s3, tmp_path):
    endpoint, server = private_s3
    make_bucket(endpoint, "down", {"in/a.jsonl": jsonl_bytes(make_docs(2, "a"))})
    config = storage_yaml(tmp_path / "storage.yaml", endpoint)
    stop(server)
    for args in (
        ["status", "s3://down/out", "--config", str(config)],
        [
            "convert",
            "--input",
            "s3://down/in",
            "--output",
            "s3://down/out",
            "--config",
            str(config),
        ],
    ):
        code, last, seconds, done = run_cli(*args, timeout=120)
        assert code == 3, done.stderr[-2000:]
        assert f"S3 endpoint {endpoint} unreachable: gave up after" in last
        assert "storage.endpoint_url" in last
        assert seconds < 60  # was 92 s and exit 1 (most of it now is interpreter start-up)


def test_connect_retries_bound_how_long_a_request_tries(private_s3, monkeypatch):
    endpoint, server = private_s3
    make_bucket(endpoint, "bounded", {})
    stop(server)
    from condlabel.storage import resolve

    monkeypatch.setattr("condlabel.s3.CONNECT_RETRIES", 0)
    fs, path = resolve("s3://bounded/x", s3_storage(endpoint))
    started = time.monotonic()
    with pytest.raises(StorageError, match=r"gave up after \d+\.\d s and 0 retries"):
        fs.cat_file(path)
    assert time.monotonic() - started < 5


def test_a_failing_lease_release_does_not_hide_the_first_error(private_s3, caplog):
    endpoint, server = private_s3
    make_bucket(endpoint, "lease", {})
    lease = Lease("s3://lease/out", "run-1", s3_storage(endpoint), ttl_s=60)
    lease.acquire()
    stop(server)
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="condlabel"),
        pytest.raises(ValueError, match="the run's own error"),
    ):
        try:
            raise ValueError("the run's own error")
        finally:
            lease.release()
    assert time.monotonic() - started < 30
    assert "could not release lease s3://lease/out/_lease.json" in caplog.text
    assert "unreachable" in caplog.text


def test_a_lease_that_cannot_be_renewed_for_storage_down_is_a_storage_error(private_s3):
    endpoint, server = private_s3
    make_bucket(endpoint, "renew", {})
    lease = Lease("s3://renew/out", "run-1", s3_storage(endpoint), ttl_s=1)
    lease.acquire()
    stop(server)
    time.sleep(1.2)
    with pytest.raises(StorageError, match=r"expired and could not be renewed.*unreachable"):
        lease.ensure_held()
    lease.release()


def test_storage_killed_mid_run_exits_3_with_the_storage_error(private_s3, tmp_path):
    endpoint, server = private_s3
    docs = make_docs(400, "mid")
    make_bucket(endpoint, "mid", {"in/a.jsonl": jsonl_bytes(docs)})
    config = storage_yaml(tmp_path / "storage.yaml", endpoint)
    run = subprocess.Popen(
        [
            *CONDLABEL,
            "convert",
            "--input",
            "s3://mid/in",
            "--output",
            "s3://mid/out",
            "--config",
            str(config),
            "--set",
            "output.rows_per_file=4",
            "--set",
            "compute.batch_size=4",
        ],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    from condlabel.storage import resolve

    fs, _ = resolve("s3://mid", s3_storage(endpoint))
    deadline = time.monotonic() + 240
    while not any(p.endswith(".parquet") for p in fs.find("mid/out")):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()[1][-3000:]
        time.sleep(0.5)
    stop(server)
    killed = time.monotonic()
    _, err = run.communicate(timeout=240)
    last = err.strip().splitlines()[-1]
    assert run.returncode == 3, err[-3000:]
    assert f"S3 endpoint {endpoint} unreachable" in last
    assert time.monotonic() - killed < 120  # was 206 s and exit 1


# --------------------------------------------------------------------------- configured only in the config


def test_status_with_keys_from_set_or_the_config_file_and_no_aws_env(
    s3_server, s3_bucket, tmp_path
):
    out = f"s3://{s3_bucket}/out"
    make_bucket(s3_server, s3_bucket, {"out/_manifest/r1.json": b'{"run_id": "r1"}'})
    in_file = storage_yaml(tmp_path / "keys.yaml", s3_server)
    endpoint_only = storage_yaml(tmp_path / "endpoint.yaml", s3_server, keys=None)
    key_sets = [f"storage.{k}={v}" for k, v in KEYS.items()]
    partial_env = clean_env(AWS_ACCESS_KEY_ID="only-half-of-a-pair")
    for args, env in (
        (["--config", str(in_file)], None),
        (["--config", str(endpoint_only), "--set", key_sets[0], "--set", key_sets[1]], None),
        (["--config", str(in_file)], partial_env),  # explicit keys ignore the env's half pair
    ):
        code, last, _, done = run_cli("status", out, "--json", *args, env=env)
        assert code == 0, done.stderr[-2000:]
        assert '"run_id": "r1"' in done.stdout

    code, last, _, _ = run_cli("status", out, "--config", str(endpoint_only), "--set", key_sets[0])
    assert code == 2
    assert "storage.secret_access_key: required with storage.access_key_id" in last


def test_every_command_reaches_s3_with_storage_only_in_the_config(
    s3_server, s3_bucket, tmp_path, tiny_t5, tiny_t5_adapter
):
    make_bucket(s3_server, s3_bucket, {"in/a.jsonl": jsonl_bytes(make_docs(3, "cfg"))})
    config = str(storage_yaml(tmp_path / "storage.yaml", s3_server))
    out = f"s3://{s3_bucket}/out"
    commands = [
        ["convert", "--input", f"s3://{s3_bucket}/in", "--output", out, "--dry-run"],
        ["convert", "--input", f"s3://{s3_bucket}/in", "--output", out],
        ["inspect", out, "--json"],
        ["status", out, "--json"],
        ["merge", "--base", str(tiny_t5), "--adapter", str(tiny_t5_adapter)]
        + ["--output", f"s3://{s3_bucket}/merged"],
    ]
    for args in commands:
        code, _, _, done = run_cli(*args, "--config", config)
        assert code == 0, (args, done.stderr[-3000:])
    from condlabel.storage import resolve

    fs, _ = resolve(out, s3_storage(s3_server))
    assert any(p.endswith(".parquet") for p in fs.find(f"{s3_bucket}/out"))
    assert fs.exists(f"{s3_bucket}/merged/model.safetensors")


# --------------------------------------------------------------------------- glob characters


def _bracket_files(write) -> None:
    for name in ("brack[1].jsonl", "brack1.jsonl", "other.jsonl"):
        write(name, jsonl_bytes(make_docs(1, name)))


def test_an_existing_name_with_glob_characters_is_taken_literally_on_disk(tmp_path):
    _bracket_files(lambda name, data: (tmp_path / name).write_bytes(data))
    [found] = expand_inputs([str(tmp_path / "brack[1].jsonl")])
    assert found.uri == str(tmp_path / "brack[1].jsonl")
    # A real glob still matches (the bracket as a character class).
    globbed = expand_inputs([str(tmp_path / "brack[0-9].jsonl")])
    assert [f.uri for f in globbed] == [str(tmp_path / "brack1.jsonl")]


def test_an_existing_key_with_glob_characters_is_taken_literally_on_s3(s3_server, s3_bucket):
    files: dict[str, bytes] = {}
    _bracket_files(lambda name, data: files.__setitem__(f"in/{name}", data))
    make_bucket(s3_server, s3_bucket, files)
    [found] = expand_inputs([f"s3://{s3_bucket}/in/brack[1].jsonl"])
    assert found.uri == f"s3://{s3_bucket}/in/brack[1].jsonl"
    globbed = expand_inputs([f"s3://{s3_bucket}/in/brack*.jsonl"])
    assert len(globbed) == 2


def test_convert_reads_an_input_named_with_brackets(tmp_path):
    src = write_jsonl(tmp_path / "brack[1].jsonl", make_docs(2, "b"))
    code, _, _, done = run_cli("convert", "--input", str(src), "--output", str(tmp_path / "o"))
    assert code == 0, done.stderr[-2000:]
    assert "glob" not in done.stderr
