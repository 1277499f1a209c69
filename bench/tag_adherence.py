"""Tag adherence end to end: raw text -> `condlabel convert` -> `condlabel train` ->
`condlabel eval`, with the real commands as subprocesses against an S3 server process.

    python bench/tag_adherence.py [--quick] [--steps N] [--sentences N] [--width N] ...

1. Corpus: the fortune cookies of Debian's `fortunes` package (/usr/share/games/fortunes):
   ~15k short human-written quips, jokes and aphorisms, many of them plainly positive or
   negative, offline and installable by apt (`apt-get install -y fortunes`). Uploaded as jsonl.gz
   to a `moto_server` process this script starts on 127.0.0.1 (and stops at the end).
2. `condlabel convert` twice: VADER control tokens at sentence level (labeler `none`), and the
   keyphrase labeler on whole fortunes (tags and synopsis) for the tag conditionals.
3. A random-init GPT-2 built here (byte-level BPE trained on the corpus), trained with
   `condlabel train` (Ray Train, 2 workers, checkpoints in S3) on both outputs: once with
   prefixes, once on the same text without any (`data.untagged_fraction=1`), and, unless
   `--cooldown 0`, once with prefixes and a MeCo cooldown (`data.cooldown_fraction`).
4. `condlabel eval` of `<|pos|>`, `<|neg|>` and the corpus's most frequent tags next to the
   unconditioned baseline; the held-out loss of plain text with and without its VADER prefix.

`--versus-reference` runs instead the product's training defaults beside the plain reference
loop, and `--ablation` variants of the defaults (`bench/adherence_vs_reference.py`).

Printed goals, as ratios: misalignment / baseline <= 0.5 for both sentiment tokens; share of
generations whose tags overlap the conditioned ones / baseline's >= 2; plain-text held-out loss
/ the prefix-free model's <= 1.05.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from tiny_models import train_bpe  # noqa: E402

FORTUNES = Path("/usr/share/games/fortunes")
# Pictures and word lists, not sentences.
NOT_PROSE = {"art", "ascii-art", "definitions", "translate-me", "perl", "linuxcookie"}
EOS = "<|endoftext|>"
BUCKET = "adherence"
SENTIMENT = ["<|pos|>", "<|neg|>"]
NEUTRAL = "<|neutral|>"
"""`--vader-mode three_way`: the token of the neutral band."""
HAS_POS, HAS_NEG = "<|has-pos|>", "<|has-neg|>"
"""`--vader-mode two_sided`: the other side of each of its two binary splits."""
CONDLABEL = str(Path(sys.executable).parent / "condlabel")
MOTO = str(Path(sys.executable).parent / "moto_server")

# --------------------------------------------------------------------------- the benchmark


def main() -> None:
    args = parse_args()
    if args.versus_reference:
        import adherence_vs_reference

        adherence_vs_reference.main(args)
        return
    work = Path(tempfile.mkdtemp(prefix="adherence-"))
    started = time.perf_counter()
    with S3Server() as endpoint:
        env = bench_env(endpoint, work)
        train_docs, heldout = split_corpus(read_fortunes(args.sentences), args.seed)
        upload_corpus(train_docs, env)
        convert(env, "sentiment", sentiment_convert(sentiment_classifiers(args)))
        convert(env, "keyphrase", KEYPHRASE_CONVERT)
        build_base_model(work / "base", train_docs, args)
        put_dir(env, work / "base", f"s3://{BUCKET}/base")
        tags = top_tags(env, args.tags)
        print(f"tag conditionals: {tags}", flush=True)

        runs = {"conditioned": [], "plain": ["data.untagged_fraction=1.0"]}
        if args.cooldown > 0:
            runs["cooldown"] = [f"data.cooldown_fraction={args.cooldown}"]
        runs = {name: extra for name, extra in runs.items() if name in args.runs}
        results = {}
        for name, extra in runs.items():
            model_uri = train(env, name, [*train_overrides(args), *extra])
            loss = heldout_loss(model_uri, heldout, sentiment_classifiers(args))
            results[name] = {"loss": loss, "evals": {}}
            if name == "plain":
                continue
            for scale in dict.fromkeys([1.0, args.guidance]):
                results[name]["evals"][scale] = evaluate(
                    env, work, name, model_uri, tags, args, scale
                )
            print_results(results, args, time.perf_counter() - started)  # so far
    print_results(results, args, time.perf_counter() - started)
    shutil.rmtree(work, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a small run that checks the chain works")
    p.add_argument("--steps", type=int, help="optimizer steps per training run (default 1200)")
    p.add_argument("--sentences", type=int, help="corpus size in sentences (default 14000)")
    p.add_argument("--width", type=int, help="GPT-2 width (default 128)")
    p.add_argument("--layers", type=int, help="GPT-2 layers (default 4)")
    p.add_argument("--vocab", type=int, help="BPE vocabulary (default 4000)")
    p.add_argument("--seq-len", type=int, help="packed sequence length (default 128)")
    p.add_argument("--micro-batch", type=int, help="sequences per worker per step (default 8)")
    p.add_argument("--lr", type=float,
                   help="peak learning rate (default 3e-3; 2e-3 with --versus-reference)")  # fmt: skip
    p.add_argument("--samples", type=int, help="generations per conditional (default 200)")
    p.add_argument("--tags", type=int, help="tag conditionals (most frequent tags; default 3)")
    p.add_argument("--cooldown", type=float, help="cooldown fraction of a 3rd run; 0: skip it")
    p.add_argument("--packing", choices=["documents", "concat"], default="documents",
                   help="optimization.packing of every training run")  # fmt: skip
    p.add_argument("--guidance", type=float, default=3.0,
                   help="also evaluate with generation.guidance_scale=G (1: unguided only)")  # fmt: skip
    p.add_argument("--vader-threshold", type=float, default=0.0,
                   help="binary_threshold of the sentiment conversion (VADER compound at or "
                   "above it is <|pos|>)")  # fmt: skip
    p.add_argument("--vader-mode", choices=["binary", "three_way", "two_sided"],
                   default="binary",
                   help="binary: every sentence <|pos|> or <|neg|> by --vader-threshold; "
                   f"three_way: VADER's own bands, the neutral one tagged {NEUTRAL}; "
                   "two_sided: two binary splits, <|pos|> (compound "
                   f">= 0) or {HAS_NEG}, and {HAS_POS} (>= 0.05) or <|neg|>, each token dropped "
                   "with --control-drop in training")  # fmt: skip
    p.add_argument("--control-drop", type=float,
                   help="data.control_token_drop_probability (default 0.5 with two_sided, else 0)")  # fmt: skip
    p.add_argument("--runs", default="conditioned,plain,cooldown",
                   help="which training runs to make, comma-separated (the loss ratio needs "
                   "`plain`)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)
    from adherence_vs_reference import add_arguments

    add_arguments(p)
    args = p.parse_args()
    if args.versus_reference:
        args.lr = args.lr or 2e-3  # the reference loop's
        return args
    args.lr = args.lr or 3e-3
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(args.runs) - {"conditioned", "plain", "cooldown"}
    if unknown:
        p.error(
            f"--runs: unknown run(s) {sorted(unknown)}; choose from conditioned, plain, cooldown"
        )
    full = {"steps": 1200, "sentences": 14000, "width": 128, "layers": 4, "vocab": 4000,
            "seq_len": 128, "micro_batch": 8, "samples": 200, "tags": 3, "cooldown": 0.1}  # fmt: skip
    quick = {"steps": 40, "sentences": 1500, "width": 64, "layers": 2, "vocab": 1000,
             "seq_len": 64, "micro_batch": 4, "samples": 24, "tags": 2, "cooldown": 0.0}  # fmt: skip
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# --------------------------------------------------------------------------- S3 and the corpus


class S3Server:
    """A `moto_server` process on a free loopback port; the endpoint URL while it runs."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [MOTO, "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.endpoint = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return self.endpoint
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise RuntimeError(f"moto_server did not start on port {port}")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def bench_env(endpoint: str, work: Path) -> dict[str, str]:
    """The environment of every command: the S3 server, offline hub, a cache of our own."""
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HF_HUB_OFFLINE": "1",
        "CONDLABEL_CACHE": str(work / "cache"),
        "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("RAY_ADDRESS", None)  # each command starts its own embedded Ray
    os.environ.update({k: env[k] for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                           "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
                                           "CONDLABEL_CACHE")})  # fmt: skip
    return env


