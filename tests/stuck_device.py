"""One attempt at labeling a batch on a "stuck device", as a labeler actor makes it: run as
`python tests/stuck_device.py MODEL STATE OUT BUDGET_S TEXT...` (tests/test_budget.py).

The labeler is the real hf labeler whose `generate` call, for a chunk holding `STALL`, never
returns and keeps the GIL (a C call that waits forever, as a hung CUDA synchronisation can):
the watchdog's timer thread never runs, so only faulthandler's thread can end the process.
STATE holds what the run's counter actor would (`InFlight`), saved on every change because the
process dies; OUT gets the labeled doc ids and the rejects when the attempt returns."""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import pyarrow as pa

from condlabel.config import HFLabelerConfig
from condlabel.convert import budget
from condlabel.convert.stages import READ_SCHEMA, label_or_reject
from condlabel.labelers.hf import HFLabeler

STALL = "STALLED"


class StuckDeviceHF(HFLabeler):
    def _generate(self, rows, texts):
        if any(STALL in text for text in texts):
            ctypes.PyDLL(None).sleep(3600)  # libc sleep called with the GIL held
        return super()._generate(rows, texts)


class FileTracker(budget.InFlight):
    def __init__(self, path: Path):
        super().__init__(json.loads(path.read_text()) if path.exists() else {})
        self.path = path

    def _save(self) -> None:
        self.path.write_text(json.dumps(self.state))

    def begin(self, keys, state):
        previous = super().begin(keys, state)
        self._save()
        return previous

    def end(self, keys):
        super().end(keys)
        self._save()

    def timed_out(self, keys):
        super().timed_out(keys)
        self._save()


def main() -> None:
    model, state, out, budget_s, *texts = sys.argv[1:]
    budget.HARD_GRACE_S = 2.0  # the hard stop's grace (60 s in a real actor)
    n = len(texts)
    table = pa.Table.from_pydict(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "chunk_index": [0] * n,
            "num_chunks": [1] * n,
            "source": ["s3://b/in.jsonl"] * n,
            "doc_hash": [f"h{i}" for i in range(n)],
            "num_words": [len(t.split()) for t in texts],
            "text": texts,
            "_position": list(range(1, n + 1)),
        },
        schema=READ_SCHEMA,
    )
    labeler = StuckDeviceHF(HFLabelerConfig(model=model, do_sample=False, max_new_tokens=4))
    labeled, rejects = budget.label_with_budget(
        lambda t: label_or_reject(labeler, t), table, float(budget_s), FileTracker(Path(state))
    )
    result = {
        "labeled": labeled.column("doc_id").to_pylist(),
        "rejects": {r.detail.split(":")[0]: r.reason for r in rejects},
    }
    Path(out).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
