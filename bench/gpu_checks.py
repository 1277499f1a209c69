"""The checks of bench/gpu_check.py, one function each: (models dir, device) -> result dict
({"passed", "skipped", "reason", ...figures}). `prepare` builds the models on the CPU.

The labeler is a tiny T5 *trained* for a few hundred steps to write `Synopsis: ... Tags: [...]`
for the chunks of a task it can learn (`labeled_chunks`), so its top logits are separated (a
random or briefly trained model's near-ties would make bf16-vs-fp32 comparisons meaningless);
the labeler checks run on held-out chunks of that task. The causal model is a tiny GPT-2
(tests/lm_fixtures.py). The simulated device of `oom_backoff` on the CPU is the tests' one
(tests/simulated_device.py): the check already takes its model builders from tests/, so one
copy of the double serves both.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from types import SimpleNamespace

from lm_fixtures import build_tiny_gpt2
from simulated_device import SimulatedDeviceHF, chunk_table
from tiny_models import build_student_t5, help_topics, sample_texts

from condlabel.config import HFLabelerConfig
from condlabel.labelers.hf import HFLabeler

LABELER, GPT2 = "labeler", "gpt2"
NEW_TOKENS = 24
PER_TOKEN_TOL = 0.02
"""Largest |Δ mean_logprob| (nats per generated token) between bf16 runs of one chunk: bf16
keeps 8 bits of mantissa, ~1e-2 relative on each logit."""


def _on_gpu(device: str) -> bool:
    return device.startswith("cuda")


def result(passed: bool, reason: str = "", **figures) -> dict:
    return {"passed": bool(passed), "skipped": False, "reason": reason, **figures}


def skipped(reason: str) -> dict:
    return {"passed": True, "skipped": True, "reason": reason}


# --------------------------------------------------------------------------- prepare

TOPICS = ["river", "bridge", "orchard", "glacier", "market", "harbor", "forest", "railway"]
PLACES = ["north", "south", "east", "west"]
RECIPE = "topic-place-v1"
"""Names the models `prepare` builds; a models directory built by another recipe is rebuilt."""


def labeled_chunks(n: int, min_words: int, max_words: int, seed: int) -> list[tuple[str, str]]:
    """`n` (chunk, label) pairs of the tiny labeler's task: help-text words with a topic word
    put in three times and a place once; the label names both. The label is a function of the
    text that a tiny model learns in a hundred steps, so after a few hundred its top logits are
    far apart (a random or briefly trained model's near-ties would make bf16 and fp32 pick
    different tokens for reasons that say nothing about the device)."""
    import random

    words = " ".join(help_topics()).split()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        topic, place = rng.choice(TOPICS), rng.choice(PLACES)
        length = rng.randint(min_words, max_words)
        start = rng.randrange(0, len(words) - length)
        chunk = words[start : start + length]
        for word in (topic, topic, topic, place):
            chunk.insert(rng.randrange(len(chunk) + 1), word)
        out.append((" ".join(chunk), f"Synopsis: {topic}, {place}. Tags: [{topic}, {place}]"))
    return out


def chunks(n: int, min_words: int, max_words: int, seed: int) -> list[str]:
    return [text for text, _ in labeled_chunks(n, min_words, max_words, seed)]


def prepare(out: Path, steps: int = 300) -> None:
    """The trained tiny labeler and the tiny GPT-2 under `out`, on the CPU (about 40 s of CPU
    time); kept when `out` already holds this recipe's models."""
    import json

    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    stamp = out / "prepared.json"
    recipe = {"recipe": RECIPE, "labeler_steps": steps}
    if stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return
    out.mkdir(parents=True, exist_ok=True)
    build_tiny_gpt2(out / GPT2)
    path = build_student_t5(out / LABELER, seed=0)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(path)
    data = labeled_chunks(steps * 16, min_words=20, max_words=100, seed=1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.manual_seed(0)
    model.train()
    for step in range(steps):
        batch = data[step * 16 : (step + 1) * 16]
        enc = tok(
            [t for t, _ in batch],
            return_tensors="pt",
            padding=True,
            truncation=True,
            max_length=256,
        )
        target = tok([label for _, label in batch], return_tensors="pt", padding=True)
        labels = target.input_ids.masked_fill(target.input_ids == tok.pad_token_id, -100)
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(path, safe_serialization=True)
    stamp.write_text(json.dumps(recipe))


def labeler_config(models: Path, device: str, dtype: str, **options) -> HFLabelerConfig:
    cfg = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "max_input_tokens": 256, **options}
    return HFLabelerConfig(model=str(models / LABELER), device=device, dtype=dtype, **cfg)


