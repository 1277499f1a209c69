"""Kept input fields (`input.keep_fields`): values in their declared types, the same columns in
every shard, refusals before any work."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import make_docs
from pipeline_helpers import convert_args, convert_config, jsonl_bytes, output_rows

from condlabel.cli import main
from condlabel.config import ConfigError
from condlabel.convert.kept_fields import REJECT_INVALID_KEPT_FIELD, kept_values
from condlabel.convert.stages import FileStats, read_and_chunk
from condlabel.schema import KEPT_FIELD_TYPES, OUTPUT_SCHEMA, output_schema

UTC = dt.timezone.utc
TYPES = {"url": "string", "score": "float64", "year": "int64", "good": "bool", "at": "timestamp"}
TYPES_SET = (
    "input.keep_fields={url: string, score: float64, year: int64, good: bool, at: timestamp}"
)


def test_values_take_their_declared_type():
    record = {
        "url": "https://a.org/x",
        "score": 3,
        "year": "2021",
        "good": "true",
        "at": "2024-05-01T12:00:00Z",
    }
    values, problem = kept_values(record, TYPES)
    assert problem is None
    assert values == {
        "url": "https://a.org/x",
        "score": 3.0,
        "year": 2021,
        "good": True,
        "at": dt.datetime(2024, 5, 1, 12, tzinfo=UTC),
    }
    assert kept_values({}, TYPES) == (dict.fromkeys(TYPES), None)
    # Numbers, objects and arrays kept as text are their JSON.
    assert kept_values({"url": {"a": 1}}, {"url": "string"})[0] == {"url": '{"a": 1}'}
    # A naive timestamp is UTC.
    naive = kept_values({"at": "2024-05-01 08:30"}, {"at": "timestamp"})[0]["at"]
    assert naive == dt.datetime(2024, 5, 1, 8, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "value"),
    [("year", 1.5), ("year", True), ("year", "twenty"), ("score", "high"), ("good", 1), ("at", 17)],
)
def test_a_value_not_of_its_type_names_the_field(name, value):
    values, problem = kept_values({name: value}, TYPES)
    assert values == {}
    assert problem is not None and problem[0] == name and TYPES[name] in problem[1]


def test_the_config_types_are_the_schema_types():
    from typing import get_args

    from condlabel.config.convert import KeptFieldType

    assert set(get_args(KeptFieldType)) == set(KEPT_FIELD_TYPES)


def _chunks(cfg, uri) -> tuple[pa.Table, FileStats]:
    items = list(read_and_chunk(uri, cfg, "run", keep_rejects=False))
    tables = [t for t in items if isinstance(t, pa.Table)]
    return pa.concat_tables(tables), items[-1]


def _records() -> list[dict]:
    docs = make_docs(3, "m")
    docs[0].update(
        url="https://www.A.org/x", score=0.5, year=2020, good=True, at="2024-01-02T03:04:05+01:00"
    )
    docs[1].update(url="http://b.net", year=None)  # the others absent: null
    return docs


def test_jsonl_and_parquet_read_kept_fields_alike(tmp_path):
    docs = _records()
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(docs))
    cfg = convert_config([tmp_path / "in.jsonl"], tmp_path / "o", TYPES_SET)
    from_jsonl, _ = _chunks(cfg, str(tmp_path / "in.jsonl"))
    sink = io.BytesIO()
    # The parquet file stores the timestamp as a timestamp column, the year as int64.
    parquet_docs = [
        {**d, "at": dt.datetime.fromisoformat(d["at"]) if d.get("at") else None} for d in docs
    ]
    pq.write_table(pa.Table.from_pylist(parquet_docs), sink)
    (tmp_path / "in.parquet").write_bytes(sink.getvalue())
    from_parquet, _ = _chunks(cfg, str(tmp_path / "in.parquet"))
    for table in (from_jsonl, from_parquet):
        for name, typ in TYPES.items():
            assert table.schema.field(name).type == KEPT_FIELD_TYPES[typ]
    columns = list(TYPES)
    assert from_jsonl.select(columns).to_pylist() == from_parquet.select(columns).to_pylist()
    first = from_jsonl.filter(pa.compute.equal(from_jsonl.column("doc_id"), "m-0")).to_pylist()[0]
    assert first["at"] == dt.datetime(2024, 1, 2, 2, 4, 5, tzinfo=UTC)
    second = from_jsonl.filter(pa.compute.equal(from_jsonl.column("doc_id"), "m-1")).to_pylist()[0]
    assert second["url"] == "http://b.net" and second["year"] is None and second["score"] is None


def test_a_bad_value_rejects_its_record(tmp_path):
    docs = _records()
    docs[2]["year"] = "soon"
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(docs))
    cfg = convert_config([tmp_path / "in.jsonl"], tmp_path / "o", TYPES_SET)
    table, stats = _chunks(cfg, str(tmp_path / "in.jsonl"))
    assert stats.rejected == {REJECT_INVALID_KEPT_FIELD: 1}
    assert "m-2" not in table.column("doc_id").to_pylist()


def test_kept_fields_round_trip_through_s3(s3_bucket, s3fs_client, ray_local):
    docs = _records() + make_docs(4, "n")
    s3fs_client.pipe(f"{s3_bucket}/in/a.jsonl", jsonl_bytes(docs[:3]))
    sink = io.BytesIO()
    rows = [{**d, "at": dt.datetime(2023, 6, 1, tzinfo=UTC), "score": 1.25} for d in docs[3:]]
    pq.write_table(pa.Table.from_pylist(rows), sink)
    s3fs_client.pipe(f"{s3_bucket}/in/b.parquet", sink.getvalue())
    out = f"s3://{s3_bucket}/kept"
    args = convert_args(
        [f"s3://{s3_bucket}/in/"], out, TYPES_SET, "chunking.max_words=60", "output.rows_per_file=4"
    )
    assert main(args) == 0
    s3fs_client.invalidate_cache()
    table = output_rows(f"{s3_bucket}/kept", s3fs_client)
    assert table.schema.remove_metadata() == output_schema(TYPES)
    assert table.schema.names[: len(OUTPUT_SCHEMA)] == OUTPUT_SCHEMA.names
    by_doc = {r["doc_id"]: r for r in table.to_pylist()}
    assert by_doc["m-0"]["url"] == "https://www.A.org/x" and by_doc["m-0"]["good"] is True
    assert by_doc["m-0"]["year"] == 2020 and by_doc["m-1"]["year"] is None
    assert by_doc["n-1"]["score"] == 1.25 and by_doc["n-1"]["url"] is None
    assert by_doc["n-1"]["at"] == dt.datetime(2023, 6, 1, tzinfo=UTC)
    # Every shard, even one whose rows lack a field, has each column in its type.
    for path in s3fs_client.glob(f"{s3_bucket}/kept/*.parquet"):
        with s3fs_client.open(path, "rb") as f:
            assert pq.read_schema(f).remove_metadata() == output_schema(TYPES)


def test_a_kept_field_named_like_an_output_column_is_refused(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(_records()))
    args = convert_args([tmp_path / "in.jsonl"], tmp_path / "o", "input.keep_fields=[url, tags]")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "input.keep_fields" in err and "'tags'" in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_a_field_the_first_file_lacks_is_refused_naming_it(tmp_path, capsys):
    (tmp_path / "in.jsonl").write_bytes(jsonl_bytes(_records()))
    args = convert_args([tmp_path / "in.jsonl"], tmp_path / "o", "input.keep_fields=[url, uri]")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "'uri'" in err and "in.jsonl" in err and "'url'" not in err


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("input.keep_fields=[url, url]", "listed twice"),
        ("input.keep_fields=[_position]", "bookkeeping"),
        ("input.keep_fields={url: decimal}", "input.keep_fields"),
        ("format.prefix_template='{meta.lang} '", "input.keep_fields"),
        ("format.prefix_template='{url_domain} '", "input.url_field"),
        ("format.prefix_template='{meta.} '", "unknown field"),
    ],
)
def test_bad_keep_fields_and_template_fields_fail_at_load(tmp_path, override, key):
    with pytest.raises(ConfigError) as err:
        convert_config([tmp_path], tmp_path / "o", override)
    assert key in str(err.value)


def test_json_null_and_absent_field_are_both_null(tmp_path):
    lines = [
        json.dumps({"id": "a", "text": "one two three", "url": None}),
        json.dumps({"id": "b", "text": "four five six"}),
    ]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    cfg = convert_config([tmp_path / "in.jsonl"], tmp_path / "o", "input.keep_fields=[url]")
    table, _ = _chunks(cfg, str(tmp_path / "in.jsonl"))
    assert table.column("url").to_pylist() == [None, None]
