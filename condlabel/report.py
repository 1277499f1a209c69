"""A self-contained HTML report of a tagged output, for people who would rather look than read JSON.

One file, no external requests: tables in HTML, plots as PNGs embedded in base64 `data:` URIs,
drawn by matplotlib's Agg canvas (no display, no pyplot global state). matplotlib is an optional
extra imported only here: `pip install 'condlabel[report]'`.
"""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa

INSTALL_HINT = "pip install 'condlabel[report]'"


def require_matplotlib() -> None:
    """Fail early, with the install line, when the report extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"the HTML report needs matplotlib: {INSTALL_HINT}") from exc


def _figure(width: float = 7.0, height: float = 3.6):
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_tag_frequencies(top_tags: list[tuple[str, int]]) -> str | None:
    """Horizontal bars of the most frequent tags, most frequent on top; base64 PNG."""
    if not top_tags:
        return None
    tags = [t for t, _ in top_tags][::-1]
    counts = [n for _, n in top_tags][::-1]
    fig = _figure(height=max(2.5, 0.28 * len(tags) + 1.0))
    ax = fig.add_subplot()
    ax.barh(range(len(tags)), counts, color="#4C72B0")
    ax.set_yticks(range(len(tags)), [t if len(t) <= 40 else t[:39] + "…" for t in tags], fontsize=8)
    ax.set_xlabel("chunks carrying the tag")
    ax.set_title(f"Top {len(tags)} tags")
    return _png(fig)


def plot_histogram(values: list[float], title: str, xlabel: str, bins: int = 40) -> str | None:
    """Histogram of the non-null values; None when there are none (nothing to draw)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(values, bins=min(bins, max(1, len(set(values)))), color="#55A868", edgecolor="white")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("chunks")
    return _png(fig)


