"""Does conditioning on a real metadata field help a model predict text, and does the MeCo
cooldown leave plain text as good as a model trained without metadata?

    python bench/metadata_conditioning.py [--field section|url_domain] [--seed N] [--quick]

About 26 minutes on the shared 2-core machine at load 30-60 (1,200 steps per model, one thread:
two threads were 6x slower under that load); `--quick` about 3.

1. Corpus: the package descriptions of the Debian packages installed on this machine
   (/var/lib/dpkg/status: each package's synopsis line and long description), with their
   `Section:` (libs, utils, python, admin, ...) and `Homepage:` fields: real text with real
   metadata that Debian maintainers wrote, offline, not generated here. Split by a hash of
   the package name: ~15% held out.
2. The conversion's own steps, without Ray (`read_and_chunk` -> labeler `none` ->
   `format_table` -> `write_shard`), with `input.keep_fields: [section, url]` and the prefix
   `Section: {meta.section}` (or `Site: {url_domain}`): shards as `condlabel convert` writes
   them.
3. Two random-init GPT-2s (byte-level BPE trained on the training split), trained in this
   process from those shards by condlabel's training data path (`micro_batches`: prefix from
   the shared prefix module, packing, `loss_on: text`, the cooldown) and its optimizer:
   `meta` with the metadata prefix and a `--cooldown` (default 0.1, MeCo's) of plain text,
   and `plain` on the same text without any prefix.
4. Held-out loss per text token of `meta` with the right metadata, with none, and with the
   wrong metadata (the prefix of another held-out package whose value differs), at the last
   step before the cooldown and at the end; and `plain`'s loss on the same text.

Reported: the three losses, right/none and wrong/right (conditioning helps when right/none < 1
and wrong/right > 1), and meta's plain-text loss after the cooldown / plain's (MeCo: ~1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from tiny_models import train_bpe  # noqa: E402

STATUS = Path("/var/lib/dpkg/status")
EOS = "<|endoftext|>"
TEMPLATES = {"section": "Section: {meta.section}\n", "url_domain": "Site: {url_domain}\n"}


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    import torch

    torch.set_num_threads(args.threads)
    docs = read_packages()
    train_docs, heldout = split(docs, args.heldout)
    print(
        f"corpus: {len(docs)} package descriptions ({sum(len(d['text'].split()) for d in docs)} "
        f"words), {len(heldout)} held out; field {args.field}; load {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="meta-bench-") as tmp:
        work = Path(tmp)
        shards = convert(train_docs, work, args.field)
        tokenizer = build_tokenizer(train_docs, work, args.vocab)
        results = {}
        for name, template in (("meta", TEMPLATES[args.field]), ("plain", "")):
            results[name] = train_and_measure(name, template, shards, heldout, tokenizer, args)
    report(results, args, time.monotonic() - started)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--field", choices=sorted(TEMPLATES), default="section")
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--cooldown", type=float, default=0.1)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1000)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--heldout", type=float, default=0.15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick", action="store_true", help="300 steps of a width-64 model, seq_len 96 (~3 min)"
    )
    args = p.parse_args()
    if args.quick:
        args.steps, args.width, args.seq_len, args.lr = 300, 64, 96, 3e-3
    return args


# --------------------------------------------------------------------------- corpus


def read_packages() -> list[dict]:
    """One document per installed package with a description and a section."""
    docs = []
    for record in STATUS.read_text(encoding="utf-8", errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", record, re.M))
        match = re.search(r"^Description: (.*)\n((?: .*\n?)*)", record, re.M)
        if not match or "Section" not in fields or "Package" not in fields:
            continue
        body = []
        for line in match.group(2).splitlines():
            line = line[1:]
            body.append("" if line.strip() == "." else line)
        text = match.group(1).strip() + "\n\n" + "\n".join(body).strip()
        docs.append(
            {
                "id": fields["Package"],
                "text": text.strip(),
                "section": fields["Section"].split("/")[-1],  # contrib/net -> net
                "url": fields.get("Homepage"),
            }
        )
    if not docs:
        raise SystemExit(f"no package descriptions in {STATUS}")
    return docs


def split(docs: list[dict], share: float) -> tuple[list[dict], list[dict]]:
    def held(doc: dict) -> bool:
        digest = hashlib.blake2b(doc["id"].encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64 < share

    return [d for d in docs if not held(d)], [d for d in docs if held(d)]


def convert(docs: list[dict], work: Path, field: str) -> Path:
    """The conversion's steps on the training split: shards with the kept fields."""
    import pyarrow as pa

    from condlabel.config import load_convert_config
    from condlabel.convert.stages import format_table, label_table, read_and_chunk, write_shard
    from condlabel.labelers import build_labeler

    corpus = work / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs))
    out = work / "tagged"
    out.mkdir()
    cfg = load_convert_config(
        inputs=[str(corpus)],
        output=str(out),
        overrides=[
            "input.keep_fields=[section, url]",
            "labeler.backend=none",
            f"format.prefix_template={json.dumps(TEMPLATES[field])}",
            "chunking.max_words=2000",
        ],
    )
    labeler = build_labeler(cfg.labeler, cfg.storage)
    tables = [t for t in read_and_chunk(str(corpus), cfg, "bench") if isinstance(t, pa.Table)]
    for table in tables:
        labeled = label_table(labeler, table)
        write_shard(
            format_table(cfg.format, labeled, "bench", None, cfg.input),
            cfg.output.uri,
            cfg.storage,
            "zstd",
        )
    return out


