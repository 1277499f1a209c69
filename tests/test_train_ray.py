"""Ray Train end to end: 2 gloo workers finetune a tiny GPT-2 on tagged parquet read from the S3
server process; checkpoints land in S3; a rerun resumes; the export loads and generates."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from lm_fixtures import sentiment_sentences, tagged_table

from condlabel.config import load_train_config
from condlabel.readback import read_tagged
from condlabel.train.loop import plan_training, read_training_rows, run_training

pytestmark = [pytest.mark.slow, pytest.mark.s3]


def _put_tagged(s3fs_client, bucket: str, rows: int) -> str:
    table = tagged_table(sentiment_sentences(rows, seed=1))
    prefix = f"{bucket}/tagged"
    for i, part in enumerate([table.slice(0, rows // 2), table.slice(rows // 2)]):
        sink = io.BytesIO()
        pq.write_table(part, sink)
        s3fs_client.pipe_file(f"{prefix}/part-{i}.parquet", sink.getvalue())
    # A superseded version of some documents (an older run, other text): never trained on.
    old = tagged_table([f"Old draft {i}." for i in range(20)], run_id="older-run")
    old = old.set_column(
        old.schema.get_field_index("doc_hash"),
        "doc_hash",
        pa.array([f"old-{i}" for i in range(20)]),
    )
    sink = io.BytesIO()
    pq.write_table(old, sink)
    s3fs_client.pipe_file(f"{prefix}/part-old.parquet", sink.getvalue())
    # Bookkeeping beside the data must not be read as training rows.
    s3fs_client.pipe_file(f"{prefix}/_manifest/run.json", json.dumps({"run": 1}).encode())
    sink = io.BytesIO()
    pq.write_table(table.select(["doc_id"]), sink)
    s3fs_client.pipe_file(f"{prefix}/_rejects/run/x.parquet", sink.getvalue())
    return f"s3://{prefix}"


def _overrides(data_uri: str, bucket: str) -> list[str]:
    return [
        f"data.paths=[{data_uri}]",
        f"model.path=s3://{bucket}/base",
        "optimization.seq_len=64",
        "optimization.micro_batch_size=4",
        "optimization.learning_rate=0.003",
        "optimization.warmup_steps=2",
        "optimization.max_steps=30",
        "optimization.log_every_steps=5",
        "optimization.loss_on=text",
        "data.cooldown_fraction=0.1",  # the last 3 of 30 steps (4 of 40) without prefixes
        f"checkpoint.storage_path=s3://{bucket}/runs",
        "checkpoint.name=tiny",
        "checkpoint.every_steps=10",
        "checkpoint.num_to_keep=2",
        "compute.num_workers=2",
        "compute.cpus_per_worker=0.5",
    ]


def test_train_two_workers_checkpoints_resume_export(
    ray_local, s3_bucket, s3fs_client, tiny_gpt2_dir, tmp_path, monkeypatch
):
    monkeypatch.setenv("CONDLABEL_CACHE", str(tmp_path / "cache"))
    data_uri = _put_tagged(s3fs_client, s3_bucket, rows=240)
    s3fs_client.put(str(tiny_gpt2_dir) + "/", f"{s3_bucket}/base/", recursive=True)
    overrides = _overrides(data_uri, s3_bucket)
    cfg = load_train_config(overrides=overrides)
    rows = read_training_rows(plan_training(cfg), cfg.storage).take_all()
    latest = read_tagged(data_uri).column("text").to_pylist()
    assert sorted(r["text"] for r in rows) == sorted(latest) and len(latest) == 240
    first = run_training(cfg)
    assert (first.start_step, first.final_step) == (0, 30)
    losses = [m["loss"] for m in first.history]
    assert [m["step"] for m in first.history] == [5, 10, 15, 20, 25, 30]
    assert losses[-1] < 0.6 * losses[0], losses  # it learns
    assert all(m["tokens_per_s"] > 0 for m in first.history)
    assert first.history[-1]["tokens_seen"] == 30 * 2 * 4 * 64  # steps x workers x micro x seq
    _check_checkpoints(s3fs_client, s3_bucket)

    # Same run name, more steps: Ray Train hands the latest checkpoint back and the count goes on.
    second = run_training(load_train_config(overrides=[*overrides, "optimization.max_steps=40"]))
    assert (second.start_step, second.final_step) == (30, 40)
    assert [m["step"] for m in second.history] == [35, 40]
    assert second.history[-1]["tokens_seen"] == 40 * 2 * 4 * 64
    assert second.history[-1]["loss"] < losses[0] * 0.6
    assert second.export_uri == f"s3://{s3_bucket}/runs/tiny/final"
    _check_export(second.export_uri, s3_bucket, tiny_gpt2_dir)
    _check_evaluation(second.export_uri, s3_bucket, s3fs_client)


def _check_checkpoints(s3fs_client, bucket: str) -> None:
    s3fs_client.invalidate_cache()
    checkpoints = sorted(
        p.rsplit("/", 1)[-1] for p in s3fs_client.ls(f"{bucket}/runs/tiny") if "checkpoint-" in p
    )
    assert checkpoints == ["checkpoint-00000020", "checkpoint-00000030"]  # num_to_keep=2
    files = {
        p.rsplit("/", 1)[-1] for p in s3fs_client.ls(f"{bucket}/runs/tiny/checkpoint-00000030")
    }
    assert {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "trainer_state.json",
        "optimizer.pt",
    } <= files


def _check_export(export_uri: str, bucket: str, base_dir) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from condlabel.models import fetch_model

    final = fetch_model(export_uri)
    tok = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final, use_safetensors=True).eval()
    assert "<|pos|>" in tok.get_vocab()
    ids = tok("<|pos|>Synopsis:", return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tok.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 8
    # The export is the last checkpoint's model, and it fits the training text far better than
    # the base model it started from.
    last = fetch_model(f"s3://{bucket}/runs/tiny/checkpoint-00000040")
    ckpt_model = AutoModelForCausalLM.from_pretrained(last, use_safetensors=True).eval()
    text = tok(sentiment_sentences(4, seed=1)[0], return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(base_dir, use_safetensors=True).eval()
    with torch.no_grad():
        assert torch.allclose(model(text).logits, ckpt_model(text).logits, atol=1e-5)
        trained_loss = model(text, labels=text).loss.item()
        base_loss = base(text, labels=text).loss.item()
    assert trained_loss < 0.5 * base_loss, (trained_loss, base_loss)


def _check_evaluation(export_uri: str, bucket: str, s3fs_client) -> None:
    """The evaluation reads the exported model straight from S3 and writes its report there."""
    from condlabel.config import load_eval_config
    from condlabel.train.evaluate import run_evaluation

    report = run_evaluation(
        load_eval_config(
            overrides=[
                f"model={export_uri}",
                "generation.num_samples=4",
                "generation.max_new_tokens=8",
                f"output=s3://{bucket}/evals/tiny.json",
            ]
        )
    )
    assert [r.n for r in report.results] == [4, 4]
    saved = json.loads(s3fs_client.cat_file(f"{bucket}/evals/tiny.json"))
    assert [r["misaligned"] for r in saved["results"]] == [r.misaligned for r in report.results]