def read_fortunes(max_sentences: int) -> list[str]:
    """Fortunes (one document each, whitespace collapsed) up to about `max_sentences`."""
    if not FORTUNES.is_dir():
        sys.exit(f"{FORTUNES} is missing: install the corpus with `apt-get install -y fortunes`")
    docs: list[str] = []
    sentences = 0
    for path in sorted(FORTUNES.iterdir()):
        if path.suffix or path.name in NOT_PROSE:
            continue
        for entry in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            text = " ".join(entry.split())
            if 3 <= len(text.split()) <= 120:
                docs.append(text)
    random.Random(0).shuffle(docs)
    kept = []
    for doc in docs:
        kept.append(doc)
        sentences += max(1, len(re.findall(r"[.!?](\s|$)", doc)))
        if sentences >= max_sentences:
            break
    return kept


def split_corpus(docs: list[str], seed: int) -> tuple[list[str], list[str]]:
    """(training documents, held-out documents: 5%, at most 300)."""
    docs = list(docs)
    random.Random(seed).shuffle(docs)
    cut = min(300, max(10, len(docs) // 20))
    return docs[cut:], docs[:cut]


def upload_corpus(docs: list[str], env: dict[str, str]) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]})
    fs.mkdir(BUCKET)
    lines = "".join(
        json.dumps({"id": f"fortune-{i}", "text": t}) + "\n" for i, t in enumerate(docs)
    )
    fs.pipe_file(f"{BUCKET}/corpus/fortunes.jsonl.gz", gzip.compress(lines.encode()))


