"""Chunks/s of the whole Ray pipeline vs a bare Python loop running the same labeler over the
same chunks, measured side by side in one run (issue 2; goal: ratio >= 0.9).

    python bench/pipeline_efficiency.py [--copies 3] [--max-words 400]

The bare loop reads, chunks and labels in one process (no Ray, no writing). The pipeline runs
read -> chunk -> label actor pool -> format -> parquet write on a local Ray that is started
before the clock starts (cluster start-up is a one-time cost, printed separately). Each Ray
variant runs in its own subprocess so it gets a fresh Ray.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from condlabel.config import load_convert_config
from condlabel.convert.chunking import chunk_document
from condlabel.convert.reading import iter_file
from condlabel.demo import sample_documents
from condlabel.labelers import build_labeler


def build_corpus(directory: Path, copies: int, files: int = 4) -> list[Path]:
    # Every paragraph of a copy is marked with its copy number, so that no two chunks have the
    # same text: the pipeline's per-run dedup would otherwise label one copy of each chunk and
    # copy its labels, doing a fraction of the bare loop's labeling (as it did up to issue 16).
    docs = [
        {"id": f"{d['id']}-{c}", "text": mark_copy(d["text"], c)}
        for c in range(copies)
        for d in sample_documents()
    ]
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(files):
        path = directory / f"part-{i}.jsonl"
        path.write_text("".join(json.dumps(d) + "\n" for d in docs[i::files]))
        paths.append(path)
    return paths


def mark_copy(text: str, copy: int) -> str:
    return "\n\n".join(f"{p} (copy {copy}.)" for p in text.split("\n\n"))


def bare_loop(paths: list[Path], overrides: list[str]) -> tuple[int, float]:
    import fsspec

    cfg = load_convert_config(overrides=overrides)
    labeler = build_labeler(cfg.labeler)
    fs = fsspec.filesystem("file")
    started = time.perf_counter()
    batch: list[str] = []
    n = 0
    for path in paths:
        for doc in iter_file(fs, str(path), str(path), cfg.input):
            for chunk in chunk_document(doc, cfg.chunking):
                batch.append(chunk.text)
                if len(batch) == cfg.compute.batch_size:
                    n += len(labeler.label(batch))
                    batch = []
    if batch:
        n += len(labeler.label(batch))
    return n, time.perf_counter() - started


def parallel_bare_loops(paths: list[Path], overrides: list[str], processes: int) -> float:
    """Chunks/s of `processes` bare loops started together, each over its share of the files:
    what this machine's cores give this labeler without Ray (the ceiling for the pipeline)."""
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--bare",
                json.dumps(overrides),
                *map(str, paths[i::processes]),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(r["chunks"] for r in results) / max(r["seconds"] for r in results)


def pipeline_variant(corpus: str, output: str, overrides: list[str]) -> None:
    """Run in a subprocess: start Ray, then time the conversion alone."""
    from condlabel.convert.pipeline import init_ray, run_conversion

    cfg = load_convert_config(inputs=[corpus], output=output, overrides=overrides)
    t0 = time.perf_counter()
    init_ray(cfg)
    startup = time.perf_counter() - t0
    summary = run_conversion(cfg)
    print(
        json.dumps(
            {
                "rows": summary.rows_written,
                "seconds": summary.seconds,
                "actors": summary.labeler_actors,
                "copied": summary.labeler_calls_saved,
                "busy": summary.labeler_busy_share,
                "ray_startup_s": startup,
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=3, help="copies of the sample corpus")
    parser.add_argument("--max-words", type=int, default=2000)
    parser.add_argument("--variant", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--bare", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        corpus, output, overrides = args.variant
        pipeline_variant(corpus, output, json.loads(overrides))
        return
    if args.bare:
        n, seconds = bare_loop([Path(p) for p in args.bare[1:]], json.loads(args.bare[0]))
        print(json.dumps({"chunks": n, "seconds": seconds}))
        return

    work = Path(tempfile.mkdtemp(prefix="condlabel-bench-"))
    build_corpus(work / "corpus", args.copies)
    common = [f"chunking.max_words={args.max_words}"]
    files = sorted((work / "corpus").glob("*.jsonl"))
    n_bare, t_bare = bare_loop(files, common)
    bare_rate = n_bare / t_bare
    print(f"bare loop              {n_bare} chunks in {t_bare:6.1f} s = {bare_rate:6.1f} chunks/s")
    pair = parallel_bare_loops(files, common, 2)
    print(
        f"2 bare loops at once   {pair:6.1f} chunks/s = {pair / bare_rate:.2f}x one loop "
        "(what two processes get from this machine, no Ray)"
    )
    variants = {
        "pipeline, defaults": [],
        "pipeline, 1 actor": ["compute.actors=1"],
    }
    for name, extra in variants.items():
        out = work / f"out-{len(name)}-{abs(hash(name))}"
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--variant",
                str(work / "corpus"),
                str(out),
                json.dumps(common + extra),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        rate = r["rows"] / r["seconds"]
        print(
            f"{name:<22} {r['rows']} chunks in {r['seconds']:6.1f} s = {rate:6.1f} chunks/s "
            f"({r['actors']} actor(s) busy {r['busy'] or 0:.0%}, {r['copied']} copied by dedup; "
            "Ray start-up "
            f"{r['ray_startup_s']:.1f} s not counted)  "
            f"ratio vs bare loop: {rate / bare_rate:.2f}"
        )
        if r["copied"] > r["rows"] // 100:
            sys.exit(f"{name}: {r['copied']} chunks copied by dedup; the corpus must be distinct")
        if r["rows"] != n_bare:
            sys.exit(f"{name}: {r['rows']} chunks written, the bare loop labeled {n_bare}")


if __name__ == "__main__":
    main()
