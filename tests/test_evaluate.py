"""Tag-adherence evaluation: the misalignment math by hand, and end to end with VADER on a tiny
GPT-2 trained (in-process, with the training module's own pieces) on VADER-tagged sentences."""

from __future__ import annotations

import json
import random

import pytest
from lm_fixtures import sentiment_sentences, tagged_table

from condlabel.classifiers import VaderClassifier
from condlabel.config import (
    DEFAULT_OPPOSITES,
    ConditionalConfig,
    ConfigError,
    TrainConfig,
    VaderClassifierConfig,
    build_config,
    load_eval_config,
)
from condlabel.train.evaluate import GenerationLabels, contradicts, misalignment

POS, NEG, TOX, NONTOX = "<|pos|>", "<|neg|>", "<|toxic|>", "<|nontoxic|>"


def test_misalignment_hand_computed():
    cond = ConditionalConfig(control_tokens=[POS, NONTOX])
    labels = [
        GenerationLabels([POS, NONTOX]),  # aligned
        GenerationLabels([NEG, NONTOX]),  # sentiment contradicted
        GenerationLabels([POS, TOX]),  # toxicity contradicted
        GenerationLabels([]),  # neutral, no toxicity verdict: nothing contradicted
        GenerationLabels([NEG, TOX]),  # both contradicted: still one misaligned generation
    ]
    assert [contradicts(cond, lab, DEFAULT_OPPOSITES) for lab in labels] == [
        False,
        True,
        True,
        False,
        True,
    ]
    assert misalignment(cond, labels, DEFAULT_OPPOSITES) == (3, 3 / 5)
    # A token without an opposite contradicts nothing.
    assert misalignment(ConditionalConfig(control_tokens=["<|x|>"]), labels, DEFAULT_OPPOSITES) == (
        0,
        0.0,
    )
    assert misalignment(cond, [], DEFAULT_OPPOSITES) == (0, None)


def test_tag_misalignment_hand_computed():
    cond = ConditionalConfig(tags=["Machine Learning", "chatbots", "python"])
    labels = [
        GenerationLabels(tags=["machine  learning", "cats"]),  # 1 shared (case/space-insensitive)
        GenerationLabels(tags=["chatbots", "python"]),  # 2 shared
        GenerationLabels(tags=["gardening"]),  # none
        GenerationLabels(tags=[]),  # none
    ]
    assert misalignment(cond, labels, {}, min_tag_overlap=1) == (2, 0.5)
    assert misalignment(cond, labels, {}, min_tag_overlap=2) == (3, 0.75)
    # Overlap asked beyond the conditional's own tags means "all of them".
    assert misalignment(ConditionalConfig(tags=["python"]), labels, {}, min_tag_overlap=3) == (
        3,
        0.75,
    )


def test_eval_config_checks_judges():
    with pytest.raises(ConfigError, match="tag conditionals need a labeler"):
        load_eval_config(overrides=["conditionals=[{tags: [a]}]"])
    with pytest.raises(ConfigError, match="at least one classifier"):
        load_eval_config(overrides=["classifiers=[]"])


def train_sentiment_lm(base_dir, out_dir, steps: int):
    """A tiny GPT-2 taught `<|pos|>` / `<|neg|>` on VADER-tagged sentences, with the training
    module's own pieces (examples, packing, optimizer, schedule, export) in a plain loop."""
    import torch

    from condlabel.train.checkpoint import export_model, load_for_training
    from condlabel.train.data import build_examples, pack_examples, tokenize_examples
    from condlabel.train.optim import make_optimizer

    cfg = build_config(
        TrainConfig,
        {
            "model": {"path": str(base_dir)},
            "data": {"prefix": "control_tokens", "untagged_fraction": 0.1},
            "optimization": {
                "learning_rate": 3e-3,
                "max_steps": steps,
                "warmup_steps": 5,
                "seq_len": 32,
            },
        },
    )
    torch.manual_seed(0)
    loaded = load_for_training(cfg)
    rows = tagged_table(sentiment_sentences(400, seed=3)).to_pylist()
    examples = build_examples(rows, cfg.data, random.Random(0))
    blocks = pack_examples(
        tokenize_examples(loaded.tokenizer, examples), 32, loaded.tokenizer.eos_token_id
    )
    optimizer, scheduler = make_optimizer(loaded.model, cfg.optimization)
    loaded.model.train()
    rng = random.Random(0)
    for _ in range(steps):
        batch = rng.sample(blocks, 16)
        ids = torch.tensor([b for b, _ in batch])
        loaded.model(input_ids=ids, labels=torch.tensor([b for _, b in batch])).loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    export_model(out_dir, loaded.model, loaded.tokenizer)
    return out_dir


@pytest.fixture(scope="module")
def sentiment_lm_dir(tiny_gpt2_dir, tmp_path_factory):
    """Briefly trained: fluent template sentences. Adherence is not asserted here (120 steps are
    too few): tests/test_adherence.py asserts it after 300 steps of the real chain, and
    tests/test_conditioning.py checks that the token is learned at all."""
    return train_sentiment_lm(tiny_gpt2_dir, tmp_path_factory.mktemp("sentiment-lm"), steps=120)


def _eval_config(tmp_path, model_dir, num_samples: int) -> str:
    config = tmp_path / "eval.yaml"
    config.write_text(
        f"model: {model_dir}\n"
        "prefix: control_tokens\n"
        "conditionals:\n"
        "  - control_tokens: ['<|pos|>']\n"
        "  - {name: negative, control_tokens: ['<|neg|>']}\n"
        "prompts: ['', 'The']\n"
        f"generation: {{num_samples: {num_samples}, max_new_tokens: 14, batch_size: 16, seed: 1}}\n"
        "classifiers: [{backend: vader}]\n"
        f"output: {tmp_path / 'out'}\n"
    )
    return str(config)


def test_evaluation_end_to_end_with_vader(sentiment_lm_dir, tmp_path, capsys):
    from condlabel.cli import main

    config = _eval_config(tmp_path, sentiment_lm_dir, num_samples=12)
    assert main(["eval", "--config", config]) == 0
    printed = capsys.readouterr().out
    assert "conditional" in printed and "<|pos|>" in printed and "negative" in printed

    report = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert report["config"]["model"] == str(sentiment_lm_dir)
    assert [r["name"] for r in report["results"]] == ["<|pos|>", "negative"]
    vader = VaderClassifier(VaderClassifierConfig())
    baseline = report["baseline_generations"]
    assert len(baseline) == 24
    for result, cond in zip(report["results"], [POS, NEG], strict=True):
        gens = result["generations"]
        assert result["n"] == len(gens) == 24
        assert {g["prompt"] for g in gens} == {"", "The"}
        # Recompute the judgement independently: VADER again, then "the opposite token".
        opposite = DEFAULT_OPPOSITES[cond]
        bad = [opposite in r.control_tokens for r in vader.classify([g["text"] for g in gens])]
        assert [g["misaligned"] for g in gens] == bad
        assert result["misaligned"] == sum(bad)
        assert result["misalignment"] == pytest.approx(sum(bad) / 24)
        base_bad = sum(
            opposite in r.control_tokens for r in vader.classify([g["text"] for g in baseline])
        )
        assert result["baseline_misalignment"] == pytest.approx(base_bad / 24)
    assert all(
        g["scores"]["vader.compound"]
        == pytest.approx(vader.classify([g["text"]])[0].scores["compound"])
        for g in baseline[:3]
    )
