"""One attempt at labeling a batch on a "stuck device", as a labeler actor makes it: run as
`python tests/stuck_device.py MODEL STATE OUT BUDGET_S TEXT...` (tests/test_budget.py).

The labeler is the real hf labeler whose `generate` call, for a chunk holding `STALL`, never
returns and keeps the GIL (`SimulatedDeviceHF`, tests/simulated_device.py): the watchdog's
timer thread never runs, so only faulthandler's thread can end the process.
STATE holds what the run's counter actor would (`InFlight`), saved on every change because the
process dies; OUT gets the labeled doc ids and the rejects when the attempt returns."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from simulated_device import SimulatedDeviceHF, chunk_table

from condlabel.config import HFLabelerConfig
from condlabel.convert import budget
from condlabel.convert.stages import label_or_reject


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
    table = chunk_table(texts)
    labeler = SimulatedDeviceHF(HFLabelerConfig(model=model, do_sample=False, max_new_tokens=4))
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
