"""Does Python's cyclic garbage collector slow the labeler inside a Ray worker? (issue 16)

    python bench/gc_in_worker.py [--rounds 10] [--copies 2] [--set key=value ...]

The pipeline's CPU labeler labels fewer chunks per busy CPU-second in a Ray actor than the same
labeler in a bare loop. Ray workers track far more Python objects after their imports, and each
full collection walks all of them, so `gc.freeze()` after loading (moving what exists to the
permanent generation, which collections skip) is the candidate fix. Run-to-run noise on this
machine (+-20 %) is as large as the effect, so this measures it paired: the same chunks are
labeled round after round, alternating "as is" and "frozen" (ABBA order, so drift cancels), in
one Ray actor and then in this process. Printed: median seconds per round of each, the median
of the per-pair ratios frozen / as-is, and the objects the collector tracks in each place.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from condlabel.config import load_convert_config
from condlabel.convert.chunking import chunk_document
from condlabel.convert.reading import Document
from condlabel.demo import sample_documents
from condlabel.labelers import build_labeler


def sample_chunks(copies: int, overrides: list[str]) -> list[str]:
    cfg = load_convert_config(overrides=overrides)
    return [
        f"{chunk.text} (copy {c}.)"
        for c in range(copies)
        for i, doc in enumerate(sample_documents())
        for chunk in chunk_document(Document(doc["id"], doc["text"], "sample", i), cfg.chunking)
    ]


class Rounds:
    """Labels `chunks` in batches, timing one round as is or after `gc.freeze()`."""

    def __init__(self, chunks: list[str], overrides: list[str]):
        self.cfg = load_convert_config(overrides=overrides)
        self.labeler = build_labeler(self.cfg.labeler)
        self.chunks = chunks

    def tracked(self) -> int:
        return len(gc.get_objects())

    def round(self, frozen: bool) -> float:
        gc.unfreeze()
        if frozen:
            gc.freeze()
        size = self.cfg.compute.batch_size
        started = time.perf_counter()
        for i in range(0, len(self.chunks), size):
            self.labeler.label(self.chunks[i : i + size])
        return time.perf_counter() - started

    def pairs(self, rounds: int) -> list[tuple[float, float]]:
        """(as-is seconds, frozen seconds) per pair, in ABBA order."""
        self.round(False)  # warm-up: first-call costs belong to neither side
        out = []
        for r in range(rounds):
            if r % 2:
                frozen, plain = self.round(True), self.round(False)
            else:
                plain, frozen = self.round(False), self.round(True)
            out.append((plain, frozen))
        return out


def report(place: str, pairs: list[tuple[float, float]], tracked: int, chunks: int) -> float:
    plain = statistics.median(p for p, _ in pairs)
    frozen = statistics.median(f for _, f in pairs)
    ratios = sorted(f / p for p, f in pairs)
    print(
        f"{place:<12} tracked objects {tracked:>8,}  as is {chunks / plain:6.1f} chunks/s  "
        f"frozen {chunks / frozen:6.1f} chunks/s  frozen/as-is time: median "
        f"{statistics.median(ratios):.3f} (pairs {ratios[0]:.3f}-{ratios[-1]:.3f})",
        flush=True,
    )
    return plain


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rounds", type=int, default=10, help="pairs of rounds per place")
    p.add_argument("--copies", type=int, default=2, help="copies of the sample corpus per round")
    p.add_argument("--set", action="append", default=[], help="convert config override")
    args = p.parse_args()
    chunks = sample_chunks(args.copies, args.set)
    print(f"{len(chunks)} chunks per round, {args.rounds} pairs of rounds per place", flush=True)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    actor = ray.remote(num_cpus=1)(Rounds).remote(chunks, args.set)
    in_ray = ray.get(actor.pairs.remote(args.rounds))
    actor_plain = report("Ray actor", in_ray, ray.get(actor.tracked.remote()), len(chunks))
    ray.shutdown()

    here = Rounds(chunks, args.set)
    local = here.pairs(args.rounds)
    local_plain = report("this process", local, here.tracked(), len(chunks))
    print(f"Ray actor / this process, as is: {actor_plain / local_plain:.3f} x the time")


if __name__ == "__main__":
    main()
