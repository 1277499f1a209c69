"""Labels depend on the text alone: a document whose kept fields changed gets its rows again
with the labels it has, the prefix showing the new fields."""

from __future__ import annotations

import pyarrow as pa
from pipeline_helpers import convert_config, jsonl_bytes

from condlabel.convert.metadata_rewrite import kept_fields_key, rewrite_rows, stale_rows
from condlabel.convert.stages import format_table, label_table, read_and_chunk
from condlabel.labelers import build_labeler

DOCS = [
    {
        "id": "a",
        "text": "Harbour cranes unload grain ships at dawn. " * 20,
        "url": "https://a.org/1",
    },
    {
        "id": "b",
        "text": "Alpine meadows bloom with gentians in June. " * 20,
        "url": "https://b.org/2",
    },
]
# Double-quoted YAML, so `\\n` is a line break of the template.
TEMPLATE = (
    'format.prefix_template="{url_domain}\\n{control_tokens}Synopsis: {synopsis} Tags: [{tags}]\\n"'
)


def _chunks(tmp_path, docs, *overrides):
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl_bytes(docs))
    cfg = convert_config([path], tmp_path / "out", "chunking.max_words=60", TEMPLATE, *overrides)
    tables = [
        t
        for t in read_and_chunk(str(path), cfg, "r", keep_rejects=False)
        if isinstance(t, pa.Table)
    ]
    return cfg, pa.concat_tables(tables)


def _written(tmp_path) -> pa.Table:
    cfg, chunks = _chunks(tmp_path, DOCS, "input.keep_fields=[url]")
    labeler = build_labeler(cfg.labeler, cfg.storage)
    return format_table(cfg.format, label_table(labeler, chunks), "r1", None, cfg.input)


def test_a_changed_value_rewrites_the_rows_with_their_labels(tmp_path):
    written = _written(tmp_path)
    moved = [{**DOCS[0], "url": "https://www.c.net/1"}, DOCS[1]]
    cfg, chunks = _chunks(tmp_path, moved, "input.keep_fields=[url]")
    stale = stale_rows(chunks, written, cfg.input.kept_types)
    assert set(stale.column("doc_id").to_pylist()) == {"a"}
    rows = rewrite_rows(stale, written, cfg, "r2").to_pylist()
    old = {(r["doc_id"], r["chunk_index"]): r for r in written.to_pylist()}
    assert len(rows) == stale.num_rows
    for row in rows:
        before = old[(row["doc_id"], row["chunk_index"])]
        for name in (
            "synopsis",
            "tags",
            "control_tokens",
            "labeler",
            "logprob",
            "text",
            "doc_hash",
        ):
            assert row[name] == before[name]
        assert row["url"] == "https://www.c.net/1" and row["run_id"] == "r2"
        assert row["conditional_text"].startswith("c.net\n")
        assert row["conditional_text"] == before["conditional_text"].replace("a.org", "c.net", 1)
    # What a fresh labeling of the new rows would have written, without a labeler call.
    fresh = format_table(
        cfg.format,
        label_table(build_labeler(cfg.labeler, cfg.storage), stale),
        "r2",
        None,
        cfg.input,
    )
    assert rows == fresh.to_pylist()


def test_a_changed_keep_fields_list_makes_every_row_stale(tmp_path):
    written = _written(tmp_path)
    docs = [{**d, "lang": "en"} for d in DOCS]
    cfg, chunks = _chunks(tmp_path, docs, "input.keep_fields=[url, lang]")
    stale = stale_rows(chunks, written, cfg.input.kept_types)
    assert stale.num_rows == chunks.num_rows
    rows = rewrite_rows(stale, written, cfg, "r2")
    assert set(rows.column("lang").to_pylist()) == {"en"}
    # Unchanged fields: nothing is stale.
    cfg, same = _chunks(tmp_path, DOCS, "input.keep_fields=[url]")
    assert stale_rows(same, written, cfg.input.kept_types).num_rows == 0


def test_a_chunk_with_new_text_is_not_rewritten(tmp_path):
    written = _written(tmp_path)
    edited = [
        {**DOCS[0], "text": "Entirely new words about lighthouses. " * 20, "url": "https://d.org"}
    ]
    cfg, chunks = _chunks(tmp_path, edited, "input.keep_fields=[url]")
    assert stale_rows(chunks, written, cfg.input.kept_types).num_rows == 0
    assert rewrite_rows(chunks, written, cfg, "r2").num_rows == 0


def test_the_key_covers_names_types_and_values():
    row = {"url": "x", "year": 1}
    keys = {
        kept_fields_key(row, {"url": "string"}),
        kept_fields_key(row, {"url": "string", "year": "int64"}),
        kept_fields_key(row, {"url": "string", "year": "string"}),
        kept_fields_key({**row, "url": "y"}, {"url": "string"}),
    }
    assert len(keys) == 4
