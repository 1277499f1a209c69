"""The conversion's format step on a labeled table: the tag columns (canonical `tags` and the
labeler's `raw_tags` when `format.tag_vocabulary` is set). The prefix itself is rendered by
`condlabel.prefix`, shared with training and evaluation."""

from __future__ import annotations

import pyarrow as pa

from condlabel.config import FormatConfig
from condlabel.prefix import RAW_TAGS, row_tags
from condlabel.tags.vocabulary import Vocabulary

COPIED_FROM = "copied_from"
_TAGS_TYPE = pa.list_(pa.string())


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
