"""Outputs whose shards differ in their columns (written by an older release without `seq`, or
with another `input.keep_fields` list) are read with every shard's columns, whichever shard a
listing gives first."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from condlabel.readback import latest_keys, read_tagged
from condlabel.train.data import version_keys


def _row(doc_hash: str, run_id: str, **extra) -> dict:
    return {
        "doc_id": "d",
        "chunk_index": 0,
        "num_chunks": 1,
        "source": "in.jsonl",
        "doc_hash": doc_hash,
        "num_words": 3,
        "text": f"text {doc_hash}",
        "run_id": run_id,
        **extra,
    }


def _output(tmp_path):
    # An older release's shard: no seq; its run id sorts after the newer run's, and its name
    # (`part-<hex>`) before the newer `part-s<seq>-...`.
    pq.write_table(pa.Table.from_pylist([_row("old", "zz-old")]), tmp_path / "part-0aa.parquet")
    newer = _row("new", "aa-new", seq=3, lang="en")
    pq.write_table(pa.Table.from_pylist([newer]), tmp_path / "part-s000003-0bb.parquet")
    return sorted(str(p) for p in tmp_path.glob("*.parquet"))


def test_training_versions_see_the_seq_of_later_shards(tmp_path):
    files = _output(tmp_path)
    keys = version_keys(pads.dataset(files, format="parquet"))
    assert "seq" in keys.column_names
    assert latest_keys(keys).column("doc_hash").to_pylist() == ["new"]


def test_readers_see_a_kept_field_the_first_shard_lacks(tmp_path):
    _output(tmp_path)
    table = read_tagged(str(tmp_path))
    assert table.column("doc_hash").to_pylist() == ["new"]
    assert table.column("lang").to_pylist() == ["en"]
