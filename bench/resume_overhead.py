"""Wall time of a rerun over a fully labeled output vs the first run, in one run (issue 4;
goal: ratio <= 0.05).

    python bench/resume_overhead.py [--copies 4] [--max-words 400]

Both runs share one local Ray started before the clock (cluster start-up is not the cost being
measured). The rerun finds every input file complete in the ledger (`_ledger/`) and opens none;
with `--no-ledger` it reads the output's key columns (in Ray tasks), re-reads and re-chunks
every input, skips every chunk and labels nothing (the labeler is never even built).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pipeline_efficiency import build_corpus

from condlabel.config import load_convert_config
from condlabel.convert.pipeline import init_ray, run_conversion


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--copies", type=int, default=40, help="copies of the sample corpus")
    parser.add_argument("--max-words", type=int, default=2000)
    parser.add_argument(
        "--no-ledger", action="store_true", help="rerun with output.done_check=full"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="condlabel-resume-bench-"))
    build_corpus(work / "corpus", args.copies)
    cfg = load_convert_config(
        inputs=[str(work / "corpus")],
        output=str(work / "out"),
        overrides=[f"chunking.max_words={args.max_words}"],
    )
    init_ray(cfg)

    t0 = time.perf_counter()
    first = run_conversion(cfg)
    t_first = time.perf_counter() - t0
    if args.no_ledger:
        cfg = cfg.model_copy(
            update={"output": cfg.output.model_copy(update={"done_check": "full"})}
        )
    t0 = time.perf_counter()
    rerun = run_conversion(cfg)
    t_rerun = time.perf_counter() - t0

    print(
        f"first run  {first.rows_written} chunks labeled in {t_first:6.1f} s "
        f"({first.input_bytes / 1e6:.1f} MB of input, {first.labeler_actors} actor(s))"
    )
    print(
        f"rerun      {rerun.rows_written} chunks labeled, {rerun.skipped_done} skipped, in {t_rerun:6.1f} s"
    )
    print(f"ratio rerun/first: {t_rerun / t_first:.3f}  (goal <= 0.05)")
    if rerun.rows_written != 0 or rerun.skipped_done != first.rows_written:
        sys.exit("the rerun did not skip exactly the first run's chunks")


if __name__ == "__main__":
    main()
