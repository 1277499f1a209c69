"""The product's training defaults beside a plain PyTorch loop, on one corpus, in one run
(`python bench/tag_adherence.py --versus-reference`).

1. The fortunes corpus (as `tag_adherence.py` reads it), split into training and held-out
   documents; one base model, built by the reference's own `tiny_gpt2.py`, for both sides.
2. The reference: `adherence_plain_loop.py` from `--reference-dir` (never copied here), run as
   its own process on the training documents; a small runner saves the model it trained, so
   that it is judged by the same evaluation as the product's.
3. The product: `condlabel convert` (VADER at sentence level, its defaults) and `condlabel
   train` with its defaults, at the reference's compute: 2 workers x 8 sequences x 128 tokens,
   the same steps and learning rate, warmup of 1% of the steps (the reference has none).
4. Each `--ablation` variant: the product's defaults with one difference (training variants
   retrain; sampling variants re-evaluate the defaults' model).
5. Every model: `condlabel eval` of `<|pos|>` and `<|neg|>` (same seed and samples; plain, and
   guided with `--guidance`), and on the held-out sentences the plain-text loss and the
   likelihood gap: text loss after the right token minus after the wrong one (negative: the
   model has learned the token's direction; needs no sampling).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from tag_adherence import (
    BUCKET,
    CHUNK_WORDS,
    REPO,
    S3Server,
    bench_env,
    convert,
    overrides,
    put_dir,
    read_fortunes,
    run,
    sentiment_convert,
    split_corpus,
    upload_corpus,
)

SENTIMENT = ["<|pos|>", "<|neg|>"]
REFERENCE_SCRIPT = "adherence_plain_loop.py"
BASE_BUILDER = "tiny_gpt2.py"
# Runs the reference script unchanged (runpy, as `python script.py ARGS` would), then saves the
# model and tokenizer it leaves in its globals, so the same evaluation can judge it.
REFERENCE_RUNNER = """
import runpy, sys
script, save = sys.argv[1], sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
found = runpy.run_path(script, run_name="__main__")
found["m"].save_pretrained(save, safe_serialization=True)
found["tok"].save_pretrained(save)
"""

TRAINING_VARIANTS = {
    "no_shuffle": ["data.shuffle=false"],
    "concat": ["optimization.packing=concat"],
    "constant_lr": ["optimization.schedule=constant", "optimization.warmup_steps=0"],
    "loss_on_text": ["optimization.loss_on=text"],
    "one_worker": [
        "compute.num_workers=1",
        "optimization.micro_batch_size=16",
        "compute.cpus_per_worker=1",
    ],
    "init_mean": ["model.new_token_init=mean"],
    "init_words": ["model.new_token_init=words"],
    "untagged_0": ["data.untagged_fraction=0"],
    "untagged_10": ["data.untagged_fraction=0.1"],
    "prefix_free": ["data.untagged_fraction=1.0"],
}
"""One difference from the defaults each; `prefix_free` is the plain-text loss's yardstick."""
SAMPLING_VARIANTS = {
    "top_k50": ["generation.top_k=50"],
    "top_p095": ["generation.top_p=0.95"],
    "reference_sampling": ["generation.top_k=50", "generation.top_p=0.95"],
    "temperature07": ["generation.temperature=0.7"],
}
"""Evaluation settings only: the defaults' model, sampled otherwise."""
VARIANTS = {**TRAINING_VARIANTS, **SAMPLING_VARIANTS}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--versus-reference", action="store_true",
                   help="run the product's defaults beside the plain reference loop instead")  # fmt: skip
    p.add_argument("--reference-dir", type=Path, default=REPO.parent / "shared" / "reference",
                   help=f"the directory of {REFERENCE_SCRIPT} and {BASE_BUILDER}")  # fmt: skip
    p.add_argument("--ablation", default="",
                   help="with --versus-reference: comma-separated variants of the defaults, or "
                   f"`all` ({', '.join(VARIANTS)})")  # fmt: skip
    p.add_argument("--no-reference", action="store_true",
                   help="with --versus-reference: skip the reference loop")  # fmt: skip
    p.add_argument("--output", type=Path, help="write every figure as JSON here")


