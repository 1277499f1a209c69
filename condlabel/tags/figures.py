"""Tag figures of an output for `condlabel inspect` and its report: raw vs canonical tag counts,
coverage of the tag vocabulary, the most frequent tag pairs, and tag frequency drift between the
runs that wrote the prefix. Plain functions over a pyarrow table (`tags`, `raw_tags`, `run_id`).
"""

from __future__ import annotations

import json
import math
import posixpath
from collections import Counter
from itertools import combinations, pairwise
from typing import Any

import pyarrow as pa

from condlabel.schema import MANIFEST_DIR
from condlabel.tags.vocabulary import Vocabulary

_PAIR_TAGS = 200
"""Co-occurrences are counted among the most frequent tags only, so a long tail of rare tags
cannot make the pair count quadratic."""


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * table.num_rows


def tag_figures(table: pa.Table, vocabulary: Vocabulary | None = None, top: int = 10) -> dict:
    """Every figure as plain JSON-able data; `vocabulary` (the one the latest run applied, when
    it can be read) gives the coverage figures."""
    tags = [list(t or []) for t in _column(table, "tags")]
    raw_cells = _column(table, "raw_tags")
    raw = [list(r) if r is not None else t for r, t in zip(raw_cells, tags, strict=True)]
    raw_counts = Counter(t for row in raw for t in set(row))
    canonical_counts = Counter(t for row in tags for t in set(row))
    return {
        "rows_mapped": sum(r is not None for r in raw_cells),
        "raw": {"distinct": len(raw_counts), "occurrences": sum(raw_counts.values())},
        "canonical": {
            "distinct": len(canonical_counts),
            "occurrences": sum(canonical_counts.values()),
        },
        "coverage": coverage(raw_counts, canonical_counts, vocabulary),
        "co_occurrences": co_occurrences(tags, canonical_counts, top),
        "drift": drift(tags, _column(table, "run_id"), top=5),
    }


def coverage(
    raw: Counter[str], canonical: Counter[str], vocabulary: Vocabulary | None
) -> dict | None:
    """Share of raw tag occurrences the vocabulary knows, and share of its canonical tags the
    output uses; None without a vocabulary."""
    if vocabulary is None:
        return None
    known = sum(n for tag, n in raw.items() if vocabulary.canonical(tag) is not None)
    total = sum(raw.values())
    used = sum(1 for tag in vocabulary.tags if canonical[tag])
    return {
        "vocabulary": vocabulary.record(),
        "raw_occurrences_known": known / total if total else 0.0,
        "canonical_tags_used": used / len(vocabulary.tags) if vocabulary.tags else 0.0,
    }


def co_occurrences(rows: list[list[str]], counts: Counter[str], top: int) -> list[list[Any]]:
    """[tag, tag, chunks carrying both] for the most frequent pairs."""
    frequent = {t for t, _ in counts.most_common(_PAIR_TAGS)}
    pairs: Counter[tuple[str, str]] = Counter()
    for row in rows:
        pairs.update(combinations(sorted(set(row) & frequent), 2))
    return [[a, b, n] for (a, b), n in pairs.most_common(top)]


def drift(rows: list[list[str]], run_ids: list[str | None], top: int = 5) -> list[dict]:
    """Between each run and the previous one (run ids sort by start time): the Jensen-Shannon
    divergence (bits, 0 = same tag distribution, 1 = disjoint) of their tag shares, and the
    tags whose share of the run's chunks moved most."""
    by_run: dict[str, Counter[str]] = {}
    chunks: Counter[str] = Counter()
    for row, run in zip(rows, run_ids, strict=True):
        if run is None:
            continue
        by_run.setdefault(run, Counter()).update(set(row))
        chunks[run] += 1
    runs = sorted(by_run)
    out = []
    for before, after in pairwise(runs):
        a, b = by_run[before], by_run[after]
        share_a = {t: n / chunks[before] for t, n in a.items()}
        share_b = {t: n / chunks[after] for t, n in b.items()}
        moved = sorted(
            set(share_a) | set(share_b),
            key=lambda t: (-abs(share_b.get(t, 0) - share_a.get(t, 0)), t),
        )[:top]
        out.append(
            {
                "from_run": before,
                "to_run": after,
                "jensen_shannon": _jensen_shannon(a, b),
                "moved": [[t, share_a.get(t, 0.0), share_b.get(t, 0.0)] for t in moved],
            }
        )
    return out


def _jensen_shannon(a: Counter[str], b: Counter[str]) -> float:
    total_a, total_b = sum(a.values()), sum(b.values())
    if not total_a or not total_b:
        return 0.0 if total_a == total_b else 1.0
    value = 0.0
    for tag in set(a) | set(b):
        p, q = a[tag] / total_a, b[tag] / total_b
        m = (p + q) / 2
        value += (p * math.log2(p / m) if p else 0.0) + (q * math.log2(q / m) if q else 0.0)
    return max(0.0, value / 2)


def applied_vocabulary(uri: str, storage=None) -> Vocabulary | None:
    """The vocabulary the latest run of an output applied (its manifest's
    `tag_vocabulary.uri`), when there is one and it can still be read."""
    from condlabel.storage import resolve
    from condlabel.tags.vocabulary import load_vocabulary

    fs, root = resolve(uri, storage)
    directory = posixpath.join(root, MANIFEST_DIR)
    if not fs.exists(directory):
        return None
    for path in sorted(fs.find(directory), reverse=True):  # run ids sort by start time
        try:
            record = json.loads(fs.cat_file(path)).get("tag_vocabulary")
        except ValueError:
            continue
        if record:
            try:
                return load_vocabulary(record["uri"], storage)
            except Exception:  # noqa: BLE001 - moved or deleted since: no coverage figures
                return None
    return None


def figure_lines(figures: dict | None, top: int = 5) -> list[str]:
    """The tag figures as the text `condlabel inspect` prints."""
    if not figures:
        return []
    raw, canonical = figures["raw"], figures["canonical"]
    lines = [
        f"tags: {raw['distinct']:,} raw -> {canonical['distinct']:,} canonical distinct "
        f"({figures['rows_mapped']:,} rows mapped by a vocabulary)"
    ]
    if figures["coverage"]:
        c = figures["coverage"]
        lines.append(
            f"vocabulary {c['vocabulary']['fingerprint']}: knows {c['raw_occurrences_known']:.1%} "
            f"of raw tag occurrences; {c['canonical_tags_used']:.1%} of its tags used"
        )
    if figures["co_occurrences"]:
        pairs = ", ".join(f"{a} + {b} {n:,}" for a, b, n in figures["co_occurrences"][:top])
        lines.append(f"top tag pairs: {pairs}")
    for d in figures["drift"][-3:]:
        moved = ", ".join(f"{t} {a:.0%}->{b:.0%}" for t, a, b in d["moved"][:3])
        lines.append(
            f"drift {d['from_run']} -> {d['to_run']}: JS {d['jensen_shannon']:.3f} bits ({moved})"
        )
    return lines
