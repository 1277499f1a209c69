"""Chunks/s and peak memory of the `ct2` backend (float32 and int8) vs the `hf` backend on the
same T5 and the same chunks, measured in one run and printed as ratios (issue 15).

    python bench/ct2_vs_hf.py [--models random,large,copy-random,copy-trained] [--chunks 48]
        [--large-chunks 12] [--new-tokens 40] [--threads 1] [--train-steps 500] [--sample]

Models (random weights, tests/tiny_models.py, built here; nothing is downloaded):
- `random`: ~14M parameters (d_model 256, 4+4 layers) + a random LoRA, merged;
- `large`: ~83M (d_model 512, 8+8 layers) + LoRA: weights ~330 MB in float32, so that they,
  not the imports, weigh in the processes' memory (fewer chunks: `--large-chunks`);
- `copy-random` / `copy-trained`: one ~1.3M T5 (d_model 128, 2+2 layers, 2,000-token BPE),
  untrained and after `--train-steps` steps of training to copy the start of its input
  (AdamW, CPU; ~4 minutes on a busy 2-core machine), so that its top logits are separated as a trained labeler's are: is int8's greedy
  agreement a property of random weights?
`condlabel merge` writes each merged in safetensors (for hf) and in CTranslate2 float32 and
int8. Each labeler runs in a process of its own (`--worker`), so its resident memory is its
own; it reports RSS after its imports, after loading and at its peak (VmHWM), and whether
torch is loaded. Both backends label the same chunks of Python's help text with the same
settings (greedy by default, as agreement needs; `--sample` for the reference's sampling), in
calls of `--batch-size` chunks, after a warm-up call; the best of `--repeats` passes counts
(the machine is shared). Goals (issue 15): int8 >= 2x hf chunks/s with >= 90% of greedy labels
equal to hf's, and <= 0.5x hf's peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # cost_estimate's roofline

MODELS = ("random", "large", "copy-random", "copy-trained")
COPY_TOKENS = 24  # what copy-trained learns to write: the first 24 tokens of its input


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or its peak (VmHWM). Not ru_maxrss: Linux
    keeps that across fork and exec, so a worker started by this script would report at least
    the parent's RSS at the fork (torch and the models loaded), as the first run did."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(args: argparse.Namespace) -> None:
    """Label the chunks with one backend; print one JSON line of results."""
    from tiny_models import sample_texts  # imports pytest and tokenizers, not torch

    from condlabel.config import HFLabelerConfig
    from condlabel.config.labelers import CT2LabelerConfig

    chunks = sample_texts(args.chunks, *chunk_words(args.model_name), seed=5)
    settings = {"max_new_tokens": args.new_tokens, "do_sample": args.sample}
    rss = {"start": rss_mb()}
    started = time.perf_counter()
    if args.worker == "hf":
        import torch  # only here: the ct2 labeler needs no torch, and its RSS must not hold it

        torch.set_num_threads(args.threads)
        from condlabel.labelers.hf import HFLabeler

        rss["imports"] = rss_mb()
        labeler = HFLabeler(HFLabelerConfig(model=args.model, device="cpu", **settings))
    else:
        from condlabel.ct2_convert import require_ct2
        from condlabel.labelers.ct2 import CT2Labeler

        require_ct2()
        rss["imports"] = rss_mb()
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
    rss["loaded"] = rss_mb()
    labeler.label(chunks[: args.batch_size])  # warm-up
    best, results = 0.0, []
    for _ in range(args.repeats):
        started = time.perf_counter()
        results = []
        for i in range(0, len(chunks), args.batch_size):
            results.extend(labeler.label(chunks[i : i + args.batch_size]))
        best = max(best, len(chunks) / (time.perf_counter() - started))
    rss["peak"] = rss_mb("VmHWM")
    print(
        json.dumps(
            {
                "chunks_per_s": best,
                "load_s": load_s,
                "peak_mb": rss["peak"],
                "rss_mb": rss,
                "torch_loaded": "torch" in sys.modules,
                "texts": [r.raw_output for r in results],
                "logprobs": [r.logprob for r in results],
                "tokens": sum(r.num_generated_tokens for r in results),
            }
        )
    )


def backends(args: argparse.Namespace) -> list[str]:
    return ["hf", *(f"ct2-{t}" for t in args.ct2_types.split(","))]


def chunk_words(model: str | None) -> tuple[int, int]:
    """Words per benchmark chunk: the copy models see passages as long as they were trained
    on (a model asked for what it never learned is unsure, and int8 flips unsure choices)."""
    return (30, 120) if model and model.startswith("copy-") else (200, 400)


def copy_accuracy(texts: list[str], model_dir: str, chunks: int, model: str) -> int:
    """How many labels are the copy the model was trained to write (its input's first
    COPY_TOKENS tokens): whether a disagreement with hf is an error or a near tie."""
    from tiny_models import sample_texts
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    expected = [
        tokenizer.decode(tokenizer(t)["input_ids"][:COPY_TOKENS], skip_special_tokens=True)
        for t in sample_texts(chunks, *chunk_words(model), seed=5)
    ]
    return sum(
        " ".join(a.split()) == " ".join(b.split()) for a, b in zip(texts, expected, strict=True)
    )


def build_models(root: Path, which: str, train_steps: int) -> dict[str, str]:
    """The `which` model merged for hf and converted for ct2 (float32, int8): backend -> dir."""
    from tiny_models import build_lora_adapter, build_sized_t5

    from condlabel.models import merge_model

    if which.startswith("copy-"):
        # no LoRA here: a random adapter would undo what training did
        base = build_sized_t5(
            root / "base", d_model=128, layers=2, heads=4, d_ff=512, tokenizer_vocab=2000
        )
        if which == "copy-trained":
            base = train_to_copy(base, root / "trained", train_steps)
        models = {"hf": str(base)}
        adapter = None
    else:
        sizes = {"d_model": 512, "layers": 8, "d_ff": 2048} if which == "large" else {}
        base = build_sized_t5(root / "base", **sizes)
        adapter = str(build_lora_adapter(base, root / "adapter"))
        models = {"hf": merge_model(str(base), adapter, str(root / "hf"), dtype="float32")}
    for q in ("float32", "int8"):
        models[f"ct2-{q}"] = merge_model(
            str(base), adapter, str(root / f"ct2-{q}"), format="ct2", quantization=q
        )
    return models


def train_to_copy(base: Path, out: Path, steps: int) -> Path:
    """`base` trained for `steps` steps on the CPU (AdamW, batches of 16) to write the first
    COPY_TOKENS tokens of its input then EOS, on passages of Python's help text drawn with
    another seed than the benchmark's chunks; saved to `out`. Prints its loss as it goes."""
    import torch
    from tiny_models import sample_texts
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(base)
    with torch.no_grad():  # tiny_models' std-0.5 head (for varied random labels) slows learning
        torch.nn.init.normal_(model.lm_head.weight, std=model.config.d_model**-0.5)
    inputs = [tokenizer(t)["input_ids"][:64] for t in sample_texts(512, 30, 120, seed=99)]
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    started, loss = time.perf_counter(), float("nan")
    for step in range(1, steps + 1):
        batch = [inputs[i] for i in torch.randint(len(inputs), (16,)).tolist()]
        width = max(map(len, batch))
        ids = torch.tensor([b + [pad] * (width - len(b)) for b in batch])
        labels = torch.tensor([b[:COPY_TOKENS] + [eos] for b in batch])
        out_loss = model(input_ids=ids, attention_mask=(ids != pad).long(), labels=labels).loss
        out_loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        loss = float(out_loss.detach())
        if step % 50 == 0:
            print(f"  copy training: step {step}, loss {loss:.3f}", flush=True)
    seconds = time.perf_counter() - started
    print(f"copy-trained: {steps} steps in {seconds:.0f} s, final batch loss {loss:.3f}")
    model.eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


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
    """Print the int8 rows of the GPU table in docs/cluster.md (estimated)."""
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
    parser.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS)
    )
    parser.add_argument("--chunks", type=int, default=48)
    parser.add_argument("--large-chunks", type=int, default=12, help="chunks for `large`")
    parser.add_argument("--batch-size", type=int, default=16, help="chunks per label() call")
    parser.add_argument("--new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1, help="threads of each labeler")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=500, help="copy-trained's training")
    parser.add_argument("--sample", action="store_true", help="reference sampling, not greedy")
    parser.add_argument("--estimate", action="store_true", help="print the GPU rows (estimated)")
    parser.add_argument(
        "--ct2-types",
        default="float32,int8",
        help="CTranslate2 compute types to run beside hf (also int16, int8_float32, ...); the "
        "model is converted in float32 and int8, other types are converted when loaded",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--model-name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.estimate:
        estimate()
        return 0
    if args.worker:
        worker(args)
        return 0
    which = args.models.split(",")
    if unknown := set(which) - set(MODELS):
        parser.error(f"--models: unknown {', '.join(sorted(unknown))}; valid: {', '.join(MODELS)}")
    summary = []
    for name in which:
        chunks = args.large_chunks if name == "large" else args.chunks
        with tempfile.TemporaryDirectory(prefix="bench-ct2-") as tmp:
            models = build_models(Path(tmp), name, args.train_steps)
            size = params_millions(models["hf"])
            runs = {}
            for backend in backends(args):
                model = models.get(backend, models["ct2-float32"])
                cmd = [sys.executable, __file__, *sys.argv[1:], "--chunks", str(chunks)]
                cmd += ["--worker", backend, "--model", model, "--model-name", name]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                runs[backend] = json.loads(out.stdout.strip().splitlines()[-1])
            if name == "copy-trained":
                correct = {
                    b: copy_accuracy(runs[b]["texts"], models["hf"], chunks, name) for b in runs
                }
                print("\ncopy-trained, labels that are the trained copy: " + ", ".join(
                    f"{b} {n}/{chunks}" for b, n in correct.items()))  # fmt: skip
        summary.append(report(name, size, chunks, runs, args))
    print("\nside by side (ct2 int8 against hf):")
    print(
        f"{'model':<13} {'params M':>8} {'x hf chunks/s':>13} {'x hf peak RSS':>13} {'same greedy':>12}"
    )
    for row in summary:
        print(
            " ".join(
                f"{v:{w}}" for v, w in zip(row, ("<13", ">8", ">13", ">13", ">12"), strict=True)
            )
        )
    return 0


def report(name: str, size: float, chunks: int, runs: dict, args: argparse.Namespace) -> tuple:
    """Print one model's table and its memory breakdown; the int8 summary row."""
    hf = runs["hf"]
    mode = "sampled" if args.sample else "greedy"
    print(
        f"\n== {name}: T5 {size:.1f}M parameters, {chunks} chunks of "
        f"{'-'.join(map(str, chunk_words(name)))} words, {mode}, "
        f"{args.new_tokens} new tokens, {args.threads} thread(s) each, batches of {args.batch_size}"
    )
    # Agreement means little if a random model writes the same few labels for every chunk.
    print(
        f"hf labels: {len(set(hf['texts']))} distinct of {len(hf['texts'])}, "
        f"{hf['tokens'] / len(hf['texts']):.1f} tokens each on average"
    )
    print(
        f"{'backend':<12} {'chunks/s':>9} {'x hf':>6} {'peak MB':>8} {'x hf':>6} "
        f"{'same text':>10} {'max |dlogprob| (same)':>22}"
    )
    row: tuple = ()
    for backend in runs:
        run = runs[backend]
        same = [a == b for a, b in zip(run["texts"], hf["texts"], strict=True)]
        deltas = [
            abs(a - b) for a, b, s in zip(run["logprobs"], hf["logprobs"], same, strict=True) if s
        ]
        speed, memory = run["chunks_per_s"] / hf["chunks_per_s"], run["peak_mb"] / hf["peak_mb"]
        print(
            f"{backend:<12} {run['chunks_per_s']:>9.2f} {speed:>6.2f}"
            f" {run['peak_mb']:>8.0f} {memory:>6.2f}"
            f" {sum(same):>4}/{len(same):<5} {max(deltas, default=0.0):>22.2e}"
        )
        if backend == "ct2-int8":
            row = (name, f"{size:.1f}", f"{speed:.2f}", f"{memory:.2f}", f"{sum(same)}/{len(same)}")
    print("RSS MB: start / after imports / loaded / peak (torch loaded?)")
    for backend in runs:
        rss = runs[backend]["rss_mb"]
        stages = " / ".join(f"{rss[k]:.0f}" for k in ("start", "imports", "loaded", "peak"))
        print(f"  {backend:<12} {stages}  (torch: {runs[backend]['torch_loaded']})")
    return row


if __name__ == "__main__":
    sys.exit(main())