def labeler(models: Path, device: str, dtype: str, **options) -> HFLabeler:
    return HFLabeler(labeler_config(models, device, dtype, **options))


def peak_memory_mb(device: str) -> float:
    import resource

    import torch

    if _on_gpu(device):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compare(ours: list, theirs: list) -> dict:
    same = [a.raw_output == b.raw_output for a, b in zip(ours, theirs, strict=True)]
    jaccard = [
        len(set(a.tags) & set(b.tags)) / max(1, len(set(a.tags) | set(b.tags)))
        for a, b in zip(ours, theirs, strict=True)
    ]
    deltas = [
        abs(a.mean_logprob - b.mean_logprob)
        for a, b, s in zip(ours, theirs, same, strict=True)
        if s
    ]
    return {
        "identical_share": sum(same) / len(same),
        "tag_agreement": sum(jaccard) / len(jaccard),
        "mean_abs_delta_mean_logprob": sum(deltas) / len(deltas) if deltas else math.nan,
        "max_abs_delta_mean_logprob": max(deltas) if deltas else math.nan,
    }


# --------------------------------------------------------------------------- labelers


def labeler_bf16_vs_fp32(models: Path, device: str) -> dict:
    # 20 chunks on the CPU (19/20 is the 95%), where each run takes its time
    texts = chunks(32 if _on_gpu(device) else 20, min_words=20, max_words=150, seed=7)
    reference = labeler(models, "cpu", "float32").label(texts)
    half = labeler(models, device, "bfloat16")
    ours = half.label(texts)
    figures = _compare(ours, reference)
    figures["parse_rate_bf16"] = sum(r.parse_ok for r in ours) / len(ours)
    figures["parse_rate_fp32"] = sum(r.parse_ok for r in reference) / len(reference)
    rates = {}
    timed = texts if _on_gpu(device) else texts[:8]
    for size in (1, 8, 32):
        half.cfg = half.cfg.model_copy(update={"max_batch_size": size})
        started = time.perf_counter()
        half.label(timed)
        rates[str(size)] = len(timed) / (time.perf_counter() - started)
    figures.update(chunks_per_s=rates, peak_memory_mb=peak_memory_mb(device))
    ok = figures["identical_share"] >= 0.95 and figures["mean_abs_delta_mean_logprob"] <= 0.05
    return result(ok, "pass: >= 95% identical labels, mean |delta mean_logprob| <= 0.05", **figures)


def logprob_batch_invariance(models: Path, device: str) -> dict:
    texts = chunks(32, min_words=20, max_words=200, seed=9)
    half = labeler(models, device, "bfloat16", max_batch_size=32)
    alone = [half.label([t])[0] for t in texts[:8]]
    in_8 = half.label(texts[:8])
    in_32 = half.label(texts)[:8]
    by_8, by_32 = _compare(in_8, alone), _compare(in_32, alone)
    worst = max(by_8["max_abs_delta_mean_logprob"], by_32["max_abs_delta_mean_logprob"])
    same = min(by_8["identical_share"], by_32["identical_share"])
    ok = same >= 7 / 8 and worst <= PER_TOKEN_TOL
    reason = (
        f"tolerance: |delta mean_logprob| <= {PER_TOKEN_TOL} nats/token in bf16, >= 7/8 identical"
    )
    return result(ok, reason, batch_8=by_8, batch_32=by_32)


def oom_backoff(models: Path, device: str) -> dict:
    """On a GPU: memory capped just above the model, a batch of long chunks that cannot fit.
    On the CPU memory cannot be capped: the test double of tests/test_oom_backoff.py stands in,
    a device that raises CUDA's out-of-memory error above 4 rows."""
    import torch

    from condlabel.convert.stages import label_or_reject

    texts = chunks(48, min_words=300, max_words=400, seed=3)
    options = {"max_batch_size": 48, "max_batch_tokens": 10**7, "max_encoder_tokens": 10**7}
    if _on_gpu(device):
        model = labeler(models, device, "bfloat16", max_input_tokens=512, **options)
        total = torch.cuda.get_device_properties(torch.device(device)).total_memory
        budget = torch.cuda.memory_allocated() + 24 * 2**20  # the model and 24 MiB
        torch.cuda.set_per_process_memory_fraction(budget / total)
    else:
        cfg = labeler_config(models, device, "float32", **options)
        model = SimulatedDeviceHF(cfg, capacity=4)
    labeled, rejects = label_or_reject(model, chunk_table(texts, source="gpu-check"))
    accounted = labeled.num_rows + len(rejects) == len(texts)
    reasons = sorted({r.detail.split(": ", 1)[-1][:120] for r in rejects})
    backed_off = model.fits.size is not None
    ok = accounted and (backed_off or rejects) and all(r.reason == "labeler_error" for r in rejects)
    return result(
        ok,
        "" if backed_off else "no out-of-memory was provoked",
        simulated=not _on_gpu(device),
        labeled=labeled.num_rows,
        rejected=len(rejects),
        reject_reasons=reasons,
        batch_size_that_fitted=model.fits.size,
    )