def _column(table: pa.Table, name: str) -> list:
    return table.column(name).to_pylist() if name in table.column_names else []


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(headers: list[str], rows: list[list[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_DIST_KEYS = ["count", "null", "mean", "p00", "p05", "p25", "p50", "p75", "p95", "p100"]


def _distribution_rows(info: dict[str, Any], names: list[tuple[str, str]]) -> list[list[Any]]:
    rows = []
    for key, label in names:
        stats = info.get(key)
        if stats is not None:
            rows.append([label] + [stats.get(k) for k in _DIST_KEYS])
    return rows


def _image(b64: str | None, alt: str, missing: str) -> str:
    if b64 is None:
        return f'<p class="note">{html.escape(missing)}</p>'
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{b64}">'


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1000px;
color:#222;padding:0 1em}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.kv td:first-child{font-weight:600}.note{color:#777;font-style:italic}
img{max-width:100%;display:block;margin:.5em 0}
pre{white-space:pre-wrap;background:#f8f8f8;padding:.6em;border:1px solid #eee;font-size:12px}
.muted{color:#777}
"""


def render_report(info: dict[str, Any], table: pa.Table, source: str) -> str:
    """The report as one HTML string. `info` is `readback.summarize`'s output, `table` the rows
    it was computed from (SUMMARY_COLUMNS suffice)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>condlabel report: {html.escape(source)}</title><style>{_CSS}</style></head><body>",
        f"<h1>condlabel output report</h1><p class='muted'>{html.escape(source)} — generated "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}</p>",
        "<h2>Overview</h2>",
        _table(["", "value"], _overview_rows(info), "kv"),
        "<h2>Labelers</h2>",
        _table(["labeler fingerprint", "rows"], [[k, v] for k, v in info["labelers"].items()]),
        _table(["run", "rows"], [[k, v] for k, v in info["runs"].items()]),
        *_tag_sections(info),
        *_tag_figure_sections(info.get("tag_figures")),
        *_score_and_length_sections(info, table),
        *_sample_sections(info),
        "</body></html>",
    ]
    return "\n".join(parts)


def _overview_rows(info: dict[str, Any]) -> list[list[Any]]:
    return [
        ["rows (chunks)", info["rows"]],
        ["documents", info["documents"]],
        ["source files", info["sources"]],
        ["parse failures", f"{info['parse_failures']:,} ({info['parse_failure_rate']:.2%})"],
        ["truncated chunks", info["truncated"]],
        ["distinct tags", info["distinct_tags"]],
        ["words (total)", (info.get("num_words") or {}).get("sum")],
        ["input tokens (total)", (info.get("input_tokens") or {}).get("sum")],
        ["generated tokens (total)", (info.get("num_generated_tokens") or {}).get("sum")],
        *_reject_rows(info.get("rejects")),
    ]


def _reject_rows(rejects: dict[str, Any] | None) -> list[list[Any]]:
    """Rejected input records and chunks (kept in `_rejects/`): the total, then each reason."""
    if rejects is None:
        return []
    return [["rejected (kept in _rejects/)", rejects["total"]]] + [
        [f"rejected: {reason}", n] for reason, n in rejects["reasons"].items()
    ]


def _tag_sections(info: dict[str, Any]) -> list[str]:
    rows = info["rows"]
    parts = [
        "<h2>Tags</h2>",
        _image(
            plot_tag_frequencies(info["top_tags"]), "tag frequencies", "No tags in this output."
        ),
        _table(
            ["tag", "chunks", "share of chunks"],
            [[t, n, f"{n / rows:.1%}" if rows else "—"] for t, n in info["top_tags"]],
        ),
    ]
    if info["control_tokens"]:
        parts += [
            "<h3>Control tokens</h3>",
            _table(["token", "chunks"], [list(x) for x in info["control_tokens"]]),
        ]
    return parts


def _tag_figure_sections(figures: dict[str, Any] | None) -> list[str]:
    """Raw vs canonical tags, vocabulary coverage, tag pairs and drift between runs."""
    if not figures:
        return []
    raw, canonical, cov = figures["raw"], figures["canonical"], figures["coverage"]
    rows: list[list[Any]] = [
        ["distinct tags", raw["distinct"], canonical["distinct"]],
        ["tag occurrences (chunk, tag)", raw["occurrences"], canonical["occurrences"]],
    ]
    parts = [
        "<h2>Tag vocabulary</h2>",
        _table(["", "raw (labeler)", "canonical"], rows),
        f"<p class='muted'>{figures['rows_mapped']:,} rows mapped by a tag vocabulary.</p>",
    ]
    if cov:
        parts.append(
            _table(
                ["vocabulary", "canonical tags", "raw occurrences it knows", "its tags used"],
                [
                    [
                        cov["vocabulary"]["fingerprint"],
                        cov["vocabulary"]["canonical_tags"],
                        f"{cov['raw_occurrences_known']:.1%}",
                        f"{cov['canonical_tags_used']:.1%}",
                    ]
                ],
            )
        )
    if figures["co_occurrences"]:
        parts += [
            "<h3>Top tag co-occurrences</h3>",
            _table(["tag", "tag", "chunks carrying both"], figures["co_occurrences"]),
        ]
    if figures["drift"]:
        drift_rows = [
            [
                d["from_run"],
                d["to_run"],
                round(d["jensen_shannon"], 4),
                "; ".join(f"{t} {a:.1%} → {b:.1%}" for t, a, b in d["moved"]),
            ]
            for d in figures["drift"]
        ]
        parts += [
            "<h3>Tag frequency drift between runs</h3>",
            _table(
                ["from run", "to run", "Jensen-Shannon (bits)", "tags that moved most"], drift_rows
            ),
        ]
    return parts


_DISTRIBUTIONS = [
    ("logprob", "logprob"),
    ("mean_logprob", "mean logprob"),
    ("num_generated_tokens", "generated tokens"),
    ("tags_per_chunk", "tags per chunk"),
    ("num_words", "words per chunk"),
    ("input_tokens", "input tokens per chunk"),
    ("chunks_per_document", "chunks per document"),
]


def _score_and_length_sections(info: dict[str, Any], table: pa.Table) -> list[str]:
    logprob_plot = plot_histogram(
        _column(table, "logprob"), "Labeler log-probability (sum over generated tokens)", "logprob"
    )
    lp_missing = (
        "No log-probabilities: the labeler(s) of this output do not score their outputs "
        "(e.g. the keyphrase labeler), so every logprob is null."
    )
    words_plot = plot_histogram(_column(table, "num_words"), "Chunk length", "words per chunk")
    tokens_plot = plot_histogram(
        _column(table, "input_tokens"), "Chunk length in labeler tokens", "input tokens per chunk"
    )
    parts = [
        "<h2>Log-probabilities</h2>",
        _image(logprob_plot, "log-probability histogram", lp_missing),
        "<h2>Distributions</h2>",
        _table(["column", *_DIST_KEYS], _distribution_rows(info, _DISTRIBUTIONS)),
        "<h2>Chunk lengths</h2>",
        _image(words_plot, "chunk length histogram", "No chunks."),
    ]
    if tokens_plot is not None:
        parts.append(_image(tokens_plot, "chunk token histogram", ""))
    return parts


def _sample_sections(info: dict[str, Any]) -> list[str]:
    if not info["samples"]:
        return []
    parts = ["<h2>Samples</h2>"]
    for row in info["samples"]:
        parts.append(
            f"<p class='muted'>{html.escape(str(row.get('doc_id')))} chunk "
            f"{html.escape(str(row.get('chunk_index')))} — "
            f"{html.escape(str(row.get('source')))}</p>"
            f"<pre>{html.escape(row.get('conditional_text') or '')}</pre>"
        )
    return parts


def write_report(path: str | Path, info: dict[str, Any], table: pa.Table, source: str) -> Path:
    """Render the report and write it to `path` (a local file); returns the path."""
    require_matplotlib()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(info, table, source), encoding="utf-8")
    return out
