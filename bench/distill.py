"""Distillation: student vs teacher on the same held-out chunks, and the cost of 1B tokens.

Measured part (CPU, this machine): the keyphrase labeler (teacher) labels the sample corpus
(Python's help topics and docstrings), `condlabel distill` trains a tiny T5 (the student,
built as tests/tiny_models.py builds it) on Ray Train and gates it; then both label the same
held-out chunks, side by side in this process, one thread each: chunks/s and their ratio, and
the gate's figures (parse rate, tag P/R/F1, ROUGE-L, calibration).

Estimated part (`--estimate`, no GPU here): the roofline of bench/cost_estimate.py applied to
flan-ul2 (the teacher) and flan-t5-base (a student), and what 1B input tokens cost labeled
directly vs a 1 % teacher sample + training + the student (+ a cascade's routed share).

    python bench/distill.py [--docs 60] [--steps 150] [--student DIR] [--estimate]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

WORDS_IN, TOKENS_PER_WORD, TOKENS_OUT, BATCH = 2000, 1.35, 80, 16
MFU, BANDWIDTH_EFFICIENCY, BYTES = 0.45, 0.60, 2  # bf16
H100 = (989e12, 3.35e12)
# d_model, heads x d_kv, gated FFN, layers per stack, vocabulary
FLAN_UL2 = (4096, 4096, 16384, 32, 32128)
FLAN_T5_BASE = (768, 768, 2048, 12, 32128)


def per_chunk_seconds(model, gpu=H100, batch: int = BATCH) -> float:
    """bench/cost_estimate.py's roofline for any T5 v1.1-layout model (prefill + decode)."""
    d, hd, ff, layers, vocab = model
    peak, bandwidth = gpu
    tokens_in = WORDS_IN * TOKENS_PER_WORD
    attn, ffn = 4 * d * hd, 3 * d * ff
    enc_params, dec_params = layers * (attn + ffn), layers * (2 * attn + ffn)
    encoder = 2 * enc_params * tokens_in + layers * 4 * tokens_in**2 * hd
    cross_kv = layers * 2 * 2 * d * hd * tokens_in
    prefill = (encoder + cross_kv) / (peak * MFU)
    weights = BYTES * (dec_params + vocab * d)
    cross_cache = layers * 2 * hd * BYTES * tokens_in
    step = (weights + batch * cross_cache) / (bandwidth * BANDWIDTH_EFFICIENCY)
    return prefill + TOKENS_OUT * step / batch


def estimate() -> None:
    tokens = 1e9
    chunks = tokens / (WORDS_IN * TOKENS_PER_WORD)
    teacher_s, student_s = per_chunk_seconds(FLAN_UL2), per_chunk_seconds(FLAN_T5_BASE, batch=64)
    direct = chunks * teacher_s / 3600
    sample = 0.01 * direct
    # Training the student: 6 FLOPs per parameter per token, 3 passes over the sample's input
    # and target tokens, at 40 % MFU.
    d, hd, ff, layers, _ = FLAN_T5_BASE
    params = layers * (4 * d * hd + 3 * d * ff) + layers * (8 * d * hd + 3 * d * ff)
    train_tokens = 0.01 * chunks * (WORDS_IN * TOKENS_PER_WORD + TOKENS_OUT)
    training = 6 * params * train_tokens * 3 / (H100[0] * 0.40) / 3600
    student = chunks * student_s / 3600
    print(f"ESTIMATED (roofline, H100 bf16; no GPU measured): {chunks:,.0f} chunks per 1B tokens")
    print(
        f"  teacher flan-ul2 {1 / teacher_s:.1f} chunks/s; student flan-t5-base {1 / student_s:.0f}"
    )
    print("| plan | H100-hours per 1B input tokens | vs direct |")
    print("|---|---|---|")
    print(f"| flan-ul2 + condlabeler-alpha on every chunk | {direct:.1f} | 1.00x |")
    for routed in (0.0, 0.05, 0.10):
        total = sample + training + student + routed * direct
        label = "1% teacher sample + train + student" + (
            f" + cascade routing {routed:.0%}" if routed else ""
        )
        print(f"| {label} | {total:.2f} | {direct / total:.1f}x cheaper |")
    print(f"  parts: sample {sample:.2f} h, training {training:.3f} h, student {student:.2f} h")


