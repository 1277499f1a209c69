"""When labeled rows reach the output: Ray Data's 128 MiB default block vs `compute.block_bytes`,
side by side in one run, on one input file that is one read task.

    python bench/block_size.py [--mb 4] [--rows-per-file 64] [--blocks 134217728,4194304,...]

A labeler actor's output leaves it one block at a time. With one block per read task, nothing
of the task reaches the writer before the actor has labeled all of it, and an actor killed just
before that loses the whole task's labels. For each block size this prints, from the run's
start: when the first shard landed and its share of the run (until then every labeled row
sits in the actor, which a kill would lose), the run's total time (what smaller blocks cost),
and the shards (a writer task writes its blocks' remainder as a short shard). Each variant
runs in its own subprocess (`condlabel convert`, embedded Ray, one keyphrase actor), so each
gets a fresh Ray.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_efficiency import build_corpus

from condlabel.demo import sample_documents


def build_file(directory: Path, megabytes: float) -> Path:
    """One JSON-lines file of distinct sample documents (pipeline_efficiency's marked copies),
    at least `megabytes` MB."""
    one_copy = sum(len(json.dumps(d)) + 1 for d in sample_documents())
    [path] = build_corpus(directory, copies=math.ceil(megabytes * 1e6 / one_copy), files=1)
    return path


def run(source: Path, output: Path, block_bytes: int, overrides: list[str]) -> dict:
    exe = str(Path(sys.executable).parent / "condlabel")
    args = [exe, "convert", "--input", str(source), "--output", str(output), "--json"]
    for override in [f"compute.block_bytes={block_bytes}", "compute.actors=1", *overrides]:
        args += ["--set", override]
    env = {**os.environ, "RAY_ADDRESS": ""}
    started = time.monotonic()
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = None
    while proc.poll() is None:
        if first is None and any(output.glob("part-*.parquet")):
            first = time.monotonic() - started
        time.sleep(0.05)
    total = time.monotonic() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"block_bytes={block_bytes}: exit {proc.returncode}\n{err[-3000:]}")
    summary = json.loads(out)
    rows = [pq.ParquetFile(p).metadata.num_rows for p in sorted(output.glob("part-*.parquet"))]
    return {
        "block_bytes": block_bytes,
        "first_shard_s": round(first or total, 1),
        "first_shard_share": round((first or total) / total, 2),
        "total_s": round(total, 1),
        "chunks": summary["chunks"],
        "shards": len(rows),
        "short_shards": sum(r < max(rows) for r in rows),
        "rows_min_median_max": [min(rows), statistics.median(rows), max(rows)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=4.0, help="size of the one input file")
    parser.add_argument(
        "--blocks",
        default=f"{128 * 2**20},{4 * 2**20},{2**20},{2**18}",
        help="block sizes to compare, bytes (the first is Ray's default)",
    )
    parser.add_argument(
        "--rows-per-file",
        type=int,
        default=64,
        help="output.rows_per_file, scaled down with the file so that it holds many shards",
    )
    parser.add_argument("--set", action="append", default=[], help="more config overrides")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = build_file(Path(tmp) / "in", args.mb)
        docs = sum(1 for _ in source.open())
        print(f"one file, {source.stat().st_size / 1e6:.1f} MB, {docs} documents", flush=True)
        print(f"load before: {os.getloadavg()[0]:.2f}", flush=True)
        results = []
        for i, block in enumerate(int(b) for b in args.blocks.split(",")):
            overrides = [f"output.rows_per_file={args.rows_per_file}", *args.set]
            result = run(source, Path(tmp) / f"out-{i}", block, overrides)
            print(json.dumps(result), flush=True)
            results.append(result)
        print(f"load after: {os.getloadavg()[0]:.2f}")
        base = results[0]
        for r in results[1:]:
            print(
                f"block {r['block_bytes']:>10}: first shard at {r['first_shard_s']} s vs "
                f"{base['first_shard_s']} s; run time {r['total_s'] / base['total_s']:.2f}x "
                f"the {base['block_bytes']}-byte block's; shards {r['shards']} vs {base['shards']}"
            )


if __name__ == "__main__":
    main()