# --------------------------------------------------------------------------- training side


def _gpt2(models: Path, device: str, dtype=None, attn: str = "sdpa"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(models / GPT2)
    model = AutoModelForCausalLM.from_pretrained(
        models / GPT2, dtype=dtype or torch.float32, attn_implementation=attn
    )
    return model.to(device).eval(), tok


def packing_isolation(models: Path, device: str) -> dict:
    import importlib.util

    import torch

    from condlabel.train.data import document_positions, pack_examples

    runs = [("sdpa", torch.float32, 1e-4), ("sdpa", torch.bfloat16, 5e-2)]
    if _on_gpu(device) and importlib.util.find_spec("flash_attn"):
        runs.append(("flash_attention_2", torch.bfloat16, 5e-2))
    figures, ok = {}, True
    for attn, dtype, tol in runs:
        model, tok = _gpt2(models, device, dtype, attn)
        eos = tok.eos_token_id
        # Ids, not text: the tokenizer may add special tokens of its own (tests/test_packing.py).
        first, second = ([3], [11, 12, 13, 14, 15]), ([4], [21, 22, 23])
        seq_len = 1 + 5 + 1 + 1 + 3 + 1
        [(block, _)] = pack_examples([first, second], seq_len=seq_len - 1, eos_id=eos)
        start = block.index(eos)
        alone = block[start:]
        with torch.no_grad():
            solo = model(input_ids=torch.tensor([alone], device=device)).logits[0].float()
            packed = (
                model(
                    input_ids=torch.tensor([block], device=device),
                    position_ids=torch.tensor([document_positions(block, eos)], device=device),
                    use_cache=False,
                )
                .logits[0, start:]
                .float()
            )
        delta = (packed - solo).abs().max().item()
        key = f"{attn}_{str(dtype).removeprefix('torch.')}"
        figures[key] = {"max_abs_delta": delta, "tolerance": tol}
        ok = ok and delta <= tol
    return result(ok, "packed example's logits == its logits alone, within tolerance", **figures)


def _packed_batches(tok, device, seq_len: int, rows: int, prefixes=None, texts=None):
    """Endless micro-batches of `documents`-packed blocks (labels = inputs)."""
    import itertools

    import torch

    from condlabel.train.data import document_positions, pack_examples, tokenize_examples

    texts = texts or sample_texts(400, min_words=20, max_words=120, seed=5)
    prefixes = prefixes or [""] * len(texts)
    examples = tokenize_examples(tok, list(zip(prefixes, texts, strict=True)))
    blocks = [ids for ids, _ in pack_examples(examples, seq_len, tok.eos_token_id)]
    cycle = itertools.cycle(range(0, len(blocks) - rows + 1, rows))

    def next_batch():
        i = next(cycle)
        ids = torch.tensor(blocks[i : i + rows], device=device)
        pos = [document_positions(b, tok.eos_token_id) for b in blocks[i : i + rows]]
        batch = {"input_ids": ids, "labels": ids, "position_ids": torch.tensor(pos, device=device)}
        return batch, ids.numel()

    return next_batch


def run_steps(model, next_batch, device: str, steps: int, lr: float = 3e-3) -> list[dict]:
    """`steps` optimizer steps of condlabel's training loop (`StepLoop`), bf16 autocast, in
    process; returns the metrics it reported."""
    import torch

    from condlabel.train.steps import StepLoop, StepState

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    opt = SimpleNamespace(max_steps=steps, grad_accum_steps=1, max_grad_norm=1.0)
    opt.log_every_steps = max(1, steps // 10)
    history: list[dict] = []
    loop = StepLoop(
        model, optimizer, scheduler, opt, every_steps=steps, world=1, rank=0,
        device=torch.device(device),
        autocast=torch.autocast(torch.device(device).type, dtype=torch.bfloat16),
        report=history.append,
    )  # fmt: skip
    loop.run(StepState(0, 0), next_batch, lambda: 0, history.append)
    return history


def train_steps(models: Path, device: str) -> dict:
    """Steps over 16 short help texts, packed again and again: a corpus the tiny GPT-2 can
    learn by heart, so its loss must fall well below half of where it started (on varied text
    80 CPU steps moved it by ~10%, too little to tell a working loop from noise)."""
    import torch

    model, tok = _gpt2(models, device)
    steps = 300 if _on_gpu(device) else 80
    texts = sample_texts(16, min_words=20, max_words=60, seed=5) * 25
    if _on_gpu(device):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    batches = _packed_batches(tok, device, seq_len=128, rows=8, texts=texts)
    history = run_steps(model, batches, device, steps)
    seconds = time.perf_counter() - started
    first, last = history[0]["loss"], history[-1]["loss"]
    return result(
        last < 0.5 * first,
        "pass: the mean loss of the last logged steps is below half that of the first",
        steps=steps,
        loss_first=first,
        loss_last=last,
        tokens_per_s=sum(h["tokens_per_s"] for h in history[1:]) / max(1, len(history) - 1),
        train_seconds=seconds,
        peak_memory_mb=peak_memory_mb(device),
    )


def guided_eval(models: Path, device: str) -> dict:
    import torch

    from condlabel.config import GenerationSettings
    from condlabel.train.data import prompt_ids
    from condlabel.train.evaluate import generate

    model, tok = _gpt2(models, device)
    prefix, prompt, steps, scale = " lovely day.", " The", 8, 3.0
    settings = GenerationSettings(
        do_sample=False, max_new_tokens=steps, num_samples=1, batch_size=1, guidance_scale=scale
    )
    [(_, guided)] = generate(model, tok, prefix, [prompt], settings, device)
    cond, plain, expected = prompt_ids(tok, prefix, prompt), prompt_ids(tok, "", prompt), []
    with torch.no_grad():
        for _ in range(steps):
            lc = model(torch.tensor([cond + expected], device=device)).logits[0, -1].log_softmax(-1)
            lu = (
                model(torch.tensor([plain + expected], device=device)).logits[0, -1].log_softmax(-1)
            )
            expected.append(int((scale * lc + (1 - scale) * lu).argmax()))
    formula = tok.decode(expected, skip_special_tokens=True)
    return result(guided == formula, "", guided=guided, formula=formula)


def ct2(models: Path, device: str) -> dict:
    try:
        import ctranslate2
    except ImportError as exc:
        return skipped(f"ctranslate2 is not installed ({exc})")
    if _on_gpu(device) and ctranslate2.get_cuda_device_count() == 0:
        return skipped("CTranslate2's CUDA libraries do not load here (no CUDA device seen)")
    import tempfile

    from condlabel.config.labelers import CT2LabelerConfig
    from condlabel.labelers.ct2 import CT2Labeler
    from condlabel.models import merge_model

    texts = chunks(32, min_words=20, max_words=150, seed=7)
    compute = "int8_bfloat16" if _on_gpu(device) else "int8"
    with tempfile.TemporaryDirectory() as tmp:
        path = merge_model(
            str(models / LABELER), None, f"{tmp}/ct2", format="ct2", quantization="int8"
        )
        cfg = CT2LabelerConfig(
            model=path, compute_type=compute, device="cuda" if _on_gpu(device) else "cpu",
            do_sample=False, max_new_tokens=NEW_TOKENS, max_input_tokens=256,
        )  # fmt: skip
        theirs_labeler = labeler(models, device, "bfloat16" if _on_gpu(device) else "float32")
        ours_labeler = CT2Labeler(cfg)
        timings = {}
        for name, model in (("ct2", ours_labeler), ("hf", theirs_labeler)):
            started = time.perf_counter()
            timings[name] = (model.label(texts), len(texts) / (time.perf_counter() - started))
    figures = _compare(timings["ct2"][0], timings["hf"][0])
    figures.update(compute_type=compute, ct2_chunks_per_s=timings["ct2"][1])
    figures["hf_chunks_per_s"] = timings["hf"][1]
    return result(len(timings["ct2"][0]) == len(texts), "agreement reported, not gated", **figures)


def adherence(models: Path, device: str) -> dict:
    """Reported, not gated: see bench/gpu_adherence.py."""
    from gpu_adherence import run_adherence

    return run_adherence(models, device)
