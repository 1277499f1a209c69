"""Out-of-memory backoff for the backends that batch on a device themselves (`hf`, `ct2`).

A batch that does not fit raises an out-of-memory error (torch's `OutOfMemoryError`, or
CTranslate2's `RuntimeError: ... out of memory`). `run_in_fitting_batches` then splits it in
halves and retries each half, down to one chunk; a chunk that does not fit even alone is
returned as a `ChunkFailure`, which the backend raises as `PartialLabels` with the labels of
the others, so the conversion rejects it as `labeler_error` (naming the error) and keeps the
rest. The size that fitted is kept in a `BatchLimit` that lives as long as the labeler (one per
actor), so the actor's next batches start from it instead of failing again first.

No torch import here: the ct2 backend runs without torch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("condlabel")

T = TypeVar("T")
R = TypeVar("R")

_OOM_MESSAGES = ("out of memory", "cublas_status_alloc_failed", "cudnn_status_alloc_failed")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` says the device (or the host) ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    if any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True  # torch.OutOfMemoryError / torch.cuda.OutOfMemoryError
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in _OOM_MESSAGES)


@dataclass
class BatchLimit:
    """The most items per call known to fit on this device (None: no out-of-memory seen)."""

    size: int | None = None

    def split(self, count: int) -> list[range]:
        step = self.size or count or 1
        return [range(i, min(i + step, count)) for i in range(0, count, step)]


@dataclass
class ChunkFailure:
    """An item that failed alone: the error it raised."""

    error: BaseException


class PartialLabels(RuntimeError):
    """Some chunks of a `label()` call could not be labeled even alone; `results` holds the
    labels of the others (None at the failed positions), `errors` the failed chunks' errors
    by position."""

    def __init__(self, results: list, errors: dict[int, BaseException]):
        self.results = results
        self.errors = errors
        first = next(iter(errors.values()))
        super().__init__(
            f"{len(errors)} of {len(results)} chunk(s) failed even alone: "
            f"{type(first).__name__}: {first}"
        )

    def __reduce__(self):
        # Across processes (a Ray actor's error) the message is what matters, not the labels.
        return RuntimeError, (str(self),)


def run_in_fitting_batches(
    items: Sequence[T],
    run: Callable[[list[T]], list[R]],
    limit: BatchLimit,
    release: Callable[[], None] | None = None,
) -> list[R | ChunkFailure]:
    """`run` over `items` in calls of at most `limit.size` items; a call that runs out of memory
    is split in halves and retried (down to one item, which then fails alone). `release` runs
    after each out-of-memory (free cached device memory). Afterwards, when a call ran out of
    memory although each of its items fits alone (the batch was too big, not one of its chunks),
    `limit.size` is the largest call that fitted below that size, so the actor's next call
    starts there; a chunk that fails alone does not shrink the batches of the others."""
    out: list[R | ChunkFailure | None] = [None] * len(items)
    pending = [(r.start, r.stop) for r in reversed(limit.split(len(items)))]
    failed: list[tuple[int, int]] = []
    fitted: list[int] = []
    while pending:
        start, stop = pending.pop()
        try:
            done = run(list(items[start:stop]))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            if release is not None:
                release()
            if stop - start == 1:
                log.warning("one chunk does not fit in memory even alone: %s", exc)
                out[start] = ChunkFailure(exc)
                continue
            log.warning(
                "out of memory on a batch of %d; retrying in halves (%s)", stop - start, exc
            )
            failed.append((start, stop))
            middle = start + (stop - start + 1) // 2
            pending += [(middle, stop), (start, middle)]  # the first half runs next
            continue
        if len(done) != stop - start:
            raise RuntimeError(f"{len(done)} results for a call over {stop - start} items")
        out[start:stop] = done
        fitted.append(stop - start)
    too_big = [b - a for a, b in failed if not any(isinstance(r, ChunkFailure) for r in out[a:b])]
    if too_big:
        below = [n for n in fitted if n < min(too_big)]
        limit.size = max(below) if below else max(1, min(too_big) // 2)
    return [r for r in out if r is not None]


def raise_failures(results: list[R | ChunkFailure]) -> list[R]:
    """`results` as labels, or `PartialLabels` when some items failed alone."""
    errors = {i: r.error for i, r in enumerate(results) if isinstance(r, ChunkFailure)}
    if errors:
        labels = [None if isinstance(r, ChunkFailure) else r for r in results]
        raise PartialLabels(labels, errors)
    return results  # type: ignore[return-value]