def build_tokenizer(docs: list[dict], work: Path, vocab: int):
    from transformers import PreTrainedTokenizerFast

    texts = [d["text"] for d in docs] + [TEMPLATES["section"], TEMPLATES["url_domain"]]
    tok = PreTrainedTokenizerFast(
        tokenizer_object=train_bpe(texts, vocab, [EOS]),
        bos_token=EOS,
        eos_token=EOS,
        unk_token=EOS,
    )
    tok.save_pretrained(work / "tokenizer")
    return tok


# --------------------------------------------------------------------------- training


class TableShard:
    """A pyarrow table read in batches, as a Ray Data shard is (`iter_batches`)."""

    def __init__(self, table, seed: int):
        self.table, self.seed = table, seed

    def iter_batches(self, batch_size: int, batch_format: str, **_):
        order = list(range(self.table.num_rows))
        random.Random(self.seed).shuffle(order)
        shuffled = self.table.take(order)
        for start in range(0, shuffled.num_rows, batch_size):
            yield shuffled.slice(start, batch_size)


def train_and_measure(name, template, shards, heldout, tokenizer, args) -> dict:
    import pyarrow.parquet as pq
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from condlabel.config import TrainConfig
    from condlabel.train.data import micro_batches
    from condlabel.train.optim import make_optimizer

    cfg = TrainConfig.model_validate(
        {
            "data": {
                "prefix": "template",
                "format": {"prefix_template": template or TEMPLATES["section"]},
                # `plain`: every example without a prefix, the same text in the same order.
                "untagged_fraction": 1.0 if not template else 0.0,
                "cooldown_fraction": args.cooldown if template else 0.0,
            },
            "optimization": {
                "seq_len": args.seq_len,
                "micro_batch_size": args.batch,
                "max_steps": args.steps,
                "learning_rate": args.lr,
                "warmup_steps": max(1, args.steps // 20),
                "loss_on": "text",
                "seed": args.seed,
            },
        }
    )
    torch.manual_seed(args.seed)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(tokenizer),
            n_positions=args.seq_len,
            n_embd=args.width,
            n_layer=args.layers,
            n_head=max(1, args.width // 32),
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    optimizer, scheduler = make_optimizer(model, cfg.optimization)
    table = pq.read_table(shards)
    plain_from = int(args.steps * (1 - cfg.data.cooldown_fraction))
    step, epoch, started, measured = 0, 0, time.monotonic(), {}
    while step < args.steps:
        shard = TableShard(table, args.seed + epoch)
        in_cooldown = lambda: step >= plain_from  # noqa: B023, E731 - reads the current step
        for ids, labels in micro_batches(shard, tokenizer, cfg, 0, epoch, in_cooldown):
            if step == plain_from and template:
                measured["before_cooldown"] = heldout_losses(model, tokenizer, heldout, template)
            model.train()
            loss = model(input_ids=torch.tensor(ids), labels=torch.tensor(labels)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % 25 == 0:
                rate = step / (time.monotonic() - started)
                print(
                    f"  {name} step {step}/{args.steps} loss {loss.item():.3f} ({rate:.2f} steps/s)"
                )
            if step >= args.steps:
                break
        epoch += 1
    measured["end"] = heldout_losses(model, tokenizer, heldout, template)
    measured["train_seconds"] = time.monotonic() - started
    measured["epochs"] = epoch
    return measured


def heldout_losses(model, tokenizer, heldout, template) -> dict[str, float]:
    """Mean loss per text token of the held-out descriptions (their first tokens, as many as
    fit `seq_len` after the longest prefix; EOS included when the text fits whole): after the
    right prefix, no prefix, and the prefix of another held-out package with another value."""
    import torch

    from condlabel.config import FormatConfig
    from condlabel.prefix import metadata_fields, render_prefix
    from condlabel.train.data import prompt_ids

    fmt = FormatConfig(prefix_template=template or TEMPLATES["section"])
    prefixes = [
        render_prefix(fmt, "", [], [], True, metadata_fields(d, fmt.prefix_template, "url"))
        for d in heldout
    ]
    rng = random.Random(1)
    wrong = []
    for i, prefix in enumerate(prefixes):
        others = [p for j, p in enumerate(prefixes) if j != i and p != prefix and p]
        wrong.append(rng.choice(others) if others and prefix else "")
    modes = {"none": [""] * len(heldout)}
    if template:
        modes.update(right=prefixes, wrong=wrong)
    model.eval()
    eos, seq_len = tokenizer.eos_token_id, model.config.n_positions
    heads = {mode: [prompt_ids(tokenizer, p, "") for p in pres] for mode, pres in modes.items()}
    texts = []
    for i, doc in enumerate(heldout):
        # The same text tokens under every prefix: as many as fit after the longest prefix.
        text = prompt_ids(tokenizer, "", doc["text"])[1:] + [eos]
        texts.append(text[: seq_len - max(len(h[i]) for h in heads.values())])
    totals = {}
    with torch.no_grad():
        for mode, mode_heads in heads.items():
            loss_sum, count = 0.0, 0
            for start in range(0, len(texts), 32):
                rows = [
                    h + t
                    for h, t in zip(
                        mode_heads[start : start + 32], texts[start : start + 32], strict=True
                    )
                ]
                width = max(len(r) for r in rows)
                # Padding on the right: a causal model's earlier positions never see it.
                batch = torch.tensor([r + [eos] * (width - len(r)) for r in rows])
                logp = torch.log_softmax(model(batch).logits[:, :-1].float(), dim=-1)
                picked = logp.gather(-1, batch[:, 1:, None])[..., 0]
                for j, (row, text) in enumerate(zip(rows, texts[start : start + 32], strict=True)):
                    end = len(row) - 1
                    loss_sum -= picked[j, end - len(text) : end].sum().item()
                    count += len(text)
            totals[mode] = (loss_sum, count)
    return {mode: s / max(1, n) for mode, (s, n) in totals.items()}


# --------------------------------------------------------------------------- the figures


def report(results: dict, args: argparse.Namespace, seconds: float) -> None:
    meta, plain = results["meta"], results["plain"]
    lines = [
        f"steps {args.steps} (cooldown {args.cooldown}), seq_len {args.seq_len}, batch "
        f"{args.batch}, width {args.width}, layers {args.layers}; {seconds / 60:.1f} min; "
        f"load {os.getloadavg()[0]:.1f}"
    ]
    for when in ("before_cooldown", "end"):
        if when not in meta:
            continue
        m = meta[when]
        lines.append(
            f"meta model, {when}: right {m['right']:.3f}  none {m['none']:.3f}  wrong "
            f"{m['wrong']:.3f}  right/none {m['right'] / m['none']:.3f}  wrong/right "
            f"{m['wrong'] / m['right']:.3f}"
        )
    lines.append(
        f"plain text after the cooldown: meta {meta['end']['none']:.3f}  plain model "
        f"{plain['end']['none']:.3f}  ratio {meta['end']['none'] / plain['end']['none']:.3f}"
    )
    print("\n".join(lines))
    print(json.dumps({"args": vars(args), "results": results}, default=str))


if __name__ == "__main__":
    main()
