"""The `hf` labeler vs. the seed's labeling method, on the same tiny seq2seq model and chunks.

    python bench/labeler_vs_reference.py            # ~2-4 min on 2 CPU cores

Builds (tests/tiny_models.py) a tiny T5 whose output layer has flan-ul2's 32,128 rows, plus a
LoRA adapter, and 96 chunks cut by our chunker (max 500 words) from Python's help topics. Then, each in a fresh subprocess so memory
figures do not mix, it labels every chunk with:

- `reference`: a faithful re-implementation of the seed labeler's code (the condlabeler-alpha
  model card's: flan-ul2 + a LoRA adapter; its score is `reference` in
  condlabel/labelers/scoring.py): PeftModel with the adapter unmerged, batches in input order padded to their longest chunk, `generate` with
  `output_scores=True`, `torch.stack(scores).softmax(-1)` over the whole generation, and a
  per-token Python loop summing `log(p + 0.001)` over the padded length;
- `reference-merged`: the same on merged weights (isolates what merging alone buys);
- `hf-window-16`: our labeler handed 16 chunks at a time (the reference's batch, so no
  length-sorting across batches);
- `hf`: our labeler handed the chunks in windows of `--window` (what `compute.batch_size` does
  in the pipeline), sorted by length and cut into `generate` calls of the same 16 rows.

Same generation settings for all (the reference's: sampling, max_new_tokens 80, top_p 0.95,
temperature 0.5, top_k 5), same batch size per `generate` call. Measured per method after
loading and one warm-up batch: chunks/s; peak memory = the highest resident set size sampled
every 2 ms by a thread (psutil) during labeling, minus the resident size just before it (torch
CPU tensors are invisible to tracemalloc); the process high-water mark (ru_maxrss) is printed
too; padded/useful = token positions computed over useful ones (input tokens + generated
tokens up to EOS). Computed positions: for the reference, rows x (padded input + steps) of each
`generate` call; for ours, each row's encoder width (its encoder group's longest input,
`max_encoder_padding`) plus the decoder steps run for it (the decoder drops a row at its EOS;
the counting test checks this at the model's forward). Not counted as positions: the decoder's
cross-attention over a call's padded encoder width (masked keys, d_model-sized dot products,
small beside a position's layers and the 32k-row output layer).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

GENERATION = {
    "max_new_tokens": 80,
    "do_sample": True,
    "top_p": 0.95,
    "temperature": 0.5,
    "top_k": 5,
}
METHODS = ("reference", "reference-merged", "hf-window-16", "hf")


class PeakRSS:
    """Highest resident set size seen by a 2 ms polling thread while active."""

    def __init__(self) -> None:
        import psutil

        self._proc = psutil.Process()
        self.start = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            time.sleep(0.002)

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def _batches(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _measure(label_all: Callable[[], tuple[int, int]]) -> dict:
    """Wall and CPU time and peak memory of `label_all()`, which labels every chunk (after the
    caller's warm-up) and returns the useful and the computed (padded) token positions."""
    with PeakRSS() as mem:
        started, cpu = time.perf_counter(), time.process_time()
        useful, padded = label_all()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "seconds": seconds,
        "cpu": cpu,
        "useful": useful,
        "padded": padded,
        "rss_start": mem.start,
        "rss_peak": mem.peak,
    }