def put_dir(env: dict[str, str], local: Path, uri: str) -> None:
    import s3fs

    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": env["AWS_ENDPOINT_URL"]})
    fs.put(str(local) + "/", uri.removeprefix("s3://") + "/", recursive=True)


# --------------------------------------------------------------------------- the commands

CHUNK_WORDS = 80


def vader_settings(args: argparse.Namespace) -> dict:
    """The sentiment conversion's VADER settings (the held-out loss labels its chunks alike).

    Every sentence gets a token, so a text without one is a true unconditioned sample: the
    reference's binary mode, or three-way with a token of its own for the neutral band (plain
    three_way would leave neutral text untagged, and the baseline would be a neutral-conditioned
    model). The judge of `condlabel eval` stays three_way."""
    if args.vader_mode == "binary":
        return {"mode": "binary", "binary_threshold": args.vader_threshold}
    return {
        "mode": "three_way",
        "tokens": {"positive": "<|pos|>", "negative": "<|neg|>", "neutral": NEUTRAL},
    }


def sentiment_classifiers(args: argparse.Namespace) -> list[dict]:
    """The sentiment conversion's classifiers (the held-out loss labels its chunks alike).

    `two_sided` labels each sentence by two binary splits, so `<|pos|>` means "nothing
    negative" (compound >= 0: the side of threshold 0 that holds the neutral band, which binary
    mode gets learned) and `<|neg|>` "nothing positive" (compound < 0.05: the same for the other
    polarity); training drops each token at random so that each is also trained alone."""
    if args.vader_mode != "two_sided":
        return [{"backend": "vader", "vader": vader_settings(args)}]
    return [
        {
            "backend": "vader",
            "name": "vader",
            "vader": {"mode": "binary", "binary_threshold": 0.0,
                      "tokens": {"positive": "<|pos|>", "negative": HAS_NEG}},
        },
        {
            "backend": "vader",
            "name": "vader_pos",
            "vader": {"mode": "binary", "binary_threshold": 0.05,
                      "tokens": {"positive": HAS_POS, "negative": "<|neg|>"}},
        },
    ]  # fmt: skip


def control_drop(args: argparse.Namespace) -> float:
    if args.control_drop is not None:
        return args.control_drop
    return 0.5 if args.vader_mode == "two_sided" else 0.0


def control_tokens(args: argparse.Namespace) -> list[str]:
    """The tokens the sentiment conversion can give: `<|neutral|>` only in three_way mode (an
    embedding row no example trains is an untrained row the sampler can still draw)."""
    if args.vader_mode == "two_sided":
        return [*SENTIMENT, HAS_POS, HAS_NEG]
    return [*SENTIMENT, NEUTRAL] if args.vader_mode == "three_way" else list(SENTIMENT)


def sentiment_convert(classifiers: list[dict]) -> list[str]:
    return [
        "chunking.unit=sentence",
        f"chunking.max_words={CHUNK_WORDS}",
        "labeler.backend=none",
        f"classifiers={json.dumps(classifiers)}",
    ]


KEYPHRASE_CONVERT = [
    "chunking.max_words=200",
    "labeler.backend=keyphrase",
    "labeler.keyphrase.num_tags=3",
    "labeler.keyphrase.synopsis_sentences=1",
]
# Two actors of half a CPU: an actor pool that takes every CPU starves the readers and hangs.
COMPUTE = ["compute.actors=2", "compute.num_cpus_per_actor=0.5", "compute.num_cpus_per_reader=0.25"]


