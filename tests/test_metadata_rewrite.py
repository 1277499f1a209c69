"""Labels depend on the text alone: a document whose kept fields changed gets its rows again
with the labels it has, the prefix showing the new fields (the table functions here; a run
end to end, locally and on the S3 server, below them)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from pipeline_helpers import convert_config, jsonl_bytes

from condlabel.config import StorageConfig
from condlabel.convert.metadata_rewrite import kept_fields_key, relabeled, stale_rows
from condlabel.convert.stages import format_table, label_table, read_and_chunk
from condlabel.labelers import build_labeler
from condlabel.runs.runstate import read_manifests

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


def _rewrite(stale: pa.Table, written: pa.Table, cfg) -> pa.Table:
    """What the write step makes of the held rows."""
    return format_table(cfg.format, relabeled(stale, written), "r2", None, cfg.input)


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
    rows = _rewrite(stale, written, cfg).to_pylist()
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
    rows = _rewrite(stale, written, cfg)
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
    assert relabeled(chunks, written).num_rows == 0


def test_the_key_covers_names_types_and_values():
    row = {"url": "x", "year": 1}
    keys = {
        kept_fields_key(row, ["url"]),
        kept_fields_key(row, ["url", "year"]),
        kept_fields_key({**row, "year": "1"}, ["url", "year"]),  # another declared type
        kept_fields_key({**row, "url": "y"}, ["url"]),
        kept_fields_key({}, ["url"]),  # a row without the field: null
    }
    assert len(keys) == 5


# --------------------------------------------------------------------------- a run, end to end

RUN = ("chunking.max_words=60", "output.rows_per_file=4", TEMPLATE)


def _convert(inputs, out, *overrides):
    from pipeline_helpers import convert_config

    from condlabel.convert.pipeline import run_conversion

    return run_conversion(convert_config(inputs, out, *RUN, *overrides))


def _served(out, storage=None) -> dict[tuple, dict]:
    from condlabel.readback import read_tagged

    rows = read_tagged(str(out), storage=storage).to_pylist()
    return {(r["doc_id"], r["chunk_index"]): r for r in rows}


LABELS = ("synopsis", "tags", "control_tokens", "labeler", "logprob", "mean_logprob", "run_id")


@pytest.mark.usefixtures("ray_local")
def test_a_changed_value_rewrites_its_rows_at_the_next_run_and_nothing_is_relabeled(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_bytes(jsonl_bytes(DOCS))
    out = tmp_path / "out"
    first = _convert([source], out, "input.keep_fields=[url]")
    before = _served(out)
    source.write_bytes(jsonl_bytes([{**DOCS[0], "url": "https://www.c.net/1"}, DOCS[1]]))
    second = _convert([source], out, "input.keep_fields=[url]")
    after = _served(out)
    moved = [k for k in after if k[0] == "a"]
    # No labeler started: every chunk was found done; only doc a's rows were written again.
    assert second.labeler_actors == 0 and second.skipped_done == first.rows_written
    assert second.rows_rewritten == second.rows_written == len(moved) > 0
    counts = [m["counts"] for m in read_manifests(str(out), StorageConfig())]
    assert sorted(c["rows_rewritten"] for c in counts) == [0, len(moved)]
    assert after.keys() == before.keys()
    for key, row in after.items():
        old = before[key]
        if key[0] == "a":
            assert row["url"] == "https://www.c.net/1" and row["seq"] > old["seq"]
            assert row["conditional_text"].startswith("c.net\n")
            assert row["copied_from"] == old["copied_from"]
            for name in ("synopsis", "tags", "control_tokens", "labeler", "logprob"):
                assert row[name] == old[name], name
        else:
            assert row == old  # untouched
    # The next run finds everything current: the file is complete in the ledger.
    third = _convert([source], out, "input.keep_fields=[url]")
    assert third.rows_written == 0 and third.files_skipped == 1
    assert not any(p.name == "_rewrites" for p in out.iterdir())


def test_a_new_keep_fields_list_rewrites_every_row_on_the_s3_server(
    s3_bucket, s3fs_client, ray_local
):
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(DOCS))
    out = f"s3://{s3_bucket}/out"
    first = _convert([f"s3://{s3_bucket}/in/"], out, "input.keep_fields=[url]")
    storage = StorageConfig()
    before = _served(out, storage)
    docs = [{**d, "lang": "en"} for d in DOCS]
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(docs))
    # Same bytes for the text: a new list alone (the ledger's fingerprint covers it).
    second = _convert(
        [f"s3://{s3_bucket}/in/"], out, "input.keep_fields={url: string, lang: string}"
    )
    after = _served(out, storage)
    assert second.labeler_actors == 0 and second.rows_rewritten == first.rows_written
    assert after.keys() == before.keys()
    for key, row in after.items():
        assert row["lang"] == "en" and row["url"] == before[key]["url"]
        assert [row[n] for n in LABELS[:-1]] == [before[key][n] for n in LABELS[:-1]]
    s3fs_client.invalidate_cache()
    assert not s3fs_client.exists(f"{s3_bucket}/out/_rewrites")
