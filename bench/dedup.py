"""Duplicate-aware labeling: labeler calls and chunks/s with `dedup.enabled` on, as ratios
against labeling every copy (`dedup.enabled=false`), on corpora with 0%, 20% and 50% of their
chunks duplicated (issue 17).

    python bench/dedup.py [--chunks 600] [--max-words 150]

Each corpus holds `--chunks` one-chunk documents: distinct chunk texts cut from the sample
corpus (Python help topics + stdlib docstrings), plus copies of them (a new id, the same text),
shuffled into 4 jsonl files. One local Ray is started before the clock; for each corpus the two
runs (dedup on, then off, each into a fresh output) are timed as wholes: `run_conversion`,
lease, key passes, labeling, the copies' fill and the manifest included. Labeler calls are the
chunks handed to the labeler: rows written minus rows copied. The labeler is the keyphrase
labeler (CPU, fast), so fixed costs weigh more here than with an LLM labeler.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

from condlabel.config import ChunkConfig, load_convert_config
from condlabel.convert.chunking import chunk_document
from condlabel.convert.pipeline import init_ray, run_conversion
from condlabel.convert.reading import Document
from condlabel.demo import sample_documents


def distinct_texts(max_words: int) -> list[str]:
    """Chunk texts of the sample corpus, each of one chunk at `max_words`, all different."""
    cfg = ChunkConfig(max_words=max_words)
    seen: dict[str, None] = {}
    for doc in sample_documents():
        for chunk in chunk_document(Document(doc["id"], doc["text"], "s", 1), cfg):
            seen.setdefault(chunk.text, None)
    return list(seen)


def build_corpus(directory: Path, texts: list[str], chunks: int, share: float) -> None:
    rng = random.Random(17)
    unique = round(chunks * (1 - share))
    if unique > len(texts):
        raise SystemExit(f"the sample corpus has {len(texts)} distinct chunks, {unique} needed")
    picked = texts[:unique]
    docs = picked + [rng.choice(picked) for _ in range(chunks - unique)]
    rng.shuffle(docs)
    directory.mkdir(parents=True)
    for i in range(4):
        rows = [{"id": f"d{j}", "text": t} for j, t in enumerate(docs) if j % 4 == i]
        (directory / f"part-{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def run(corpus: Path, output: Path, max_words: int, dedup: bool) -> dict:
    cfg = load_convert_config(
        inputs=[str(corpus)],
        output=str(output),
        overrides=[f"chunking.max_words={max_words}", f"dedup.enabled={str(dedup).lower()}"],
    )
    summary = run_conversion(cfg)
    calls = summary.rows_written - summary.labeler_calls_saved
    return {"rows": summary.rows_written, "calls": calls, "seconds": summary.seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, default=600, help="chunks per corpus")
    parser.add_argument("--max-words", type=int, default=150)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="condlabel-bench-dedup-"))
    texts = distinct_texts(args.max_words)
    init_ray(load_convert_config())
    print(f"{'duplicated':>10} {'chunks':>7} {'calls on/off':>13} {'calls ratio':>11} "
          f"{'chunks/s on':>11} {'chunks/s off':>12} {'speed ratio':>11}")  # fmt: skip
    for share in (0.0, 0.2, 0.5):
        corpus = work / f"corpus-{share}"
        build_corpus(corpus, texts, args.chunks, share)
        on = run(corpus, work / f"on-{share}", args.max_words, dedup=True)
        off = run(corpus, work / f"off-{share}", args.max_words, dedup=False)
        if on["rows"] != off["rows"] or off["calls"] != args.chunks:
            raise SystemExit(f"runs disagree: {on} vs {off}")
        rate_on, rate_off = on["rows"] / on["seconds"], off["rows"] / off["seconds"]
        print(
            f"{share:>10.0%} {on['rows']:>7} {on['calls']:>6}/{off['calls']:<6} "
            f"{on['calls'] / off['calls']:>11.2f} {rate_on:>11.1f} {rate_off:>12.1f} "
            f"{rate_on / rate_off:>11.2f}"
        )


if __name__ == "__main__":
    main()
