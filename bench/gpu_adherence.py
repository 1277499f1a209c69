"""The `adherence` check of bench/gpu_check.py (reported, not gated): the conditioning recipe
of bench/tag_adherence.py driven in process, without Ray or S3 — control tokens from VADER,
`documents` packing, a share of untagged examples, guidance at generation — on the largest
GPT-2 that trains in about three minutes on the device (a small one on the CPU). Misalignment
of `<|pos|>` (share of its generations VADER calls negative) and `<|neg|>` (called positive),
plain and guided, each against the unconditioned baseline's share."""

from __future__ import annotations

import random
import time
from pathlib import Path

from gpu_checks import GPT2, _on_gpu, _packed_batches, result, run_steps, skipped
from lm_fixtures import sentiment_sentences

TOKENS = {"<|pos|>": 1, "<|neg|>": -1}
UNTAGGED = 0.1  # examples trained without a prefix: the branch guidance pushes away from
THRESHOLD = 0.05  # VADER's compound score: above is positive, below minus it negative


def run_adherence(models: Path, device: str) -> dict:
    try:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
    except ImportError as exc:
        return skipped(f"vaderSentiment is not installed ({exc}); pip install vaderSentiment")
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    from condlabel.train.control_tokens import add_control_tokens

    vader = SentimentIntensityAnalyzer()
    tok = AutoTokenizer.from_pretrained(models / GPT2)
    gpu = _on_gpu(device)
    sizes = (
        {"n_embd": 256, "n_layer": 4, "n_head": 4}
        if gpu
        else {"n_embd": 64, "n_layer": 2, "n_head": 2}
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(vocab_size=len(tok), n_positions=128, eos_token_id=tok.eos_token_id, **sizes)
    )
    add_control_tokens(tok, model, list(TOKENS))
    model.to(device)
    texts = sentiment_sentences(4000, seed=1)
    rng = random.Random(0)
    prefixes = [_prefix(vader, t) if rng.random() >= UNTAGGED else "" for t in texts]
    batches = _packed_batches(tok, device, 64, 16, prefixes, [f" {t}" for t in texts])
    started = time.perf_counter()
    history = run_steps(model, batches, device, steps=1500 if gpu else 300, lr=1e-3)
    train_s = time.perf_counter() - started
    model.eval()
    figures = _misalignment(model, tok, vader, device)
    return result(
        True,
        "reported, not gated",
        model=sizes,
        train_seconds=train_s,
        loss_first=history[0]["loss"],
        loss_last=history[-1]["loss"],
        **figures,
    )


def _prefix(vader, text: str) -> str:
    score = vader.polarity_scores(text)["compound"]
    return "<|pos|>" if score >= THRESHOLD else "<|neg|>" if score <= -THRESHOLD else ""


def _misalignment(model, tok, vader, device: str) -> dict:
    from condlabel.config import GenerationSettings
    from condlabel.train.evaluate import generate

    def polarity(prefix: str, scale: float) -> list[int]:
        settings = GenerationSettings(
            do_sample=True, max_new_tokens=16, num_samples=64, batch_size=64, guidance_scale=scale
        )
        out = generate(model, tok, prefix, [" The"], settings, device)
        scores = [vader.polarity_scores(f"The{text}")["compound"] for _, text in out]
        return [1 if s >= THRESHOLD else -1 if s <= -THRESHOLD else 0 for s in scores]

    baseline = polarity("", 1.0)
    figures = {}
    for token, sign in TOKENS.items():
        base = sum(p == -sign for p in baseline) / len(baseline)
        for mode, scale in (("plain", 1.0), ("guided", 2.0)):
            wrong = sum(p == -sign for p in polarity(token, scale)) / len(baseline)
            figures[f"{token}_{mode}"] = {
                "misalignment": wrong,
                "baseline": base,
                "ratio": wrong / base if base else None,
            }
    return figures