def settle(args: argparse.Namespace) -> None:
    """Defaults of the side-by-side: the issue's measurement, or a small `--quick` one."""
    full = {"steps": 5000, "sentences": 16000, "width": 128, "layers": 4, "samples": 200}
    quick = {"steps": 300, "sentences": 4000, "width": 64, "layers": 2, "samples": 100}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick and "--guidance" not in sys.argv:
        args.guidance = 1.0  # guided sampling doubles the evaluation
    names = list(VARIANTS) if args.ablation == "all" else [
        v.strip() for v in args.ablation.split(",") if v.strip()
    ]  # fmt: skip
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        sys.exit(f"--ablation: unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    args.variants = names
    needed = [BASE_BUILDER] if args.no_reference else [REFERENCE_SCRIPT, BASE_BUILDER]
    for name in needed:  # the base model of both sides is the reference builder's
        if not (args.reference_dir / name).is_file():
            sys.exit(f"{args.reference_dir / name} is missing: point --reference-dir at the "
                     f"directory that holds {REFERENCE_SCRIPT} and {BASE_BUILDER}")  # fmt: skip


# --------------------------------------------------------------------------- the run


def main(args: argparse.Namespace) -> None:
    settle(args)
    work = Path(tempfile_dir())
    started = time.perf_counter()
    results: dict[str, dict] = {}
    with S3Server() as endpoint:
        env = bench_env(endpoint, work)
        train_docs, heldout = split_corpus(read_fortunes(args.sentences), args.seed)
        corpus = work / "corpus.jsonl.gz"
        with gzip.open(corpus, "wt") as out:
            out.writelines(json.dumps({"text": t}) + "\n" for t in train_docs)
        upload_corpus(train_docs, env)
        build_base(args, corpus, work / "base", env)
        put_dir(env, work / "base", f"s3://{BUCKET}/base")
        convert(env, "sentiment", sentiment_convert([{"backend": "vader"}]))
        print(f"corpus: {len(train_docs)} documents, {len(heldout)} held out", flush=True)

        if not args.no_reference:
            results["reference"] = reference(args, corpus, work, env)
            results["reference"].update(judge(env, work, "reference", str(work / "ref"), args))
            results["reference"]["gap"] = likelihood(str(work / "ref"), heldout)
            report(results, args, started)
        for name in ["defaults", *[v for v in args.variants if v in TRAINING_VARIANTS]]:
            results[name] = product(env, name, TRAINING_VARIANTS.get(name, []), args)
            model = results[name]["model"]
            results[name].update(judge(env, work, name, model, args))
            results[name]["gap"] = likelihood(model, heldout)
            report(results, args, started)
        for name in [v for v in args.variants if v in SAMPLING_VARIANTS]:
            model = results["defaults"]["model"]
            results[name] = {"model": model, "loss": results["defaults"]["loss"]}
            results[name].update(judge(env, work, name, model, args, SAMPLING_VARIANTS[name]))
            results[name]["gap"] = results["defaults"]["gap"]
            report(results, args, started)


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="adherence-vs-reference-")


def build_base(args: argparse.Namespace, corpus: Path, out: Path, env: dict[str, str]) -> None:
    """The base model of both sides, built by the reference's builder (its BPE, its GPT-2)."""
    builder = args.reference_dir / BASE_BUILDER
    cmd = [sys.executable, str(builder), str(corpus), str(out), str(args.width), str(args.layers)]
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)


