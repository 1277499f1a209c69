"""What a run did: the `RunSummary` it returns and prints, and the manifest it leaves under
`_manifest/` (written as "running" when it starts, again with the outcome when it ends)."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from condlabel.config import ConvertConfig
from condlabel.config.secrets import strip_userinfo
from condlabel.runs.runstate import OutputState, versions, write_manifest
from condlabel.storage import InputFile

log = logging.getLogger("condlabel")


def new_run_id() -> str:
    """Sortable by start time, so "latest run" is a string comparison."""
    return _now_utc().strftime("%Y%m%dT%H%M%S.%fZ") + "-" + uuid.uuid4().hex[:6]


def _now_utc() -> datetime:
    return datetime.now(timezone.utc)


def rate_text(rate: float) -> str:
    """A rate for people: 12.3, 0.031 (a slow run's rate is not printed as 0.0), 0."""
    return f"{rate:.1f}" if rate >= 1 or rate == 0 else f"{rate:.2g}"


@dataclass
class FileStats:
    """One input file's counts, as its read step reports them to the run."""

    source: str
    documents: int = 0
    chunks: int = 0
    skipped_done: int = 0
    bytes: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def to_label(self) -> int:
        return self.chunks - self.skipped_done


@dataclass
class RunSummary:
    run_id: str
    output: str
    labeler: str
    status: str = "running"
    seq: int = 0
    """The run's sequence number (`condlabel.runs.sequence`), on every row it writes."""
    input_files: int = 0
    input_bytes: int = 0
    documents: int = 0
    chunks: int = 0
    skipped_done: int = 0
    rows_written: int = 0
    rows_rewritten: int = 0
    """Of `rows_written`: rows written again with their labels (their kept fields changed)."""
    shards_written: int = 0
    rows_before: int = 0
    useful_tokens: int = 0
    padded_tokens: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    labeler_actors: int = 0
    files_skipped: int = 0
    documents_not_read: int = 0
    """Documents of the files complete in the ledger (counted in `documents`, not read)."""
    """Input files not opened: complete in the ledger (`_ledger/`); their chunks count as done."""
    shards_scanned: int = 0
    """Output shards whose key columns the done check read (`output.done_check`)."""
    cost: dict[str, Any] = field(default_factory=dict)
    """Actor-seconds by resource, chunks, input and generated tokens (`runs/costs.py`)."""
    labeler_busy_share: float | None = None
    """Share of the labeler actors' time spent labeling; the rest is loading the model and
    waiting for chunks (a low share on a GPU: the readers do not keep it fed)."""
    labeler_calls_saved: int = 0
    """Rows that got the labels of a chunk with the same text instead of a labeler call."""
    tag_vocabulary: dict[str, Any] | None = None
    """The `format.tag_vocabulary` applied: its URI, fingerprint and canonical tag count."""
    sample: dict[str, Any] | None = None
    """What `input.sample_fraction` kept (None: every document), as the manifest records it."""
    routed_to_teacher: int | None = None
    """Rows a cascade's teacher labeled (the student's labels of them were unsure); None
    without a cascade."""
    seconds: float = 0.0
    seconds_planning: float = 0.0
    error: str | None = None

    @property
    def chunks_per_second(self) -> float:
        return self.rows_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def routed_share(self) -> float | None:
        """Share of the rows written that a cascade's teacher labeled."""
        if self.routed_to_teacher is None or not self.rows_written:
            return None
        return self.routed_to_teacher / self.rows_written

    @property
    def padding_ratio(self) -> float | None:
        """Padded / useful token positions the labeler computed (1.0 = no padding)."""
        return self.padded_tokens / self.useful_tokens if self.useful_tokens else None

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "chunks_per_second": round(self.chunks_per_second, 3),
            "padding_ratio": self.padding_ratio,
            "routed_share": self.routed_share,
        }

    def lines(self) -> list[str]:
        rejected = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        lines = [
            f"run {self.run_id} -> {self.output}: {self.status}",
            f"  labeler       {self.labeler} ({self.labeler_actors} actor(s))",
            f"  input         {self.input_files} file(s), {self.input_bytes / 1e6:.1f} MB",
            f"  documents     {self.documents} ("
            + (
                f"{self.documents - self.documents_not_read} read, "
                f"{self.documents_not_read} in files not read"
                if self.documents_not_read
                else "all read"
            )
            + f"), rejected: {rejected}",
            f"  chunks        {self.chunks} ({self.skipped_done} already in the output"
            + (
                f"; {self.files_skipped} file(s) complete, not read)" if self.files_skipped else ")"
            ),
            f"  written       {self.rows_written} rows in {self.shards_written} shard(s)"
            + (f", {self.labeler_calls_saved} copied" if self.labeler_calls_saved else "")
            + (f", {self.rows_rewritten} rewritten" if self.rows_rewritten else ""),
            f"  time          {self.seconds:.1f} s, {rate_text(self.chunks_per_second)} chunks/s"
            + (
                f"; labelers busy {self.labeler_busy_share:.0%} of their time"
                if self.labeler_busy_share is not None
                else ""
            ),
        ]
        if self.padding_ratio is not None and self.padded_tokens != self.useful_tokens:
            lines.append(f"  padding       {self.padding_ratio:.3f} padded/useful tokens")
        if self.routed_to_teacher is not None:
            lines.append(
                f"  cascade       {self.routed_to_teacher} of {self.rows_written} rows labeled by "
                f"the teacher ({self.routed_share or 0:.1%})"
            )
        return lines

    def tally(self, stats: list[FileStats]) -> None:
        """Take the read counts (documents, chunks, skipped, rejects) from every file's stats."""
        rejected: Counter[str] = Counter()
        for s in stats:
            rejected.update(s.rejected)
        self.documents = sum(s.documents for s in stats)
        self.chunks = sum(s.chunks for s in stats)
        self.skipped_done = sum(s.skipped_done for s in stats)
        self.rejected = dict(rejected)