def run(env: dict[str, str], *args: str) -> str:
    """One `condlabel` command; its output is echoed, and a failure stops the benchmark."""
    started = time.perf_counter()
    done = subprocess.run([CONDLABEL, *args], env=env, capture_output=True, text=True, cwd=REPO)
    took = time.perf_counter() - started
    print(f"$ condlabel {' '.join(args[:1])} ... ({took:.0f} s)", flush=True)
    if done.returncode != 0:
        sys.exit(f"condlabel {args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done.stdout


def overrides(pairs: list[str]) -> list[str]:
    return [arg for pair in pairs for arg in ("--set", pair)]


def convert(env: dict[str, str], name: str, settings: list[str]) -> None:
    run(
        env,
        "convert",
        "--input",
        f"s3://{BUCKET}/corpus/",
        "--output",
        f"s3://{BUCKET}/tagged-{name}/",
        *overrides([*settings, *COMPUTE]),
    )


def build_base_model(out: Path, docs: list[str], args: argparse.Namespace) -> None:
    """A random-init GPT-2 with a byte-level BPE trained on the training documents."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(docs, args.vocab, [EOS]),
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
    )
    tok.save_pretrained(out)
    config = GPT2Config(
        vocab_size=len(tok),
        n_positions=max(256, args.seq_len),
        n_embd=args.width,
        n_layer=args.layers,
        n_head=max(1, args.width // 32),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    torch.manual_seed(args.seed)
    GPT2LMHeadModel(config).save_pretrained(out, safe_serialization=True)


def top_tags(env: dict[str, str], count: int) -> list[str]:
    from condlabel.readback import read_tagged, tag_counts

    return [
        t for t, _ in tag_counts(read_tagged(f"s3://{BUCKET}/tagged-keyphrase/")).most_common(count)
    ]


def train_overrides(args: argparse.Namespace) -> list[str]:
    steps = args.steps
    return [
        f"data.paths=[s3://{BUCKET}/tagged-sentiment/, s3://{BUCKET}/tagged-keyphrase/]",
        "data.prefix=template",
        "data.untagged_fraction=0.1",  # the unconditioned baseline must be a trained mode too
        "data.shuffle_tags=true",
        "data.synopsis_drop_probability=0.5",  # tags-only conditionals are evaluated
        "data.shuffle_buffer_rows=2000",  # in read order, neighbours give the sentiment away
        f"data.control_token_drop_probability={control_drop(args)}",
        f"model.path=s3://{BUCKET}/base",
        "model.new_token_init=random",
        f"model.control_tokens={json.dumps(control_tokens(args))}",
        f"optimization.seq_len={args.seq_len}",
        f"optimization.micro_batch_size={args.micro_batch}",
        f"optimization.max_steps={steps}",
        f"optimization.learning_rate={args.lr}",
        f"optimization.warmup_steps={max(1, steps // 20)}",
        "optimization.loss_on=text",
        f"optimization.packing={args.packing}",
        "optimization.precision=fp32",
        f"optimization.seed={args.seed}",
        f"optimization.log_every_steps={max(1, steps // 10)}",
        f"checkpoint.storage_path=s3://{BUCKET}/runs",
        f"checkpoint.every_steps={max(1, steps // 2)}",
        "compute.num_workers=2",
        "compute.cpus_per_worker=0.5",
    ]


def train(env: dict[str, str], name: str, settings: list[str]) -> str:
    out = run(env, "train", "--json", *overrides([*settings, f"checkpoint.name={name}"]))
    summary = json.loads(out[out.index("{") :])
    history = summary.get("history") or [{}]
    print(f"  {name}: final loss {history[-1].get('loss', float('nan')):.3f}", flush=True)
    return summary["export_uri"]


def judge_file(work: Path) -> Path:
    """The labeler that judges the tag conditionals, as a labeler config file."""
    path = work / "judge-labeler.yaml"
    path.write_text("backend: keyphrase\nkeyphrase: {num_tags: 3, synopsis_sentences: 1}\n")
    return path


def evaluate(
    env: dict[str, str], work: Path, name: str, model_uri: str, tags: list[str], args, scale: float
) -> dict:
    conditionals = [{"name": t, "control_tokens": [t]} for t in SENTIMENT]
    conditionals += [{"name": f"tag:{t}", "tags": [t]} for t in tags]
    report = work / f"eval-{name}-g{scale:g}.json"
    run(
        env,
        "eval",
        *overrides(
            [
                f"model={model_uri}",
                "prefix=template",
                f"conditionals={json.dumps(conditionals)}",
                "prompts=['']",
                "generation.max_new_tokens=32",
                f"generation.num_samples={args.samples}",
                "generation.batch_size=32",
                f"generation.guidance_scale={scale}",
                f"generation.seed={args.seed}",
                "classifiers=[{backend: vader}]",
                f"labeler_config={judge_file(work)}",
                "device=cpu",
                f"output={report}",
            ]
        ),
    )
    return json.loads(report.read_text())


# --------------------------------------------------------------------------- held-out loss


def heldout_loss(model_uri: str, docs: list[str], classifiers: list[dict]) -> dict[str, float]:
    """Mean loss per text token of the held-out fortunes, chunked as the sentiment conversion
    chunks (one sentence each): plain (after EOS, as an untagged training example) and after
    the VADER tokens the conversion gives the chunk (`classifiers`, as in training).

    Chunked, not whole: training saw `<|pos|> sentence EOS`, so a whole multi-sentence fortune
    after a token asks the model for text it learned to end (the first version of this loss
    did that, and the prefix seemed to cost 0.28 nats per token)."""
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
    # The conversion's own step, so the tokens come in the order and form training saw.
    labelled = classify_table(
        build_classifiers([ClassifierConfig.model_validate(c) for c in classifiers]),
        pa.table({"text": texts}),
    )
    prefixes = ["".join(tokens) for tokens in labelled.column("control_tokens").to_pylist()]
    loaded = load_model(model_uri, architecture="causal", device="cpu")
    model, tokenizer = loaded.model, loaded.tokenizer
    totals = {"plain": [0.0, 0], "prefixed": [0.0, 0]}
    with torch.no_grad():
        for text, prefix in zip(texts, prefixes, strict=True):
            for mode, pre in (("plain", ""), ("prefixed", prefix)):
                ids = prompt_ids(tokenizer, pre, text)
                n_text = len(ids) - len(prompt_ids(tokenizer, pre, ""))
                logits = model(torch.tensor([ids])).logits[0, :-1]
                losses = torch.nn.functional.cross_entropy(
                    logits, torch.tensor(ids[1:]), reduction="none"
                )
                totals[mode][0] += losses[-n_text:].sum().item()
                totals[mode][1] += n_text
    return {mode: s / max(1, n) for mode, (s, n) in totals.items()}


# --------------------------------------------------------------------------- the figures


def ratio(a: float | None, b: float | None) -> float:
    if a is None or b is None:
        return math.nan
    return a / b if b else (math.inf if a else math.nan)


def print_results(results: dict, args: argparse.Namespace, seconds: float) -> None:
    plain = results.get("plain")
    plain_loss = plain["loss"]["plain"] if plain else None
    print(f"\nsettings: {json.dumps(vars(args), sort_keys=True)}")
    if plain_loss is not None:
        print(f"plain-text held-out loss of the prefix-free model: {plain_loss:.4f}")
    for name, res in results.items():
        for scale, evaluated in res["evals"].items():
            print(f"\n== {name} model, guidance_scale {scale:g}")
            print_eval(evaluated)
        if name == "plain":
            continue
        loss = res["loss"]
        line = f"held-out loss: plain {loss['plain']:.4f}, with prefix {loss['prefixed']:.4f}"
        if plain_loss is not None:
            r = ratio(loss["plain"], plain_loss)
            line += f"; plain / prefix-free model {r:.3f} ({'met' if r <= 1.05 else 'missed'}, goal <= 1.05)"
        print(line)
    print(f"\nbenchmark so far: {seconds / 60:.1f} min", flush=True)


def print_eval(evaluated: dict) -> None:
    print(f"{'conditional':<28} {'n':>4} {'score':>7} {'baseline':>8} {'ratio':>6}  goal")
    for r in evaluated["results"]:
        cond, base = r["misalignment"], r["baseline_misalignment"]
        if r["name"] in SENTIMENT:
            label, value, ref = "misaligned", cond, base
            goal = ratio(value, ref) <= 0.5
        else:  # overlap share: generations whose tags share a conditioned tag
            label = "tag overlap"
            value = None if cond is None else 1 - cond
            ref = None if base is None else 1 - base
            goal = ratio(value, ref) >= 2
        print(
            f"{r['name'] + ' ' + label:<28} {r['n']:>4} {_pct(value):>7} {_pct(ref):>8} "
            f"{ratio(value, ref):>6.2f}  {'met' if goal else 'missed'}"
        )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


if __name__ == "__main__":
    main()
