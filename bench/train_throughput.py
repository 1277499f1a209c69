"""Training tokens/s of the tiny GPT-2 with 1 and with 2 Ray Train workers, in one run (issue 7).

    python bench/train_throughput.py [--steps 60] [--seq-len 128] [--micro-batch 8]

Both runs share one local Ray started before the clock, read the same tagged parquet (local
disk: the S3 server would compete for the same 2 cores) and use 1 torch thread per worker, so
the ratio is data-parallel scaling (gloo all-reduce included), not thread scaling. The figure is
the mean of the reported `tokens_per_s` over every reporting window but the first (which holds
process-group set-up and the first Ray Data blocks).
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from lm_fixtures import build_tiny_gpt2, sentiment_sentences, tagged_table

from condlabel.config import load_train_config
from condlabel.train.loop import run_training


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per worker per step")
    parser.add_argument("--rows", type=int, default=4000, help="tagged rows in the dataset")
    args = parser.parse_args()

    import pyarrow.parquet as pq
    import ray

    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    work = Path(tempfile.mkdtemp(prefix="condlabel-train-bench-"))
    model_dir = build_tiny_gpt2(work / "model")
    data = work / "tagged"
    data.mkdir()
    table = tagged_table(sentiment_sentences(args.rows, seed=0))
    for i in range(4):
        sink = io.BytesIO()
        pq.write_table(table.slice(i * args.rows // 4, args.rows // 4), sink)
        (data / f"part-{i}.parquet").write_bytes(sink.getvalue())

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    figures = {}
    for workers in (1, 2):
        cfg = load_train_config(
            overrides=[
                f"data.paths=[{data}]",
                f"model.path={model_dir}",
                f"optimization.seq_len={args.seq_len}",
                f"optimization.micro_batch_size={args.micro_batch}",
                f"optimization.max_steps={args.steps}",
                "optimization.log_every_steps=10",
                "optimization.learning_rate=0.001",
                f"checkpoint.storage_path={work / 'runs'}",
                f"checkpoint.name=bench-{workers}",
                f"checkpoint.every_steps={args.steps}",
                "checkpoint.num_to_keep=1",
                f"compute.num_workers={workers}",
                "compute.cpus_per_worker=0.5",
            ]
        )
        t0 = time.perf_counter()
        summary = run_training(cfg)
        wall = time.perf_counter() - t0
        rates = [m["tokens_per_s"] for m in summary.history[1:]]
        tokens = summary.history[-1]["tokens_seen"]
        figures[workers] = statistics.mean(rates)
        print(
            f"{workers} worker(s): {figures[workers]:8.0f} tokens/s in the steady windows; "
            f"{tokens} tokens in {wall:.1f} s wall (start-up, checkpoint and export included); "
            f"final loss {summary.history[-1]['loss']:.3f}"
        )
    ray.shutdown()
    print(
        f"scaling 2 workers / 1 worker: {figures[2] / figures[1]:.2f}x "
        f"(ideal 2.00x; {os.cpu_count()} cores on this machine, load average "
        f"{os.getloadavg()[0]:.1f}: other work on the cores lowers the ratio)"
    )


if __name__ == "__main__":
    main()
