"""Building conditional examples: prefix (from the configured template) + chunk text, with the
tags mapped through `format.tag_vocabulary` when one is configured (at conversion and at training
time alike: `row_tags`)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from condlabel.config import FormatConfig, StorageConfig
from condlabel.tags.vocabulary import Vocabulary, load_vocabulary, require_rapidfuzz

RAW_TAGS = "raw_tags"
COPIED_FROM = "copied_from"
_TAGS_TYPE = pa.list_(pa.string())


def render_prefix(
    cfg: FormatConfig, synopsis: str, tags: list[str], control_tokens: list[str], parse_ok: bool
) -> str:
    """The prefix for one chunk. A row whose label did not parse, or that has no synopsis and
    no tags (labeler `none`), gets only its control tokens: a failed labeler output never
    becomes training text, and an empty `Synopsis:  Tags: []` never either."""
    tokens = "".join(control_tokens)
    if not parse_ok or not (synopsis or tags):
        return tokens
    return cfg.prefix_template.format(
        synopsis=synopsis, tags=", ".join(tags), control_tokens=tokens
    )


def conditional_text(
    cfg: FormatConfig,
    text: str,
    synopsis: str,
    tags: list[str],
    control_tokens: list[str],
    parse_ok: bool,
) -> str:
    return render_prefix(cfg, synopsis, tags, control_tokens, parse_ok) + text


def vocabulary_for(
    cfg: FormatConfig, storage: StorageConfig | None, key: str = "format.tag_vocabulary"
) -> Vocabulary | None:
    """The configured tag vocabulary (read once per process), or None. `tag_oov: map` needs
    rapidfuzz: its absence fails here, before any work, with the install line."""
    if not cfg.tag_vocabulary:
        return None
    if cfg.tag_oov == "map":
        require_rapidfuzz()
    return load_vocabulary(cfg.tag_vocabulary, storage, key)


def row_tags(row: dict[str, Any], cfg: FormatConfig, vocabulary: Vocabulary | None) -> list[str]:
    """A row's tags as the prefix shows them: through the vocabulary when there is one, from
    the labeler's own (`raw_tags`, else `tags` of a row written without a vocabulary)."""
    if vocabulary is None:
        return list(row.get("tags") or [])
    raw = row.get(RAW_TAGS)
    return vocabulary.map_tags(
        raw if raw is not None else row.get("tags") or [], cfg.tag_oov, cfg.tag_oov_similarity
    )


def tag_columns(cfg: FormatConfig, table: pa.Table, vocabulary: Vocabulary | None) -> pa.Table:
    """`tags` as canonical tags and `raw_tags` as the labeler wrote them when there is a
    vocabulary (`raw_tags` null without one); `copied_from` null on rows that lack it."""
    if COPIED_FROM not in table.column_names:
        table = table.append_column(COPIED_FROM, pa.nulls(table.num_rows, pa.string()))
    if RAW_TAGS not in table.column_names:
        table = table.append_column(RAW_TAGS, pa.nulls(table.num_rows, _TAGS_TYPE))
    if vocabulary is None:
        return table
    rows = table.select(["tags", RAW_TAGS]).to_pylist()
    raw = [r[RAW_TAGS] if r[RAW_TAGS] is not None else list(r["tags"] or []) for r in rows]
    mapped = [row_tags({RAW_TAGS: r}, cfg, vocabulary) for r in raw]
    table = table.set_column(table.column_names.index("tags"), "tags", pa.array(mapped, _TAGS_TYPE))
    return table.set_column(table.column_names.index(RAW_TAGS), RAW_TAGS, pa.array(raw, _TAGS_TYPE))
