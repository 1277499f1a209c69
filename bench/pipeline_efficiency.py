"""Chunks/s of the whole Ray pipeline vs a bare Python loop running the same labeler over the
same chunks, measured side by side in one run (issue 2; goal: ratio >= 0.9).

    python bench/pipeline_efficiency.py [--copies 3] [--max-words 400]

The bare loop reads, chunks and labels in one process (no Ray, no writing). The pipeline runs
read -> chunk -> label actor pool -> format -> parquet write on a local Ray that is started
before the clock starts (cluster start-up is a one-time cost, printed separately). Each Ray
variant runs in its own subprocess so it gets a fresh Ray.

While each variant runs, every process on the machine is sampled (psutil, every 0.25 s) and its
CPU time is charged to its role: the labeler actors, Ray Data's other tasks (read, chunk,
write), the driver, Ray's daemons (raylet, GCS, dashboard and its agents) and the rest. With
the machine's idle and steal time, that says where the cores went, measured rather than guessed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
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


DAEMONS = {  # Ray's own processes, by a word of their command line
    "gcs_server": "GCS",
    "raylet": "raylet",
    "dashboard/agent.py": "dashboard agent",
    "dashboard.py": "dashboard",
    "runtime_env/agent": "runtime-env agent",
    "log_monitor": "log monitor",
    "monitor.py": "monitor",
}


def role(title: str, driver_pid: int, pid: int) -> str:
    """Which part of the pipeline a process is, from its title (Ray workers set theirs to the
    task or actor they run, so one worker can change role over its life)."""
    if pid == driver_pid:
        return "driver"
    # The executable, and the script when it is python: a worker's arguments name other
    # programs (the raylet's include the worker command line).
    words = title.split() or [""]
    program = " ".join([words[0], *[w for w in words[1:4] if w.endswith(".py")][:1]])
    for word, name in DAEMONS.items():
        if word in program:
            return "Ray daemon: " + name
    if "default_worker.py" in program:  # a worker before it sets its title
        return "Ray workers, idle or starting"
    if "LabelStage" in title:
        return "labeler actors"
    if title.startswith("ray::"):
        if "IDLE" in title:
            return "Ray workers, idle or starting"
        return "Ray task/actor " + title.split()[0].removeprefix("ray::")[:40]
    return "other processes"


class CpuAccount:
    """CPU seconds by role over a block, sampled every `interval` s from every process. A
    process that ends between two samples loses at most one interval of its time."""

    def __init__(self, interval: float = 0.25):
        self.interval = interval
        self.by_role: dict[str, float] = defaultdict(float)
        self.pids: dict[str, set[int]] = defaultdict(set)  # processes seen in each role
        self.last: dict[int, float] = {}
        self.driver_pid = -1
        self._stop = threading.Event()
        self.lock = threading.Lock()  # the sampling thread and restart() share the counts

    def sample(self) -> None:
        import psutil

        for proc in psutil.process_iter(["pid", "cmdline", "cpu_times"]):
            times = proc.info["cpu_times"]
            if times is None:
                continue
            used = times.user + times.system
            pid = proc.info["pid"]
            if pid == os.getpid():
                continue  # this bench process only waits (and samples)
            title = " ".join(proc.info["cmdline"] or [])
            delta = used - self.last.get(pid, used if self.started_before(proc) else 0.0)
            self.last[pid] = used
            if delta > 0:
                name = role(title, self.driver_pid, pid)
                self.by_role[name] += delta
                self.pids[name].add(pid)

    def started_before(self, proc) -> bool:
        import psutil

        try:
            return proc.create_time() < self.t_start
        except psutil.Error:  # gone already
            return True

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            with self.lock:
                self.sample()

    def restart(self) -> None:
        """Forget what was charged so far: a new baseline for every process."""
        import psutil

        with self.lock:
            self.t_start = time.time()
            self.cpu_start = psutil.cpu_times()
            self.sample()
            self.by_role.clear()
            self.pids.clear()

    def __enter__(self) -> CpuAccount:
        self.restart()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        import psutil

        self._stop.set()
        self.thread.join()
        with self.lock:
            self.sample()
        end = psutil.cpu_times()
        self.idle = (end.idle - self.cpu_start.idle) + (end.iowait - self.cpu_start.iowait)
        self.steal = getattr(end, "steal", 0.0) - getattr(self.cpu_start, "steal", 0.0)
        self.wall = time.time() - self.t_start

    def lines(self) -> list[str]:
        import psutil

        cores = psutil.cpu_count() or 1
        total = self.wall * cores
        rows = [
            (f"{name} ({len(self.pids[name])} proc)", sec)
            for name, sec in sorted(self.by_role.items(), key=lambda kv: -kv[1])
        ]
        rows += [("idle", self.idle), ("steal (the VM's host)", self.steal)]
        return [
            f"    {name:<52} {sec:6.1f} CPU-s {sec / total:6.1%} of {cores} cores x {self.wall:.0f} s"
            for name, sec in rows
        ]


def pipeline_variant(corpus: str, output: str, overrides: list[str]) -> None:
    """Run in a subprocess: start Ray, then time the conversion alone."""
    from condlabel.convert.pipeline import init_ray, run_conversion

    cfg = load_convert_config(inputs=[corpus], output=output, overrides=overrides)
    t0 = time.perf_counter()
    init_ray(cfg)
    startup = time.perf_counter() - t0
    print("ray-up", flush=True)  # the parent's CPU account starts here
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
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="another pipeline variant with these config overrides (repeatable)",
    )
    parser.add_argument(
        "--pipeline-only",
        action="store_true",
        help="skip the bare loops (no ratios): for comparing pipeline variants quickly",
    )
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
    n_bare, bare_rate = None, None
    if not args.pipeline_only:
        n_bare, t_bare = bare_loop(files, common)
        bare_rate = n_bare / t_bare
        print(
            f"bare loop              {n_bare} chunks in {t_bare:6.1f} s = {bare_rate:6.1f} chunks/s"
        )
        pair = parallel_bare_loops(files, common, 2)
        print(
            f"2 bare loops at once   {pair:6.1f} chunks/s = {pair / bare_rate:.2f}x one loop "
            "(what two processes get from this machine, no Ray)"
        )
    variants = {
        "pipeline, defaults": [],
        "pipeline, 1 actor": ["compute.actors=1"],
    }
    for spec in args.also:
        name, _, sets = spec.partition(":")
        variants[f"pipeline, {name}"] = [s for s in sets.split(",") if s]
    for name, extra in variants.items():
        out = work / f"out-{len(name)}-{abs(hash(name))}"
        with CpuAccount() as account:
            child = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--variant",
                    str(work / "corpus"),
                    str(out),
                    json.dumps(common + extra),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            account.driver_pid = child.pid
            assert child.stdout is not None
            for line in child.stdout:
                if line.strip() == "ray-up":
                    account.restart()  # Ray's start-up is not in the pipeline's time either
                    break
            stdout, stderr = child.communicate()
        if child.returncode != 0:
            sys.exit(f"{name} failed:\n{stderr[-3000:]}")
        r = json.loads(stdout.strip().splitlines()[-1])
        rate = r["rows"] / r["seconds"]
        print(
            f"{name:<22} {r['rows']} chunks in {r['seconds']:6.1f} s = {rate:6.1f} chunks/s "
            f"({r['actors']} actor(s) busy {r['busy'] or 0:.0%}, {r['copied']} copied by dedup; "
            "Ray start-up "
            f"{r['ray_startup_s']:.1f} s not counted)"
            + (f"  ratio vs bare loop: {rate / bare_rate:.2f}" if bare_rate else "")
        )
        print("  CPU time from Ray being up to the end (Ray's shutdown included):")
        print("\n".join(account.lines()))
        if r["copied"] > r["rows"] // 100:
            sys.exit(f"{name}: {r['copied']} chunks copied by dedup; the corpus must be distinct")
        if n_bare is not None and r["rows"] != n_bare:
            sys.exit(f"{name}: {r['rows']} chunks written, the bare loop labeled {n_bare}")


if __name__ == "__main__":
    main()
