"""Constrained labels (`constrain_format`) of a weak labeler: what they are worth, what they cost.

A weak labeler is a small model early in distillation: a tiny causal student (tests/tiny_models.py's
Llama shape, T5-style training targets from `condlabel.distill.data`) trained for a few steps,
in this process, on the keyphrase teacher's labels of Python's help text. It then labels the
same held-out chunks twice, with and without the constraint, greedy, one thread: parse rate, tag
F1 and ROUGE-L against the teacher (the distillation gate's metrics), chunks/s and the tokens it
generated per chunk. The backends: `hf` here; `vllm` when this Python has vLLM (its CPU build:
run this script with that venv's Python and `--student DIR` from an `hf` run, so both backends
label with the same student).

    python bench/structured.py [--chunks 120] [--steps 120] [--backends hf,vllm] [--student DIR]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TEMPLATE = "{text}\n\nSynopsis:"
CLOSED_LIST = re.compile(r"tags?\s*:\s*\[[^\]]*\]", re.I)
NEW_TOKENS = 64
MAX_INPUT = 192


def teacher_rows(n: int, seed: int) -> list[dict]:
    """`n` chunks of help text and the keyphrase teacher's labels of them."""
    from tiny_models import sample_texts

    from condlabel.config import KeyphraseLabelerConfig
    from condlabel.labelers.keyphrase import KeyphraseLabeler

    texts = sample_texts(n, min_words=40, max_words=120, seed=seed)
    teacher = KeyphraseLabeler(
        KeyphraseLabelerConfig(num_tags=3, synopsis_sentences=1, synopsis_max_words=12)
    )
    return [
        {"text": t, "synopsis": r.synopsis, "tags": r.tags}
        for t, r in zip(texts, teacher.label(texts), strict=True)
    ]


def train_student(out: Path, rows: list[dict], steps: int) -> Path:
    """A tiny Llama trained `steps` steps on the teacher's labels (plain loop, AdamW)."""
    import torch
    from tiny_models import build_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from condlabel.distill.data import collate, encode_examples
    from condlabel.labelers.encoding import prompt_encoding

    build_tiny_llama(out, eos_likely=False)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    encoding = prompt_encoding(
        tokenizer,
        TEMPLATE,
        configured_eos=(model.config.eos_token_id,),
        positions=model.config.max_position_embeddings,
        causal=True,
        max_new_tokens=NEW_TOKENS,
        max_input_tokens=MAX_INPUT,
        model=str(out),
        section="student",
    )
    examples = encode_examples(encoding, rows, NEW_TOKENS)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        batch = [examples[(step * 16 + k) % len(examples)] for k in range(16)]
        tensors = {
            k: torch.tensor(v) for k, v in collate(batch, tokenizer.pad_token_id, False).items()
        }
        loss = model(**tensors).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 40 == 0 or step == steps - 1:
            print(f"  step {step}: loss {loss.item():.2f}")
    print(f"trained {steps} steps in {time.perf_counter() - started:.0f} s")
    model.eval().save_pretrained(out, safe_serialization=True)
    return out


def _labeler(backend: str, student: Path, constrained: bool):
    common = {
        "model": str(student),
        "prompt_template": TEMPLATE,
        "max_new_tokens": NEW_TOKENS,
        "max_input_tokens": MAX_INPUT,
        "do_sample": False,
        "constrain_format": constrained,
    }
    if backend == "hf":
        from condlabel.config import HFLabelerConfig
        from condlabel.labelers.hf import HFLabeler

        return HFLabeler(HFLabelerConfig(**common, max_batch_size=16))
    from condlabel.config import VLLMLabelerConfig
    from condlabel.labelers.vllm import VLLMLabeler

    return VLLMLabeler(VLLMLabelerConfig(**common, max_model_len=512, dtype="float32"))


def _closed(prefix: str, result) -> bool:
    """A synopsis and a `Tags: [...]` list that closes (parse_ok alone is weak for a causal
    labeler whose prompt ends with `Synopsis:`: any continuation is a synopsis)."""
    return result.parse_ok and bool(CLOSED_LIST.search(prefix + result.raw_output))


def compare_backend(backend: str, student: Path, rows: list[dict]) -> None:
    from condlabel.config.distill import GateConfig
    from condlabel.distill.metrics import compare, gate_report

    texts = [r["text"] for r in rows]
    print(f"\n{backend}: {len(texts)} held-out chunks, greedy, {NEW_TOKENS} new tokens at most")
    print(
        "| labels | parse rate | closed tag list | tag F1 | ROUGE-L | chunks/s | tokens/chunk "
        "| label_truncated |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rates = {}
    for constrained in (False, True):
        labeler = _labeler(backend, student, constrained)
        labeler.label(texts[:4])  # warm-up
        started = time.perf_counter()
        results = labeler.label(texts)
        rates[constrained] = len(texts) / (time.perf_counter() - started)
        report = gate_report(compare(rows, results), GateConfig())
        tokens = sum(r.num_generated_tokens for r in results) / len(results)
        truncated = sum(r.label_truncated for r in results) / len(results)
        closed = sum(_closed(labeler.encoding.suffix, r) for r in results) / len(results)
        name = "constrained" if constrained else "free"
        print(
            f"| {name} | {report['parse_rate']:.3f} | {closed:.3f} | {report['tag_f1']:.3f} | "
            f"{report['rouge_l']:.3f} | {rates[constrained]:.1f} | {tokens:.1f} | {truncated:.2f} |"
        )
        if hasattr(labeler, "close"):
            labeler.close()
    print(f"constrained / free chunks/s: {rates[True] / rates[False]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=120, help="held-out chunks")
    parser.add_argument("--train", type=int, default=400, help="teacher-labeled training chunks")
    parser.add_argument("--steps", type=int, default=120, help="training steps (a weak student)")
    parser.add_argument("--backends", default="hf")
    parser.add_argument("--student", metavar="DIR", help="reuse this student (skips training)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    held_out = teacher_rows(args.chunks, seed=101)
    if args.student:
        student = Path(args.student)
    else:
        work = Path(tempfile.mkdtemp(prefix="condlabel-bench-structured-"))
        student = train_student(work / "student", teacher_rows(args.train, seed=7), args.steps)
        print(f"student: {student}")
    for backend in args.backends.split(","):
        compare_backend(backend, student, held_out)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


if __name__ == "__main__":
    main()
