"""`ray job submit` of the training entrypoint (`ray_jobs/train_conditional.py`) against a real
`ray start --head`, as the README shows it: tagged parquet and the base model in the S3 server
process, 2 Ray Train workers on the head, checkpoints and the export back in S3.

The head, its token auth and the `ray` CLI helpers are test_ray_job_submit's (one head per
module; stopped by process id, never `ray stop`).
"""

from __future__ import annotations

import io
import os
import secrets

import pyarrow.parquet as pq
import pytest
from lm_fixtures import sentiment_sentences, tagged_table
from test_ray_job_submit import _job_status, _ray, ray_head  # noqa: F401 (ray_head: a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.s3]

CONFIG = "ray_jobs/configs/train_tiny_cpu.yaml"


def _put_inputs(s3fs_client, bucket: str, base_dir) -> None:
    sink = io.BytesIO()
    pq.write_table(tagged_table(sentiment_sentences(160, seed=3)), sink)
    s3fs_client.pipe_file(f"{bucket}/tagged/part-0.parquet", sink.getvalue())
    s3fs_client.put(str(base_dir) + "/", f"{bucket}/base/", recursive=True)


def _submit_training(env, address: str, job_id: str, bucket: str):
    """The entrypoint's docstring line, with the tiny CPU config and S3 paths set on top."""
    settings = [
        f"data.paths=[s3://{bucket}/tagged]",
        f"model.path=s3://{bucket}/base",
        "optimization.seq_len=64",
        "optimization.max_steps=12",
        "optimization.warmup_steps=2",
        "optimization.log_every_steps=4",
        f"checkpoint.storage_path=s3://{bucket}/runs",
        "checkpoint.name=submitted",
        "checkpoint.every_steps=6",
        "data.shuffle_buffer_rows=64",
    ]
    return _ray(
        env, "job", "submit", "--address", address, "--submission-id", job_id,
        "--runtime-env", "ray_jobs/runtime_env.yaml", "--working-dir", ".", "--",
        "python", "ray_jobs/train_conditional.py", "--config", CONFIG,
        *[arg for pair in settings for arg in ("--set", pair)],
        timeout=900,
    )  # fmt: skip


def test_submit_training_as_in_the_entrypoint_doc(
    ray_head,  # noqa: F811
    s3_bucket,
    s3fs_client,
    tiny_gpt2_dir,
):
    address, env = ray_head
    _put_inputs(s3fs_client, s3_bucket, tiny_gpt2_dir)

    job_id = f"condlabel-train-{secrets.token_hex(4)}"
    submitted = _submit_training(env, address, job_id, s3_bucket)
    logs = _ray(env, "job", "logs", "--address", address, job_id, timeout=60).stdout
    assert submitted.returncode == 0, f"{submitted.stdout}\n{submitted.stderr}\n{logs}"
    assert _job_status(env, address, job_id) == "SUCCEEDED"
    assert os.environ["AWS_SECRET_ACCESS_KEY"] not in logs

    # Checkpoints every 6 of 12 steps and the export, written by the job's workers to S3.
    s3fs_client.invalidate_cache()
    run_dir = f"{s3_bucket}/runs/submitted"
    checkpoints = sorted(
        p.rsplit("/", 1)[-1] for p in s3fs_client.ls(run_dir) if "checkpoint-" in p
    )
    assert checkpoints == ["checkpoint-00000006", "checkpoint-00000012"]
    exported = {p.rsplit("/", 1)[-1] for p in s3fs_client.ls(f"{run_dir}/final")}
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= exported

    from transformers import AutoTokenizer

    from condlabel.models import fetch_model

    tokenizer = AutoTokenizer.from_pretrained(fetch_model(f"s3://{run_dir}/final"))
    assert {"<|pos|>", "<|neg|>"} <= set(tokenizer.get_vocab())
