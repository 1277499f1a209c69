"""A conversion's progress as the driver sees it: one tqdm bar (chunks, chunks/s, ETA) when
stderr is a terminal, else one `progress:` log line per interval.

The graph's output is the list of shards written, so the driver counts labeled chunks as shards
land. How many there will be is known once every input file has been read; until then it is
extrapolated from the files read so far (chunks to label per input byte).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from condlabel.ray_runtime import is_verbose
from condlabel.runs.summary import FileStats, rate_text

if TYPE_CHECKING:
    from condlabel.runs.summary import RunSummary

log = logging.getLogger("condlabel")

# How often a bar asks for the read statistics (a round trip to an actor) to refresh its total.
_BAR_STATS_INTERVAL_S = 1.0


def chunks_to_label(
    summary: RunSummary, stats: list[FileStats], files: tuple[int, int] | None = None
) -> tuple[int, bool] | None:
    """(chunks this run will label, whether that is an estimate); None before any file is read.
    `files`: (number, bytes) of the files the run reads (default: every input file)."""
    if not stats:
        return None
    count, size = files or (summary.input_files, summary.input_bytes)
    to_label = sum(s.to_label for s in stats)
    read_bytes = sum(s.bytes for s in stats)
    estimate = len(stats) < count
    if estimate and read_bytes:
        to_label = round(to_label * size / read_bytes)
    return max(to_label, summary.rows_written), estimate


def eta_text(
    summary: RunSummary,
    stats: list[FileStats],
    elapsed: float,
    files: tuple[int, int] | None = None,
) -> str:
    """Remaining time from the labeling rate so far, e.g. `ETA ~12 s (40/~96)`."""
    expected = chunks_to_label(summary, stats, files)
    if not summary.rows_written or expected is None:
        return "ETA unknown"
    to_label, estimate = expected
    approx = "~" if estimate else ""
    left = max(0, to_label - summary.rows_written) / (summary.rows_written / elapsed)
    return f"ETA {approx}{left:.0f} s ({summary.rows_written}/{approx}{to_label})"


class Progress:
    """Call `update()` whenever `summary.rows_written` has grown; use as a context manager.

    `read_stats` returns the statistics of the files read so far. `bar` defaults to whether
    stderr is a terminal (and not verbose, where Ray's own progress output shares it).
    """

    def __init__(
        self,
        summary: RunSummary,
        started: float,
        interval_s: float,
        read_stats: Callable[[], list[FileStats]],
        bar: bool | None = None,
        files: tuple[int, int] | None = None,
    ):
        self.summary = summary
        self.files = files
        """(number, bytes) of the files the run reads: the ETA's denominator."""
        self.started = started
        self.read_stats = read_stats
        self.bar_enabled = sys.stderr.isatty() and not is_verbose() if bar is None else bar
        self.interval_s = _BAR_STATS_INTERVAL_S if self.bar_enabled else interval_s
        self.last_check = time.monotonic()
        self._exit = ExitStack()
        self._bar: Any = None
        self._shown = 0

    def __enter__(self) -> Progress:
        if self.bar_enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # Log lines printed while the bar is drawn go above it instead of through it.
            self._exit.enter_context(logging_redirect_tqdm())
            self._bar = self._exit.enter_context(
                tqdm(desc="labeling", unit=" chunks", file=sys.stderr, dynamic_ncols=True)
            )
        return self

    def __exit__(self, *exc_info) -> None:
        self._exit.close()

    def update(self) -> None:
        now = time.monotonic()
        stats = None
        if now - self.last_check >= self.interval_s:
            self.last_check = now
            stats = self.read_stats()
        if self._bar is not None:
            self._update_bar(self._bar, stats)
        elif stats is not None:
            log.info(
                "progress: %d chunks labeled, %s chunks/s, %d/%d files read, %s",
                self.summary.rows_written,
                rate_text(self.summary.rows_written / (now - self.started)),
                len(stats),
                self.files[0] if self.files else self.summary.input_files,
                eta_text(self.summary, stats, now - self.started, self.files),
            )

    def _update_bar(self, bar: Any, stats: list[FileStats] | None) -> None:
        if stats is not None:
            expected = chunks_to_label(self.summary, stats, self.files)
            if expected is not None:
                bar.total = expected[0]
            total = self.files[0] if self.files else self.summary.input_files
            bar.set_postfix_str(f"{len(stats)}/{total} files read", False)
        if bar.total is not None and self.summary.rows_written > bar.total:
            bar.total = self.summary.rows_written  # the estimate was low
        bar.update(self.summary.rows_written - self._shown)
        self._shown = self.summary.rows_written
