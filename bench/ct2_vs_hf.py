"""Chunks/s and peak memory of the `ct2` backend (float32 and int8) vs the `hf` backend on the
same T5 and the same chunks, measured in one run and printed as ratios (issue 15).

    python bench/ct2_vs_hf.py [--chunks 48] [--new-tokens 40] [--threads 1] [--sample]

A ~14M-parameter T5 with a LoRA adapter (random weights, tests/tiny_models.py) is built once;
`condlabel merge` writes it merged in safetensors (for hf) and in CTranslate2 float32 and int8.
Each labeler runs in a process of its own (`--worker`), so its peak resident memory (ru_maxrss)
is its own: imports, model and labeling. Both backends label the same chunks of Python's help
text with the same settings (greedy by default, as agreement needs; `--sample` for the
reference's sampling), in calls of `--batch-size` chunks, after a warm-up call; the best of
`--repeats` passes counts (the machine is shared). Goals (issue 15): int8 >= 2x hf chunks/s with
>= 90% of greedy labels equal to hf's, and <= 0.5x hf's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # cost_estimate's roofline

BACKENDS = ("hf", "ct2-float32", "ct2-int8")


def worker(args: argparse.Namespace) -> None:
    """Label the chunks with one backend; print one JSON line of results."""
    from tiny_models import sample_texts  # imports pytest and tokenizers, not torch

    from condlabel.config import HFLabelerConfig
    from condlabel.config.labelers import CT2LabelerConfig

    chunks = sample_texts(args.chunks, min_words=200, max_words=400, seed=5)
    settings = {"max_new_tokens": args.new_tokens, "do_sample": args.sample}
    started = time.perf_counter()
    if args.worker == "hf":
        import torch  # only here: the ct2 labeler needs no torch, and its RSS must not hold it

        torch.set_num_threads(args.threads)
        from condlabel.labelers.hf import HFLabeler

        labeler = HFLabeler(HFLabelerConfig(model=args.model, device="cpu", **settings))
    else:
        from condlabel.labelers.ct2 import CT2Labeler

        compute_type = args.worker.removeprefix("ct2-")
        cfg = CT2LabelerConfig(
            model=args.model,
            compute_type=compute_type,
            device="cpu",
            intra_threads=args.threads,
            **settings,
        )
        labeler = CT2Labeler(cfg)
    load_s = time.perf_counter() - started
    labeler.label(chunks[: args.batch_size])  # warm-up
    best, results = 0.0, []
    for _ in range(args.repeats):
        started = time.perf_counter()
        results = []
        for i in range(0, len(chunks), args.batch_size):
            results.extend(labeler.label(chunks[i : i + args.batch_size]))
        best = max(best, len(chunks) / (time.perf_counter() - started))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "chunks_per_s": best,
                "load_s": load_s,
                "peak_mb": peak_mb,
                "texts": [r.raw_output for r in results],
                "logprobs": [r.logprob for r in results],
                "tokens": sum(r.num_generated_tokens for r in results),
            }
        )
    )


def build_models(root: Path) -> dict[str, str]:
    from tiny_models import build_lora_adapter, build_sized_t5

    from condlabel.models import merge_model

    base = build_sized_t5(root / "base")
    adapter = build_lora_adapter(base, root / "adapter")
    models = {"hf": merge_model(str(base), str(adapter), str(root / "hf"), dtype="float32")}
    for q in ("float32", "int8"):
        models[f"ct2-{q}"] = merge_model(
            str(base), str(adapter), str(root / f"ct2-{q}"), format="ct2", quantization=q
        )
    return models


def params_millions(model_dir: str) -> float:
    from math import prod

    from safetensors import safe_open

    with safe_open(str(Path(model_dir, "model.safetensors")), "pt") as f:
        return sum(prod(f.get_slice(key).get_shape()) for key in f.keys()) / 1e6  # noqa: SIM118


# GPU rows (issue 15), ESTIMATED with bench/cost_estimate.py's roofline (no GPU was available):
# int8 weights (1 byte/parameter) and int8 GEMMs in the encoder; the cross-attention cache in
# 16 bits. Datasheet dense peaks: int8 ops/s, bandwidth bytes/s, memory bytes. A10G: the A10
# datasheet's figures (AWS publishes none of its own for the A10G); treat them as optimistic.
GPU_INT8 = {
    "L4 24GB (g6)": (242e12, 300e9, 24e9),
    "A10G 24GB (g5)": (250e12, 600e9, 24e9),
    "A100 80GB SXM (p4de)": (624e12, 2.04e12, 80e9),
    "H100 80GB SXM (p5)": (1979e12, 3.35e12, 80e9),
}
WORKSPACE_BYTES = 2e9  # CUDA context, activations, allocator slack


def estimate() -> None:
    """Print the int8 rows of the operators guide's GPU table (estimated)."""
    import cost_estimate as ce

    weights = ce.enc_params + ce.dec_params + ce.VOCAB * ce.D  # 1 byte each in int8
    cross_cache = ce.LAYERS * 2 * ce.HEADS_X_DKV * 2 * ce.tokens_in  # per chunk, 16-bit
    encoder = 2 * ce.enc_params * ce.tokens_in + ce.LAYERS * 4 * ce.tokens_in**2 * ce.HEADS_X_DKV
    cross_kv = ce.LAYERS * 2 * 2 * ce.D * ce.HEADS_X_DKV * ce.tokens_in
    print(
        f"int8 weights {weights / 1e9:.1f} GB; cross-attention cache {cross_cache / 1e9:.2f} GB/chunk"
    )
    print(
        "| GPU | batch that fits | prefill s/chunk | decode s/chunk | chunks/s per GPU "
        "| GPU-hours per 1B input tokens |"
    )
    print("|---|---|---|---|---|---|")
    for name, (ops, bandwidth, memory) in GPU_INT8.items():
        batch = min(ce.BATCH, int((memory - weights - WORKSPACE_BYTES) // cross_cache))
        prefill = (encoder + cross_kv) / (ops * ce.MFU)
        step = (ce.dec_params + ce.VOCAB * ce.D + batch * cross_cache) / (
            bandwidth * ce.BANDWIDTH_EFFICIENCY
        )
        rate = 1 / (prefill + ce.TOKENS_OUT * step / batch)
        hours = 1e9 / ce.tokens_in / rate / 3600
        print(
            f"| {name} | {batch} | {prefill:.3f} | {ce.TOKENS_OUT * step / batch:.3f} "
            f"| {rate:.2f} | {hours:.0f} |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16, help="chunks per label() call")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="threads of each labeler")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--sample", action="store_true", help="reference sampling, not greedy")
    parser.add_argument("--estimate", action="store_true", help="print the GPU rows (estimated)")
    parser.add_argument("--worker", choices=BACKENDS, help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.estimate:
        estimate()
        return 0
    if args.worker:
        worker(args)
        return 0

    passed = sys.argv[1:]
    with tempfile.TemporaryDirectory(prefix="bench-ct2-") as tmp:
        models = build_models(Path(tmp))
        size = params_millions(models["hf"])
        runs = {}
        for name in BACKENDS:
            cmd = [sys.executable, __file__, *passed, "--worker", name, "--model", models[name]]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[name] = json.loads(out.stdout.strip().splitlines()[-1])
    hf = runs["hf"]
    # Agreement means little if a random model writes the same few labels for every chunk.
    print(
        f"hf labels: {len(set(hf['texts']))} distinct of {len(hf['texts'])}, "
        f"{hf['tokens'] / len(hf['texts']):.1f} tokens each on average"
    )
    mode = "sampled" if args.sample else "greedy"
    print(
        f"T5 {size:.1f}M parameters (+LoRA merged), {args.chunks} chunks of 200-400 words, "
        f"{mode}, {args.new_tokens} new tokens, {args.threads} thread(s) each, batches of "
        f"{args.batch_size}"
    )
    print(
        f"{'backend':<12} {'chunks/s':>9} {'x hf':>6} {'peak MB':>8} {'x hf':>6} "
        f"{'same text':>10} {'max |dlogprob| (same)':>22}"
    )
    for name in BACKENDS:
        run = runs[name]
        same = [a == b for a, b in zip(run["texts"], hf["texts"], strict=True)]
        deltas = [
            abs(a - b) for a, b, s in zip(run["logprobs"], hf["logprobs"], same, strict=True) if s
        ]
        print(
            f"{name:<12} {run['chunks_per_s']:>9.2f} {run['chunks_per_s'] / hf['chunks_per_s']:>6.2f}"
            f" {run['peak_mb']:>8.0f} {run['peak_mb'] / hf['peak_mb']:>6.2f}"
            f" {sum(same):>4}/{len(same):<5} {max(deltas, default=0.0):>22.2e}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
