"""A rerun over a large, complete output: how long it takes to decide "nothing to do", with what
peak memory on the driver; then 1% more input files, of which it must label exactly those
(issue 16; goal at 20M chunks over 10,000 files: <= 60 s and <= 1 GB driver RSS).

    python bench/rerun_scale.py                       # 1M, 5M and 20M chunks, growth shown
    python bench/rerun_scale.py --chunks 1000000 --files 10000 --json

The synthetic output is what a real run leaves: input files (one short document = one chunk
per line), parquet shards with the key columns a real run writes (doc_id, doc_hash computed by
the real chunking code, chunk_index, labeler, run_id, source; `output.rows_per_file` large, so
20M chunks are 1,000 shards rather than 39,000) and the `_ledger/` entries of its files. Each
rerun is `run_conversion` in a fresh process, so the peak RSS printed is the driver's alone;
the reruns join one local Ray started before the clock (cluster start-up is not the cost being
measured; the rerun with nothing to do does not use it).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from condlabel.config import load_convert_config
from condlabel.convert.chunking import chunk_document, doc_version
from condlabel.convert.pipeline import run_fingerprint
from condlabel.convert.reading import Document
from condlabel.runs.ledger import ledger_fingerprint, write_ledger
from condlabel.runs.scope import write_started
from condlabel.runs.summary import FileStats
from condlabel.storage import InputFile, expand_inputs

TOPICS = ["tide pools", "lighthouses", "salt marshes", "fog horns", "harbour cranes"]
OVERRIDES = ["output.rows_per_file=20000", "compute.batch_size=64", "compute.actors=1"]
SYNTHETIC_RUN = "20260101T000000.000000Z-synth0"


def text_of(i: int) -> str:
    return f"Record {i} notes the {TOPICS[i % 5]} near town {i % 977} in spring {i % 31}."


def _write_group(job: tuple[str, str, int, int, int, str]) -> None:
    """Input files [first, last) of `per_file` documents each, and the one shard holding their
    chunks (as a real run would have written them)."""
    work, output, first, last, per_file, labeler = job
    cfg = load_convert_config(overrides=OVERRIDES)
    cols: dict[str, list] = {k: [] for k in ("doc_id", "doc_hash", "chunk_index", "source")}
    for f in range(first, last):
        path = Path(work) / "in" / f"f{f:06d}.jsonl"
        lines = []
        for i in range(f * per_file, (f + 1) * per_file):
            text = text_of(i)
            lines.append(json.dumps({"id": f"d{i}", "text": text}))
            cols["doc_id"].append(f"d{i}")
            cols["doc_hash"].append(doc_version(text, cfg.chunking))
            cols["chunk_index"].append(0)
            cols["source"].append(str(path))
        path.write_text("\n".join(lines) + "\n")
    if output:
        n = len(cols["doc_id"])
        table = pa.table(
            {
                **cols,
                "chunk_index": pa.array(cols["chunk_index"], pa.int32()),
                "labeler": [labeler] * n,
                "run_id": [SYNTHETIC_RUN] * n,
            }
        )
        pq.write_table(table, Path(output) / f"part-synth{first:08d}.parquet")


def generate(work: Path, chunks: int, files: int) -> float:
    """Inputs, shards and ledger of a complete output of `chunks` chunks over `files` files."""
    started = time.perf_counter()
    cfg = load_convert_config(overrides=OVERRIDES)
    per_file = max(1, chunks // files)
    assert len(chunk_document(Document("d0", text_of(0), "s", 1), cfg.chunking)) == 1
    (work / "in").mkdir(parents=True)
    (work / "out").mkdir()
    labeler = run_fingerprint(cfg)
    fp = ledger_fingerprint(cfg, labeler)
    # As a run does before its first shard (`_ledger/_started/`): the files it reads (matched
    # by URI; their size and version are recorded for the reader's benefit only).
    reads = [InputFile(str(work / "in" / f"f{i:06d}.jsonl"), 0, "") for i in range(files)]
    out_cfg = load_convert_config(output=str(work / "out"), overrides=OVERRIDES)
    write_started(out_cfg, SYNTHETIC_RUN, reads, fp, labeler)
    time.sleep(1)  # the shards come after the record on the file system's clock
    files_per_shard = max(1, cfg.output.rows_per_file // per_file)
    jobs = [
        (str(work), str(work / "out"), a, min(a + files_per_shard, files), per_file, labeler)
        for a in range(0, files, files_per_shard)
    ]
    with multiprocessing.Pool(2) as pool:
        pool.map(_write_group, jobs, chunksize=4)
    listed = expand_inputs([str(work / "in")])
    complete = [(f, FileStats(f.uri, per_file, per_file, per_file)) for f in listed]
    write_ledger(str(work / "out"), SYNTHETIC_RUN, complete, fp, cfg.storage)
    return time.perf_counter() - started


def add_files(work: Path, files: int, new: int, per_file: int) -> None:
    _write_group((str(work), "", files, files + new, per_file, ""))


def rerun_in_child(work: Path, ray_address: str, *overrides: str) -> dict:
    """One `run_conversion` in a fresh process (joining the bench's Ray): its summary, wall
    time and peak RSS."""
    child = subprocess.run(
        [sys.executable, __file__, "--child", str(work), *(f"--set={o}" for o in overrides)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "RAY_ADDRESS": ray_address},
    )
    if child.returncode != 0:
        sys.exit(f"the rerun failed:\n{child.stderr[-3000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def child(work: Path, overrides: list[str]) -> None:
    cfg = load_convert_config(
        inputs=[str(work / "in")], output=str(work / "out"), overrides=OVERRIDES + overrides
    )
    started = time.perf_counter()
    summary = run_conversion_quiet(cfg)
    seconds = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "seconds": round(seconds, 2),
                "planning_s": round(summary.seconds_planning, 2),
                "driver_peak_rss_mb": round(rss_mb, 1),
                "labeled": summary.rows_written,
                "skipped_done": summary.skipped_done,
                "files_skipped": summary.files_skipped,
                "chunks": summary.chunks,
                "shards_scanned": summary.shards_scanned,
            }
        )
    )


def run_conversion_quiet(cfg):
    from condlabel.convert.pipeline import run_conversion

    return run_conversion(cfg)


def start_ray() -> str:
    """A local Ray for the reruns to join, started once before any clock (on a loaded machine
    its start can time out: tried three times)."""
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context().gcs_address
    for attempt in range(5):
        try:
            ray.init(address="local", num_cpus=3, include_dashboard=False, log_to_driver=False)
            return ray.get_runtime_context().gcs_address
        except Exception:
            if attempt == 4:
                raise
            ray.shutdown()
    raise AssertionError("unreachable")


def measure(chunks: int, files: int, new_fraction: float, keep: bool, full: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="condlabel-rerun-scale-"))
    try:
        result = measure_in(work, chunks, files, new_fraction)
        if full and "new_files" in result:
            result.update(measure_full(work, result))
        return result
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def measure_in(work: Path, chunks: int, files: int, new_fraction: float) -> dict:
    per_file = max(1, chunks // files)
    generate_s = generate(work, chunks, files)
    nothing = rerun_in_child(work, "")  # needs no Ray: nothing is read
    if nothing["labeled"] != 0 or nothing["files_skipped"] != files:
        sys.exit(f"the rerun over a complete output did work: {nothing}")
    print(
        f"{files * per_file:>11,} chunks / {files:,} files (generated in {generate_s:.0f} s): "
        f"nothing to do decided in {nothing['seconds']:.1f} s, driver peak "
        f"{nothing['driver_peak_rss_mb']:.0f} MB",
        flush=True,
    )
    result = {
        "chunks": files * per_file,
        "files": files,
        "generate_s": round(generate_s, 1),
        "rerun_s": nothing["seconds"],
        "driver_peak_rss_mb": nothing["driver_peak_rss_mb"],
    }
    if new_fraction <= 0:  # the "nothing to do" figures only
        return result
    new = max(1, round(files * new_fraction))
    add_files(work, files, new, per_file)
    grown = rerun_in_child(work, start_ray())
    if grown["labeled"] != new * per_file or grown["files_skipped"] != files:
        sys.exit(f"the rerun with {new} new file(s) labeled other than exactly them: {grown}")
    return {
        **result,
        "new_files": new,
        "new_chunks": grown["labeled"],
        "rerun_new_s": grown["seconds"],
        "rerun_new_planning_s": grown["planning_s"],
        "rerun_new_shards_scanned": grown["shards_scanned"],
        "rerun_new_driver_peak_rss_mb": grown["driver_peak_rss_mb"],
    }


def measure_full(work: Path, result: dict) -> dict:
    """As many new files again, rerun with `output.done_check=full`: the scan the scoped
    check saves, side by side."""
    files, new = result["files"], result["new_files"]
    per_file = result["chunks"] // files
    add_files(work, files + new, new, per_file)
    full = rerun_in_child(work, start_ray(), "output.done_check=full")
    if full["labeled"] != new * per_file:
        sys.exit(f"the full-check rerun labeled other than exactly the new files: {full}")
    return {
        "rerun_full_s": full["seconds"],
        "rerun_full_planning_s": full["planning_s"],
        "rerun_full_shards_scanned": full["shards_scanned"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--chunks", type=int, help="one size (default: 1M, 5M and 20M)")
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument(
        "--new-fraction",
        type=float,
        default=0.01,
        help="files added for the second rerun (0: none)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line last")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic output")
    parser.add_argument(
        "--compare-full",
        action="store_true",
        help="then as many new files again with output.done_check=full (the whole-output scan)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--set", action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child), args.set)
        return
    sizes = [args.chunks] if args.chunks else [1_000_000, 5_000_000, 20_000_000]
    results = []
    for chunks in sizes:
        r = measure(chunks, args.files, args.new_fraction, args.keep, args.compare_full)
        results.append(r)
        if "new_files" not in r:
            continue
        print(
            f"{r['chunks']:>11,} chunks / {r['files']:,} files: nothing to do in {r['rerun_s']:6.1f} s, "
            f"driver peak {r['driver_peak_rss_mb']:7.1f} MB | +{r['new_files']} files "
            f"({r['new_chunks']:,} chunks) labeled in {r['rerun_new_s']:6.1f} s "
            f"(planning {r['rerun_new_planning_s']:.1f} s, {r['rerun_new_shards_scanned']} shards "
            f"scanned, driver {r['rerun_new_driver_peak_rss_mb']:.0f} MB)"
            f" [generated in {r['generate_s']:.0f} s]",
            flush=True,
        )
        if "rerun_full_s" in r:
            print(
                f"{'':>11}   +{r['new_files']} more files, output.done_check=full: "
                f"{r['rerun_full_s']:.1f} s (planning {r['rerun_full_planning_s']:.1f} s, "
                f"{r['rerun_full_shards_scanned']} shards scanned); planning scoped/full = "
                f"{r['rerun_new_planning_s'] / r['rerun_full_planning_s']:.2f}",
                flush=True,
            )
    if len(results) > 1 and all("new_files" in r for r in results):
        base = results[0]
        for r in results[1:]:
            growth = r["chunks"] / base["chunks"]
            print(
                f"x{growth:.0f} chunks: nothing-to-do time x{r['rerun_s'] / base['rerun_s']:.2f}, "
                f"driver RSS x{r['driver_peak_rss_mb'] / base['driver_peak_rss_mb']:.2f}, "
                f"+1% time x{r['rerun_new_s'] / base['rerun_new_s']:.2f}"
            )
    if args.json:
        print(json.dumps(results[-1]))


if __name__ == "__main__":
    main()
