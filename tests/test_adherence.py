"""Conditioning works, end to end on a small run: sentences -> `condlabel convert` (VADER control
tokens, binary) -> `condlabel train` (Ray Train) -> `condlabel eval` (VADER judge). Under each
token the share of generations VADER calls the opposite sentiment must fall well below the
unconditioned baseline's: a model that ignored its token would score the baseline (ratio ~1).

The corpus is the tiny GPT-2's own sentiment sentences ("The X was A and the Y was B.", A and B
of one polarity), so a few hundred steps suffice; the benchmark (`bench/tag_adherence.py`) does
the same on real text."""

from __future__ import annotations

import json

import pytest
from helpers import write_jsonl
from lm_fixtures import sentiment_sentences
from pipeline_helpers import convert_args

from condlabel.cli import main
from condlabel.config import load_train_config
from condlabel.train.loop import run_training

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

STEPS = 300
SAMPLES = 96


def _convert(tmp_path) -> str:
    docs = [{"id": str(i), "text": s} for i, s in enumerate(sentiment_sentences(1200, seed=3))]
    write_jsonl(tmp_path / "in" / "sentences.jsonl", docs)
    out = tmp_path / "tagged"
    args = convert_args(
        [tmp_path / "in"],
        out,
        "labeler.backend=none",
        "classifiers=[{backend: vader, vader: {mode: binary}}]",
        "compute.actors=1",
    )
    assert main(args) == 0
    return str(out)


def _train(tmp_path, data: str, base, seed: int, packing: str) -> str:
    cfg = load_train_config(
        overrides=[
            f"data.paths=[{data}]",
            "data.prefix=control_tokens",
            "data.untagged_fraction=0.1",
            f"data.seed={seed}",
            f"model.path={base}",
            "optimization.seq_len=64",
            "optimization.micro_batch_size=8",
            "optimization.learning_rate=0.003",
            "optimization.warmup_steps=15",
            f"optimization.max_steps={STEPS}",
            "optimization.log_every_steps=50",
            "optimization.loss_on=text",
            f"optimization.packing={packing}",
            f"optimization.seed={seed}",
            f"checkpoint.storage_path={tmp_path / 'runs'}",
            f"checkpoint.name=adherence-{seed}-{packing}",
            f"checkpoint.every_steps={STEPS}",
            "compute.num_workers=1",
            "compute.cpus_per_worker=1",
            "compute.torch_threads=1",
        ]
    )
    return run_training(cfg).export_uri


def _evaluate(tmp_path, model: str, seed: int) -> dict[str, tuple[float, float]]:
    """{token: (misalignment, baseline misalignment)}."""
    config = tmp_path / f"eval-{seed}.yaml"
    report = tmp_path / f"eval-{seed}.json"
    config.write_text(
        f"model: {model}\n"
        "prefix: control_tokens\n"
        "conditionals: [{control_tokens: ['<|pos|>']}, {control_tokens: ['<|neg|>']}]\n"
        "prompts: ['']\n"
        f"generation: {{num_samples: {SAMPLES}, max_new_tokens: 16, batch_size: 32, seed: {seed}}}\n"
        "classifiers: [{backend: vader}]\n"
        "device: cpu\n"
        f"output: {report}\n"
    )
    assert main(["eval", "--config", str(config)]) == 0
    results = json.loads(report.read_text())["results"]
    return {r["prefix"]: (r["misalignment"], r["baseline_misalignment"]) for r in results}


@pytest.mark.parametrize("seed", [0, 1])
def test_a_model_trained_on_condlabel_shards_follows_its_sentiment_tokens(
    tmp_path, tiny_gpt2_dir, monkeypatch, seed
):
    monkeypatch.setenv("CONDLABEL_CACHE", str(tmp_path / "cache"))
    data = _convert(tmp_path)
    model = _train(tmp_path, data, tiny_gpt2_dir, seed, "documents")
    scores = _evaluate(tmp_path, model, seed)
    for token in ("<|pos|>", "<|neg|>"):
        share, baseline = scores[token]
        # The baseline must have room to fall: half the corpus is each polarity.
        assert baseline >= 0.2, (token, scores)
        assert share <= 0.5 * baseline, (token, scores)