def run_reference(work: Path, texts: list[str], batch_size: int, merged: bool) -> dict:
    """The seed's method, step for step (see the module docstring)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "t5")
    model = AutoModelForSeq2SeqLM.from_pretrained(work / "t5", use_safetensors=True)
    model = PeftModel.from_pretrained(model, work / "t5-lora")
    if merged:
        model = model.merge_and_unload()
    model.eval()
    torch.manual_seed(0)

    def generate_condlabels(batch: list[str]) -> tuple[list, int, int]:
        inputs = tokenizer(batch, return_tensors="pt", padding=True)
        outputs = model.generate(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            num_return_sequences=1,
            bos_token_id=0,
            eos_token_id=1,
            repetition_penalty=1.0,
            return_dict_in_generate=True,
            output_scores=True,
            use_cache=True,
            **GENERATION,
        )
        output_tuple = []
        probs = torch.stack(outputs.scores, dim=1).softmax(-1)
        for z, i in enumerate(outputs.sequences):
            out_text = tokenizer.decode(i, skip_special_tokens=False)
            logprobs = sum(
                math.log(probs[z][counter][k.item()].item() + 0.001)
                for counter, k in enumerate(i[1:])
            )
            output_tuple.append((out_text, round(logprobs, 2)))
        # bookkeeping for the padding ratio (not part of the method)
        steps = outputs.sequences.shape[1] - 1
        useful = int(inputs["attention_mask"].sum())
        for seq in outputs.sequences[:, 1:].tolist():
            useful += seq.index(1) + 1 if 1 in seq else steps
        padded = inputs["input_ids"].numel() + len(batch) * steps
        return output_tuple, useful, padded

    def label_all() -> tuple[int, int]:
        useful = padded = 0
        for batch in _batches(texts, batch_size):
            _, u, p = generate_condlabels(batch)
            useful, padded = useful + u, padded + p
        return useful, padded

    with torch.no_grad():
        generate_condlabels(texts[:batch_size])  # warm-up
        return _measure(label_all)


def run_ours(work: Path, texts: list[str], batch_size: int, window: int) -> dict:
    from condlabel.config import HFLabelerConfig
    from condlabel.labelers.hf import HFLabeler

    labeler = HFLabeler(
        HFLabelerConfig(
            model=str(work / "t5"),
            adapter=str(work / "t5-lora"),
            max_batch_size=batch_size,
            max_input_tokens=4096,
            **GENERATION,
        )
    )

    def label_all() -> tuple[int, int]:
        useful = padded = 0
        for chunk_window in _batches(texts, window):
            for r in labeler.label(chunk_window):
                useful += r.input_tokens + r.num_generated_tokens
                padded += r.padded_tokens
        return useful, padded

    labeler.label(texts[:batch_size])  # warm-up
    return _measure(label_all)


def child(method: str, work: Path, batch_size: int, window: int) -> None:
    texts = json.loads((work / "chunks.json").read_text())
    if method.startswith("reference"):
        result = run_reference(work, texts, batch_size, merged=method == "reference-merged")
    else:
        result = run_ours(
            work, texts, batch_size, batch_size if method == "hf-window-16" else window
        )
    result["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    result["chunks"] = len(texts)
    print("RESULT " + json.dumps(result))


def build(work: Path, chunks: int, vocab: int, max_words: int) -> None:
    from pydoc_data.topics import topics

    from tiny_models import build_lora_adapter, build_tiny_t5

    from condlabel.convert.chunking import chunk_text

    if not (work / "t5" / "model.safetensors").exists():
        build_tiny_t5(work / "t5", vocab_size=vocab)
        build_lora_adapter(work / "t5", work / "t5-lora")
    # Real documents (Python's help topics) cut by our chunker, in document order: mostly
    # full-size chunks, some shorter document tails and short documents — what a corpus gives.
    texts: list[str] = []
    for key in sorted(topics):
        doc = topics[key]
        texts.extend(doc[s:e] for s, e, _ in chunk_text(doc, max_words, max_words // 4))
    (work / "chunks.json").write_text(json.dumps(texts[:chunks]))


def _print_results(results: dict[str, dict], args: argparse.Namespace, loads: list[float]) -> None:
    """The table, then each method's ratios to the reference against the goals."""
    mib = 1 << 20
    print(
        f"\n{args.chunks} chunks, generate batch {args.batch_size}, window {args.window}, "
        f"vocab {args.vocab}, {GENERATION}, torch threads: default, best of {args.rounds} "
        f"round(s); 1-min load average before each run: {min(loads):.2f}-{max(loads):.2f}\n"
    )
    print(
        f"{'method':<18}{'chunks/s':>9}{'chunks/cpu-s':>13}{'peak MiB':>10}{'maxrss MiB':>11}"
        f"{'padded/useful':>14}"
    )
    for method, r in results.items():
        r["rate"] = r["chunks"] / r["seconds"]
        r["cpu_rate"] = r["chunks"] / r["cpu"]
        r["work_mem"] = r["rss_peak"] - r["rss_start"]
        print(
            f"{method:<18}{r['rate']:>9.2f}{r['cpu_rate']:>13.2f}{r['work_mem'] / mib:>10.1f}"
            f"{r['maxrss'] / mib:>11.1f}{r['padded'] / r['useful']:>14.3f}"
        )
    if "reference" in results and "hf" in results:
        ref = results["reference"]
        print()
        for name in ("hf", "hf-window-16", "reference-merged"):
            if name in results:
                r = results[name]
                print(
                    f"{name} / reference: chunks/s x{r['rate'] / ref['rate']:.2f}, chunks per "
                    f"CPU-second x{r['cpu_rate'] / ref['cpu_rate']:.2f} (goal >= 3), peak "
                    f"memory x{r['work_mem'] / max(ref['work_mem'], 1):.2f} (goal <= 0.5)"
                )
        hf = results["hf"]
        print(f"hf padded/useful tokens {hf['padded'] / hf['useful']:.3f} (goal <= 1.1)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--window",
        type=int,
        default=96,
        help="chunks handed to our labeler per call (compute.batch_size)",
    )
    parser.add_argument("--vocab", type=int, default=32128, help="output rows of the tiny T5")
    parser.add_argument("--max-words", type=int, default=500, help="chunker's max_words")
    parser.add_argument("--workdir", help="keep models and chunks here (default: a temp dir)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the methods this many times in turn and keep each one's fastest run (a "
        "shared machine's load hits the methods alike only over several rounds)",
    )
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="condlabel-bench-"))
    if args.child:
        child(args.child, work, args.batch_size, args.window)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    build(work, args.chunks, args.vocab, args.max_words)

    results: dict[str, dict] = {}
    loads = []
    for method in [m for _ in range(args.rounds) for m in args.methods.split(",")]:
        loads.append(os.getloadavg()[0])
        cmd = [
            sys.executable,
            __file__,
            "--child",
            method,
            "--workdir",
            str(work),
            "--batch-size",
            str(args.batch_size),
            "--window",
            str(args.window),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout, proc.stderr, sep="\n", file=sys.stderr)
            raise SystemExit(f"{method} failed")
        result = json.loads(line.removeprefix("RESULT "))
        if method not in results or result["seconds"] < results[method]["seconds"]:
            results[method] = result

    _print_results(results, args, loads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
