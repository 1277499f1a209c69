"""Is the labeler slower inside a Ray worker than in a bare process? (issue 16)

    python bench/labeler_by_process.py [--reps 3] [--rounds 3] [--copies 1]

The same chunks are labeled in fresh processes of four kinds: a bare Python process, one that
has imported Ray, a Ray driver (after `ray.init()`), and a Ray actor. Each process labels the
chunks once to warm up, then `--rounds` times; its median round counts. The kinds run one after
another in ABCD order, then DCBA, and so on (`--reps` times each), so drift in the machine's
speed falls on every kind alike. Printed: each kind's median seconds and its ratio to the bare
process. Nothing else should run meanwhile (this machine's run-to-run noise is +-20 %).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

KINDS = ["bare", "import_ray", "ray_driver", "ray_actor"]
BENCH = Path(__file__).resolve().parent

CHILD = r"""
import json, statistics, sys
kind, copies, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
from gc_in_worker import Rounds, sample_chunks
if kind != "bare":
    import ray
if kind in ("ray_driver", "ray_actor"):
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
chunks = sample_chunks(copies, [])
if kind == "ray_actor":
    actor = ray.remote(num_cpus=1)(Rounds).remote(chunks, [])
    ray.get(actor.round.remote(False))
    times = [ray.get(actor.round.remote(False)) for _ in range(rounds)]
else:
    here = Rounds(chunks, [])
    here.round(False)
    times = [here.round(False) for _ in range(rounds)]
print(json.dumps({"seconds": statistics.median(times), "chunks": len(chunks)}))
"""


def one(kind: str, copies: int, rounds: int) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BENCH), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(copies), str(rounds)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode:
        sys.exit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--reps", type=int, default=3, help="processes of each kind")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per process")
    p.add_argument("--copies", type=int, default=1, help="copies of the sample corpus per round")
    args = p.parse_args()
    seconds: dict[str, list[float]] = {k: [] for k in KINDS}
    for rep in range(args.reps):
        for kind in KINDS if rep % 2 == 0 else KINDS[::-1]:
            r = one(kind, args.copies, args.rounds)
            seconds[kind].append(r["seconds"])
            print(f"  {kind:<11} {r['seconds']:6.2f} s for {r['chunks']} chunks", flush=True)
    bare = statistics.median(seconds["bare"])
    for kind in KINDS:
        med = statistics.median(seconds[kind])
        print(f"{kind:<11} median {med:6.2f} s  = {med / bare:.3f}x the bare process's time")


if __name__ == "__main__":
    main()