def measure(docs: int, steps: int, student_dir: str | None) -> None:
    from distill_helpers import write_teacher_output

    from condlabel.config import load_config

    work = Path(tempfile.mkdtemp(prefix="condlabel-bench-distill-"))
    teacher_dir = write_teacher_output(work, docs=docs)
    overrides = [
        f"data.paths=[{teacher_dir}]",
        f"output={work / 'out'}",
        f"checkpoint.storage_path={work / 'runs'}",
        "student.max_input_tokens=64",
        "holdout_fraction=0.2",
        f"optimization.max_steps={steps}",
        "optimization.learning_rate=0.003",
        "optimization.warmup_steps=10",
        "optimization.micro_batch_size=16",
        "gate.max_chunks=100",
    ]
    if student_dir is None:
        student_dir = str(_distill(work, overrides))
    cfg = load_config("distill", None, [*overrides, f"student.model={student_dir}"])
    _side_by_side(cfg, student_dir)
    print("load:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())


def _distill(work: Path, overrides: list[str]) -> Path:
    """`condlabel distill` on Ray: train a tiny T5, gate it; returns the exported student."""
    import ray
    from tiny_models import build_student_t5

    from condlabel.config import load_config
    from condlabel.distill.loop import run_distill

    student = build_student_t5(work / "student")
    ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
    cfg = load_config("distill", None, [*overrides, f"student.model={student}"])
    started = time.perf_counter()
    summary = run_distill(cfg)
    print(f"distill (train + gate): {time.perf_counter() - started:.0f} s")
    print("\n".join(summary.lines()))
    ray.shutdown()
    return work / "out"


def _side_by_side(cfg, student_dir: str) -> None:
    """Teacher and student label the same held-out chunks in this process, one thread each;
    the student's labels are compared with the teacher's as the gate compares them."""
    import torch

    from condlabel.config import KeyphraseLabelerConfig
    from condlabel.distill.metrics import compare, gate_report, report_lines
    from condlabel.distill.student import student_labeler_config
    from condlabel.labelers.hf import HFLabeler
    from condlabel.labelers.keyphrase import KeyphraseLabeler

    torch.set_num_threads(1)
    rows = _held_out_rows(cfg, cfg.gate.max_chunks)
    texts = [r["text"] for r in rows]
    teacher = KeyphraseLabeler(
        KeyphraseLabelerConfig(num_tags=3, synopsis_sentences=1, synopsis_max_words=12)
    )
    student = HFLabeler(student_labeler_config(cfg, student_dir))
    rates, results = {}, {}
    for name, labeler in (("teacher (keyphrase)", teacher), ("student (tiny T5, greedy)", student)):
        labeler.label(texts[:4])  # warm-up
        t = time.perf_counter()
        results[name] = labeler.label(texts)
        rates[name] = len(texts) / (time.perf_counter() - t)
        print(f"{name}: {rates[name]:.1f} chunks/s on {len(texts)} held-out chunks")
    teacher_rate, student_rate = rates.values()
    print(f"student / teacher chunks/s: {student_rate / teacher_rate:.2f}x")
    report = gate_report(compare(rows, results["student (tiny T5, greedy)"]), cfg.gate)
    print("\n".join(report_lines(report)))


def _held_out_rows(cfg, n: int) -> list[dict]:
    from condlabel.distill.data import select_examples
    from condlabel.readback import read_tagged

    table = read_tagged(str(cfg.data.paths[0]))
    return select_examples(table, None, cfg.holdout_fraction, holdout=True).to_pylist()[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=60)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--estimate", action="store_true", help="print the GPU estimate only")
    parser.add_argument(
        "--student", metavar="DIR", help="compare this distilled student (skips the training)"
    )
    args = parser.parse_args()
    if args.estimate:
        estimate()
    else:
        measure(args.docs, args.steps, args.student)


if __name__ == "__main__":
    main()
