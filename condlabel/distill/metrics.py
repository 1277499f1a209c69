"""The quality gate: how the student's labels compare with the teacher's on held-out chunks.

Per chunk: did the student's label parse, which of its tags the teacher also gave (after
`normalize_tag`), the synopsis ROUGE-L F-measure (Google's `rouge-score`, the reference
implementation of ROUGE-1.5.5's scores) and the student's mean log-probability. Over the
holdout: the parse rate, tag precision/recall/F1 (micro: summed over chunks), the mean ROUGE-L,
and the calibration: how agreement rises with the student's mean_logprob (Spearman's rank
correlation, and a table by quantile bin of mean_logprob), which is what a cascade threshold
is chosen from. No Ray, no torch.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from condlabel.config import GateConfig

_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")
# Fixed, not a setting: quantile bins of the student's mean_logprob in the calibration table;
# five keep a bin's agreement meaningful on the default 1,000 held-out chunks.
CALIBRATION_BINS = 5


def normalize_tag(tag: str) -> str:
    """Compatibility-normalised (NFKC), case-folded, inner whitespace collapsed, punctuation at
    either end dropped: `"Machine  Learning."` and `machine learning` are one tag."""
    text = " ".join(unicodedata.normalize("NFKC", tag).casefold().split())
    return _EDGE_PUNCTUATION.sub("", text)


def tag_set(tags: Sequence[str]) -> set[str]:
    return {t for t in (normalize_tag(tag) for tag in tags) if t}


@dataclass(frozen=True)
class ChunkComparison:
    parse_ok: bool
    matched_tags: int
    student_tags: int
    teacher_tags: int
    rouge_l: float
    mean_logprob: float | None

    @property
    def tag_f1(self) -> float:
        total = self.student_tags + self.teacher_tags
        return 2 * self.matched_tags / total if total else 1.0


def _rouge():
    try:
        from rouge_score import rouge_scorer
    except ImportError as exc:
        raise ImportError(
            "the distillation gate needs rouge-score: pip install 'condlabel[distill]'"
        ) from exc
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def compare(teacher: Sequence[dict[str, Any]], student: Sequence[Any]) -> list[ChunkComparison]:
    """One comparison per held-out chunk: `teacher` rows (synopsis, tags) and the student's
    `LabelResult`s, in the same order. An unparsed student label has no synopsis and no tags."""
    scorer = _rouge()
    out = []
    for row, result in zip(teacher, student, strict=True):
        mine = tag_set(result.tags) if result.parse_ok else set()
        theirs = tag_set(row["tags"] or [])
        synopsis = result.synopsis if result.parse_ok else ""
        rouge = scorer.score(row["synopsis"] or "", synopsis)["rougeL"].fmeasure
        out.append(
            ChunkComparison(
                parse_ok=bool(result.parse_ok),
                matched_tags=len(mine & theirs),
                student_tags=len(mine),
                teacher_tags=len(theirs),
                rouge_l=float(rouge),
                mean_logprob=result.mean_logprob,
            )
        )
    return out


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None when either side is constant or too short."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else None


def calibration(chunks: Sequence[ChunkComparison], bins: int) -> dict[str, Any]:
    """Agreement by quantile bin of the student's mean_logprob, lowest first. Each bin also says
    what a cascade with its upper edge as threshold would route to the teacher (`routed_share`:
    the chunks below it) and how well the student agrees on what it keeps (`kept_tag_f1`)."""
    scored = sorted((c for c in chunks if c.mean_logprob is not None), key=_logprob)
    table = []
    for b in range(min(bins, len(scored))):
        part = scored[b * len(scored) // bins : (b + 1) * len(scored) // bins]
        if not part:
            continue
        kept = scored[(b + 1) * len(scored) // bins :]
        table.append(
            {
                "mean_logprob_min": _logprob(part[0]),
                "mean_logprob_max": _logprob(part[-1]),
                "chunks": len(part),
                "parse_rate": sum(c.parse_ok for c in part) / len(part),
                "tag_f1": sum(c.tag_f1 for c in part) / len(part),
                "rouge_l": sum(c.rouge_l for c in part) / len(part),
                "routed_share": (b + 1) * len(scored) // bins / len(scored),
                "kept_tag_f1": sum(c.tag_f1 for c in kept) / len(kept) if kept else None,
            }
        )
    return {
        "spearman_logprob_tag_f1": spearman(
            [_logprob(c) for c in scored], [c.tag_f1 for c in scored]
        ),
        "spearman_logprob_rouge_l": spearman(
            [_logprob(c) for c in scored], [c.rouge_l for c in scored]
        ),
        "bins": table,
    }


def _logprob(chunk: ChunkComparison) -> float:
    return chunk.mean_logprob if chunk.mean_logprob is not None else -math.inf


def gate_report(chunks: Sequence[ChunkComparison], gate: GateConfig) -> dict[str, Any]:
    """The figures the gate reports, whether each minimum is met, and `passed`."""
    n = len(chunks)
    matched = sum(c.matched_tags for c in chunks)
    given = sum(c.student_tags for c in chunks)
    expected = sum(c.teacher_tags for c in chunks)
    precision = matched / given if given else 0.0
    recall = matched / expected if expected else 0.0
    report: dict[str, Any] = {
        "chunks": n,
        "parse_rate": sum(c.parse_ok for c in chunks) / n if n else 0.0,
        "tag_precision": precision,
        "tag_recall": recall,
        "tag_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "tag_f1_mean_per_chunk": sum(c.tag_f1 for c in chunks) / n if n else 0.0,
        "rouge_l": sum(c.rouge_l for c in chunks) / n if n else 0.0,
        "calibration": calibration(chunks, CALIBRATION_BINS),
    }
    minimums = {
        "parse_rate": gate.min_parse_rate,
        "tag_f1": gate.min_tag_f1,
        "rouge_l": gate.min_rouge_l,
    }
    failed = [
        f"{key} {report[key]:.3f} < gate.min_{key} {least:g}"
        for key, least in minimums.items()
        if report[key] < least
    ]
    if not n:
        failed.append("no held-out chunk to judge: add data or raise holdout_fraction")
    report["gate"] = minimums
    report["failed"] = failed
    report["passed"] = not failed
    return report


def report_lines(report: dict[str, Any]) -> list[str]:
    """The gate's figures as a table, then the calibration table."""
    gate = report["gate"]
    lines = [f"{'metric':<24}{'student':>10}{'gate':>10}", "-" * 44]
    for key in ("parse_rate", "tag_precision", "tag_recall", "tag_f1", "rouge_l"):
        least = f"{gate[key]:>10.3f}" if key in gate else f"{'':>10}"
        lines.append(f"{key:<24}{report[key]:>10.3f}{least}")
    cal = report["calibration"]
    rho = cal["spearman_logprob_tag_f1"]
    lines.append(f"{'spearman(logprob, f1)':<24}{'n/a' if rho is None else f'{rho:.3f}':>10}")
    lines.append(f"held-out chunks: {report['chunks']}")
    if cal["bins"]:
        lines.append(
            f"{'mean_logprob':>22} {'chunks':>7} {'parse':>6} {'tag_f1':>7} {'rougeL':>7}"
            f" {'routed':>7} {'kept_f1':>8}"
        )
        for b in cal["bins"]:
            kept = b["kept_tag_f1"]
            lines.append(
                f"{b['mean_logprob_min']:>10.3f}..{b['mean_logprob_max']:>10.3f} {b['chunks']:>7}"
                f" {b['parse_rate']:>6.2f} {b['tag_f1']:>7.3f} {b['rouge_l']:>7.3f}"
                f" {b['routed_share']:>7.2f} {'-' if kept is None else f'{kept:.3f}':>8}"
            )
    lines.append(
        "gate: passed" if report["passed"] else "gate: FAILED: " + "; ".join(report["failed"])
    )
    return lines


def comparison_dicts(chunks: Sequence[ChunkComparison]) -> list[dict[str, Any]]:
    return [asdict(c) | {"tag_f1": c.tag_f1} for c in chunks]