def reference(args: argparse.Namespace, corpus: Path, work: Path, env: dict[str, str]) -> dict:
    """Run the reference loop in its own process; its printed shares and the trained model."""
    script = args.reference_dir / REFERENCE_SCRIPT
    cmd = [sys.executable, "-c", REFERENCE_RUNNER, str(script), str(work / "ref"),
           str(work / "base"), str(corpus), "random", str(args.steps)]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    print(f"$ {REFERENCE_SCRIPT} ... ({took:.0f} s)", flush=True)
    if done.returncode != 0:
        sys.exit(f"the reference loop failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    losses, shares = [], {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0].isdigit():
            losses.append(float(parts[1]))  # "step loss seconds"
        elif " pos " in line and " neg " in line:
            prefix = line[line.index("[") : line.index("]") + 1]
            key = {"[]": "none", "['<|pos|>']": "<|pos|>", "['<|neg|>']": "<|neg|>"}[prefix]
            shares[key] = {"pos": float(parts[-3]), "neg": float(parts[-1])}
    own = {}
    if {"none", *SENTIMENT} <= set(shares):
        own = {
            "<|pos|>": ratio(shares["<|pos|>"]["neg"], shares["none"]["neg"]),
            "<|neg|>": ratio(shares["<|neg|>"]["pos"], shares["none"]["pos"]),
        }
    return {"model": str(work / "ref"), "loss": losses[-1] if losses else math.nan,
            "seconds": took, "own_eval": {"shares": shares, "ratios": own}}  # fmt: skip


def product(env: dict[str, str], name: str, extra: list[str], args: argparse.Namespace) -> dict:
    """`condlabel train` with the defaults (and `extra`) at the reference's compute."""
    steps = args.steps
    settings = [
        f"data.paths=[s3://{BUCKET}/tagged-sentiment/]",
        f"model.path=s3://{BUCKET}/base",
        f"model.control_tokens={json.dumps(SENTIMENT)}",  # the tokens this corpus has
        "optimization.seq_len=128",
        "optimization.micro_batch_size=8",
        f"optimization.max_steps={steps}",
        f"optimization.learning_rate={args.lr}",
        f"optimization.warmup_steps={max(1, steps // 100)}",
        f"optimization.seed={args.seed}",
        f"optimization.log_every_steps={max(1, steps // 10)}",
        f"checkpoint.storage_path=s3://{BUCKET}/runs",
        f"checkpoint.every_steps={steps}",
        f"checkpoint.name={name}",
        "compute.num_workers=2",
        "compute.cpus_per_worker=0.5",
        *extra,  # last: a variant overrides the lines above
    ]
    started = time.perf_counter()
    out = run(env, "train", "--json", *overrides(settings))
    summary = json.loads(out[out.index("{") :])
    history = summary.get("history") or [{}]
    loss = history[-1].get("loss", math.nan)
    print(f"  {name}: final training loss {loss:.3f}", flush=True)
    took = time.perf_counter() - started
    return {"model": summary["export_uri"], "loss": loss, "seconds": took}


# --------------------------------------------------------------------------- the judgements


def judge(
    env: dict[str, str], work: Path, name: str, model: str, args, extra: list[str] = ()
) -> dict:
    """Misalignment ratios (conditioned / unconditioned) of both tokens, plain and guided: one
    `condlabel eval` per guidance scale, the same seed and samples for every model."""
    evals = {}
    for scale in dict.fromkeys([1.0, args.guidance]):
        out = work / f"eval-{name}-g{scale:g}.json"
        settings = [
            f"model={model}",
            "prefix=control_tokens",
            f"conditionals={json.dumps([{'control_tokens': [t]} for t in SENTIMENT])}",
            "generation.max_new_tokens=32",  # the reference's
            f"generation.num_samples={args.samples}",
            "generation.batch_size=50",
            f"generation.guidance_scale={scale}",
            f"generation.seed={args.seed}",
            "device=cpu",
            f"output={out}",
            *extra,
        ]
        run(env, "eval", *overrides(settings))
        rows = {r["name"]: r for r in json.loads(out.read_text())["results"]}
        evals["plain" if scale == 1.0 else "guided"] = {
            t: {
                "misalignment": rows[t]["misalignment"],
                "baseline": rows[t]["baseline_misalignment"],
                "ratio": ratio(rows[t]["misalignment"], rows[t]["baseline_misalignment"]),
            }
            for t in SENTIMENT
        }
    return {"eval": evals}


def likelihood(model_uri: str, docs: list[str]) -> dict[str, float]:
    """On the held-out documents, chunked and labelled as the conversion does (VADER
    defaults, one sentence a chunk): the plain-text loss per token (`EOS text`), and per
    token the likelihood gap: text loss after the right token minus after the wrong one
    (`EOS token text`, as training presents an example), over the chunks VADER gives it."""
    import pyarrow as pa
    import torch

    from condlabel.classifiers import build_classifiers, classify_table
    from condlabel.config.classifiers import ClassifierConfig
    from condlabel.config.convert import ChunkConfig
    from condlabel.convert.chunking import chunk_document
    from condlabel.convert.reading import Document
    from condlabel.models import load_model
    from condlabel.train.data import prompt_ids

    chunking = ChunkConfig(unit="sentence", max_words=CHUNK_WORDS)
    texts = [
        chunk.text
        for i, doc in enumerate(docs)
        for chunk in chunk_document(Document(f"heldout-{i}", doc, "heldout", i + 1), chunking)
    ]
    vader = build_classifiers([ClassifierConfig(backend="vader")])
    labels = classify_table(vader, pa.table({"text": texts})).column("control_tokens")
    loaded = load_model(model_uri, architecture="causal", device="cpu")
    model, tokenizer = loaded.model.eval(), loaded.tokenizer

    def text_loss(prefix: str, text: str) -> tuple[float, int]:
        ids = prompt_ids(tokenizer, prefix, text)
        n_text = len(ids) - len(prompt_ids(tokenizer, prefix, ""))
        logits = model(torch.tensor([ids])).logits[0, :-1]
        losses = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]), reduction="none")
        return losses[-n_text:].sum().item(), n_text

    plain = [0.0, 0]
    gaps = {t: [0.0, 0] for t in SENTIMENT}
    with torch.no_grad():
        for text, tokens in zip(texts, labels.to_pylist(), strict=True):
            loss, n = text_loss("", text)
            plain[0] += loss
            plain[1] += n
            for token, other in (SENTIMENT, SENTIMENT[::-1]):
                if token in (tokens or []):
                    right, n = text_loss(token, text)
                    wrong, _ = text_loss(other, text)
                    gaps[token][0] += right - wrong
                    gaps[token][1] += n
    return {
        "plain_loss": plain[0] / max(1, plain[1]),
        **{f"gap {t}": s / max(1, n) for t, (s, n) in gaps.items()},
        **{f"tokens {t}": n for t, (_, n) in gaps.items()},
    }