class LabelingFailed(RuntimeError):
    """Most chunks of a run failed to label, even one at a time: the labeler is broken."""


def check_labeler_errors(summary: RunSummary, failed: int, first: str, share: float) -> None:
    """Fail a run where more than `share` of its chunks failed to label (all are rejects).

    Chunks already in the output count too: a rerun whose only work left is a chunk that fails
    again is a corpus with one bad chunk, not a broken labeler, and must not fail forever."""
    tried = failed + summary.rows_written + summary.skipped_done
    if failed > share * tried:
        raise LabelingFailed(
            f"{failed} of {tried} chunks failed to label even alone (more than "
            f"compute.max_labeler_error_share={share:g}); they are in "
            f"{summary.output.rstrip('/')}/_rejects/{summary.run_id}/. First error: {first}"
        )


@contextmanager
def recorded(
    cfg: ConvertConfig,
    summary: RunSummary,
    files: list[InputFile],
    state: OutputState,
    started: float,
    started_at: str,
) -> Iterator[None]:
    """Record the run in its manifest: as running now, with its outcome when the block ends.
    `started` is the run's start on the monotonic clock, `started_at` the same as ISO time."""

    def write() -> None:
        manifest = _manifest(cfg, summary, files, started_at, state)
        write_manifest(cfg.output.uri, summary.run_id, manifest, cfg.storage)

    write()
    try:
        yield
        summary.status = "succeeded"
    except BaseException as exc:
        summary.status = "failed"
        summary.error = strip_userinfo(f"{type(exc).__name__}: {exc}")[:2000]
        raise
    finally:
        summary.seconds = time.monotonic() - started
        try:
            write()
        except Exception as exc:  # noqa: BLE001 - the original error matters more
            log.warning("could not write the run manifest: %s", exc)


def _manifest(
    cfg: ConvertConfig,
    summary: RunSummary,
    files: list[InputFile],
    started_at: str,
    state: OutputState,
) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "seq": summary.seq,
        "status": summary.status,
        "started_at": started_at,
        "finished_at": None
        if summary.status == "running"
        else _now_utc().isoformat(timespec="seconds"),
        "labeler": summary.labeler,
        "config": cfg.redacted(),
        "inputs": [{"uri": f.uri, "bytes": f.size} for f in files],
        "sample": summary.sample,
        "output_before": {
            "scanned": state.scanned,
            "scope": state.scope,
            "shards_scanned": state.shards_scanned,
            "rows": state.rows,
            "labelers": state.labelers,
            "duplicate_keys": state.duplicate_keys,
        },
        "counts": {
            "documents": summary.documents,
            "chunks": summary.chunks,
            "labeled": summary.rows_written,
            "skipped_done": summary.skipped_done,
            "rejected": summary.rejected,
            "shards": summary.shards_written,
            "files_skipped": summary.files_skipped,
            "shards_scanned": summary.shards_scanned,
            "labeler_calls_saved": summary.labeler_calls_saved,
            "rows_rewritten": summary.rows_rewritten,
            "routed_to_teacher": summary.routed_to_teacher,
            "routed_share": summary.routed_share,
        },
        "tag_vocabulary": summary.tag_vocabulary,
        "cost": summary.cost,
        "timings": {
            "seconds": round(summary.seconds, 3),
            "seconds_planning": round(summary.seconds_planning, 3),
            "chunks_per_second": round(summary.chunks_per_second, 3),
            "labeler_busy_share": summary.labeler_busy_share,
        },
        "tokens": {
            "useful": summary.useful_tokens,
            "padded": summary.padded_tokens,
            "padding_ratio": summary.padding_ratio,
        },
        "labeler_actors": summary.labeler_actors,
        "error": summary.error,
        "versions": versions(),
    }
