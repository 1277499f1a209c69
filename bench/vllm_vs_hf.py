"""Chunks/s of the `vllm` backend vs the `hf` backend on the same tiny causal model and the same
chunks, measured in one run and printed as a ratio (issue 8).

    make bench-vllm        # in .venv-vllm (vLLM's CPU build), with vLLM's CPU env vars
    python bench/vllm_vs_hf.py [--chunks 64] [--batch-sizes 16,64] [--new-tokens 80] [--greedy]

Both backends label the same chunks with the same settings (the reference's sampling parameters
unless --greedy; the decoder prompt template), handed over in calls of `batch size` chunks as the
pipeline's actor does (compute.batch_size). Model loading and engine start-up are printed apart
and not timed; each backend first labels a few warm-up chunks. The tiny Llama has random weights
and no likely EOS (`eos_likely=False`), so every chunk generates the full `--new-tokens`, as a
real labeler writing a synopsis and tags does. The hf backend is timed before the engine starts
(vLLM's CPU worker pins threads for the whole process).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

for key, value in {
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(key, value)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_models import build_tiny_llama, sample_texts  # noqa: E402

from condlabel.config import HFLabelerConfig, VLLMLabelerConfig  # noqa: E402
from condlabel.labelers.prompts import DECODER_PROMPT_TEMPLATE  # noqa: E402

CONTEXT = 512  # the tiny Llama's positions


def timed(labeler, chunks: list[str], batch_size: int, repeats: int) -> tuple[float, list]:
    """Best chunks/s over `repeats` passes (the machine is shared), and the last results."""
    best, results = 0.0, []
    for _ in range(repeats):
        started = time.perf_counter()
        results = []
        for i in range(0, len(chunks), batch_size):
            results.extend(labeler.label(chunks[i : i + batch_size]))
        best = max(best, len(chunks) / (time.perf_counter() - started))
    return best, results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=64)
    parser.add_argument("--batch-sizes", default="16,64", help="chunks per label() call")
    parser.add_argument("--new-tokens", type=int, default=80)
    parser.add_argument("--greedy", action="store_true", help="greedy instead of sampling")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import torch

    from condlabel.labelers.hf import HFLabeler
    from condlabel.labelers.vllm import VLLMLabeler

    chunks = sample_texts(args.chunks, min_words=50, max_words=300, seed=3)
    warmup = sample_texts(4, min_words=50, max_words=300, seed=4)
    generation = {
        "max_new_tokens": args.new_tokens,
        "do_sample": not args.greedy,
        "prompt_template": DECODER_PROMPT_TEMPLATE,
    }
    with tempfile.TemporaryDirectory(prefix="bench-vllm-") as tmp:
        model = str(build_tiny_llama(Path(tmp) / "llama", eos_likely=False))

        started = time.perf_counter()
        hf = HFLabeler(HFLabelerConfig(model=model, max_batch_size=max(batch_sizes), **generation))
        hf_load = time.perf_counter() - started
        threads = torch.get_num_threads()
        hf.label(warmup)
        hf_rates = {b: timed(hf, chunks, b, args.repeats) for b in batch_sizes}

        started = time.perf_counter()
        vllm = VLLMLabeler(VLLMLabelerConfig(model=model, max_model_len=CONTEXT, **generation))
        vllm_load = time.perf_counter() - started
        vllm.label(warmup)
        vllm_rates = {b: timed(vllm, chunks, b, args.repeats) for b in batch_sizes}
        input_limit = vllm.input_limit
        vllm.close()

    tokens = sum(r.num_generated_tokens for r in hf_rates[batch_sizes[0]][1])
    print(
        f"tiny Llama (hidden 128, 2 layers), {args.chunks} chunks of 50-300 words, "
        f"{'greedy' if args.greedy else 'sampled (T 0.5, top-k 5, top-p 0.95)'}, "
        f"{args.new_tokens} new tokens ({tokens / args.chunks:.0f} generated per chunk), "
        f"input limit {input_limit} tokens, torch threads {threads}"
    )
    print(f"load: hf {hf_load:.1f} s, vllm engine {vllm_load:.1f} s (not timed below)")
    for b in batch_sizes:
        hf_rate, hf_results = hf_rates[b]
        vllm_rate, vllm_results = vllm_rates[b]
        same = sum(
            a.raw_output == c.raw_output for a, c in zip(hf_results, vllm_results, strict=True)
        )
        print(
            f"batch {b:>3}: hf {hf_rate:6.2f} chunks/s, vllm {vllm_rate:6.2f} chunks/s, "
            f"vllm/hf = {vllm_rate / hf_rate:.2f}x  ({same}/{len(chunks)} identical texts)"
        )
    if not args.greedy:
        print("(sampled texts differ between the backends: each draws from its own random stream)")
    print(
        f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