# --------------------------------------------------------------------------- the table


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return math.nan
    return a / b if b else (math.inf if a else math.nan)


def report(results: dict, args: argparse.Namespace, started: float) -> None:
    """The table so far (markdown, as bench/README.md keeps it) and the JSON of every figure."""
    free = results.get("prefix_free", {}).get("gap", {}).get("plain_loss")
    print("\n| run | train loss | <|pos|> ratio | <|neg|> ratio | guided <|pos|> | guided "
          "<|neg|> | gap <|pos|> | gap <|neg|> | plain-text loss | / prefix-free |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, res in results.items():
        ev, gap = res.get("eval", {}), res.get("gap", {})
        cells = [name, f"{res.get('loss', math.nan):.3f}"]
        for mode in ("plain", "guided"):
            cells += [f"{ev[mode][t]['ratio']:.2f}" if mode in ev else "-" for t in SENTIMENT]
        cells += [f"{gap.get(f'gap {t}', math.nan):+.4f}" for t in SENTIMENT]
        loss = gap.get("plain_loss", math.nan)
        cells += [f"{loss:.4f}", f"{loss / free:.3f}" if free else "-"]
        print("| " + " | ".join(cells) + " |")
    own = results.get("reference", {}).get("own_eval", {}).get("ratios")
    if own:
        print(f"reference loop's own evaluation (top-p 0.95, top-k 50): ratios {own}")
    print(f"settings: {json.dumps({k: str(v) for k, v in vars(args).items()}, sort_keys=True)}")
    print(f"benchmark so far: {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    if args.output:
        args.output.write_text(json.dumps(results, indent=2, default=str))
