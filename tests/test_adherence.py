"""Conditioning works, end to end on a small run: sentences -> `condlabel convert` (VADER control
tokens, binary) -> `condlabel train` (Ray Train) -> `condlabel eval` (VADER judge). Under each
token the share of generations VADER calls the opposite sentiment must fall well below the
unconditioned baseline's: a model that ignored its token would score the baseline (ratio ~1).

The corpus is the tiny GPT-2's own sentiment sentences ("The X was A and the Y was B.", A and B
of one polarity), so a few hundred steps suffice; the benchmark (`bench/tag_adherence.py`) does
the same on real text."""

from __future__ import annotations

import json
from math import comb

import pytest
from helpers import write_jsonl
from lm_fixtures import sentiment_sentences
from pipeline_helpers import convert_args

from condlabel.cli import main
from condlabel.config import load_train_config
from condlabel.train.loop import run_training

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_local")]

STEPS = 300
SAMPLES = 160


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
        ]
    )
    return run_training(cfg).export_uri


def _evaluate(tmp_path, model: str, seed: int) -> dict[str, tuple[int, int, int]]:
    """{token: (misaligned, baseline misaligned, samples)}."""
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
    return {r["prefix"]: (r["misaligned"], r["baseline_misaligned"], r["n"]) for r in results}


def fewer_by_chance(bad: int, baseline_bad: int, n: int) -> float:
    """One-sided Fisher exact test: the chance that, were the token ignored (both sets of `n`
    generations misaligned at one rate), the conditioned set would hold `bad` or fewer of the
    `bad + baseline_bad` misaligned generations."""
    total = bad + baseline_bad
    return sum(comb(n, k) * comb(n, total - k) for k in range(bad + 1)) / comb(2 * n, total)


def test_fewer_by_chance_is_the_hypergeometric_tail():
    assert fewer_by_chance(0, 1, 10) == 0.5  # one misaligned generation: either set, even odds
    assert fewer_by_chance(5, 5, 50) > 0.5  # equal counts are no evidence
    assert fewer_by_chance(0, 18, 96) < 1e-5


@pytest.mark.parametrize("seed", [0, 1])
def test_a_model_trained_on_condlabel_shards_follows_its_sentiment_tokens(
    tmp_path, tiny_gpt2_dir, monkeypatch, seed
):
    monkeypatch.setenv("CONDLABEL_CACHE", str(tmp_path / "cache"))
    data = _convert(tmp_path)
    model = _train(tmp_path, data, tiny_gpt2_dir, seed, "documents")
    scores = _evaluate(tmp_path, model, seed)
    for token in ("<|pos|>", "<|neg|>"):
        bad, baseline_bad, n = scores[token]
        assert bad <= 0.5 * baseline_bad, (token, scores)
        # A clear margin, whatever the unconditioned model's own lean (it has been 19-81 % one
        # polarity): the fall must be one that chance would give less than once in a thousand.
        assert fewer_by_chance(bad, baseline_bad, n) < 1e-3, (token, scores)
