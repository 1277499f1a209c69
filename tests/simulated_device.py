"""The real hf labeler on a simulated device, the one test double for what a GPU does to a batch:
run out of memory above a batch size (tests/test_oom_backoff.py, the CPU run of
bench/gpu_check.py's `oom_backoff`), or hang (tests/stuck_device.py). Only `generate` is
simulated; loading, batching, scoring and the backoff are the product's code.

No pytest here: bench/gpu_check.py imports this module, as it does the tiny-model builders, on
a GPU machine that may have no pytest.
"""

from __future__ import annotations

import ctypes

import pyarrow as pa

from condlabel.config import HFLabelerConfig
from condlabel.convert.stages import READ_SCHEMA
from condlabel.labelers.hf import HFLabeler

MONSTER = "MONSTER"
"""A chunk holding this does not fit on the device even alone."""
STALL = "STALLED"
"""A batch holding a chunk with this never returns from `generate`."""


class SimulatedDeviceHF(HFLabeler):
    """The hf labeler on a device that holds `capacity` rows per `generate` call (None: any
    number) and none for a chunk holding MONSTER: above that, torch's CUDA out-of-memory error,
    as a GPU raises it. A batch holding STALL hangs in a C call that keeps the GIL (as a hung CUDA
    synchronisation can), so no Python thread of the process runs again. `calls` records
    (rows, fitted) per call."""

    def __init__(self, cfg: HFLabelerConfig, capacity: int | None = None):
        super().__init__(cfg)
        self.capacity = capacity
        self.calls: list[tuple[int, bool]] = []

    def _generate(self, rows, texts):
        import torch

        if any(STALL in text for text in texts):
            ctypes.PyDLL(None).sleep(3600)  # libc sleep called with the GIL held
        too_many = self.capacity is not None and len(rows) > self.capacity
        fits = not too_many and not any(MONSTER in text for text in texts)
        self.calls.append((len(rows), fits))
        if not fits:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate 1.50 GiB for {len(rows)} rows (simulated)"
            )
        return super()._generate(rows, texts)


def chunk_table(texts: list[str], source: str = "s3://b/in.jsonl") -> pa.Table:
    """`texts` as the read stage hands them to labeling: one single-chunk document each, doc ids
    d0, d1, ..., doc hashes h0, h1, ..."""
    n = len(texts)
    return pa.Table.from_pydict(
        {
            "doc_id": [f"d{i}" for i in range(n)],
            "chunk_index": [0] * n,
            "num_chunks": [1] * n,
            "source": [source] * n,
            "doc_hash": [f"h{i}" for i in range(n)],
            "num_words": [len(t.split()) for t in texts],
            "text": texts,
            "_position": list(range(1, n + 1)),
        },
        schema=READ_SCHEMA,
    )
