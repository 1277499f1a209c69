"""The README's "Reading without condlabel" SQL, run as written (only the shard path replaced)
against an output that holds history: a document edited between runs and a chunk written
twice. It must return exactly the rows `condlabel.read_tagged` returns.

DuckDB runs in a fresh interpreter, as in test_readers.py: its native code is kept apart from
the Ray and torch this process carries."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pipeline_helpers import convert_config, jsonl_bytes

import condlabel
from condlabel.convert.pipeline import run_conversion
from condlabel.demo import sample_documents
from condlabel.schema import OUTPUT_SCHEMA

pytestmark = pytest.mark.usefixtures("ray_local")

README = Path(__file__).resolve().parents[1] / "README.md"
SHARDS_IN_README = "s3://tagged/crawl-2026-11/part-*.parquet"

CHILD = r"""
import json, sys
import duckdb
sql = sys.stdin.read()
rows = duckdb.sql(sql).fetchall()
names = [d[0] for d in duckdb.sql(sql).description]
keys = [[r[names.index(k)] for k in ("doc_id", "doc_hash", "chunk_index", "text")] for r in rows]
print(json.dumps(keys))
"""


def readme_sql() -> str:
    section = README.read_text().split("## Reading without condlabel", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 1, "expected one SQL example in the README's reading-without section"
    assert SHARDS_IN_README in blocks[0], f"the SQL should read {SHARDS_IN_README}"
    return blocks[0]


def test_readme_sql_is_the_current_row_rule():
    sql = readme_sql()
    for needed in ("seq", "doc_hash", "chunk_index", "doc_id"):
        assert needed in sql


@pytest.mark.skipif("seq" not in OUTPUT_SCHEMA.names, reason="the output has no `seq` column yet")
def test_readme_sql_returns_what_read_tagged_returns(tmp_path):
    docs = sample_documents(limit=12)
    corpus, out = tmp_path / "corpus", tmp_path / "tagged"
    corpus.mkdir()
    (corpus / "docs.jsonl").write_bytes(jsonl_bytes(docs))
    overrides = ("chunking.max_words=400", "output.rows_per_file=16")
    run_conversion(convert_config([corpus], out, *overrides))
    # History: one document edited, converted again (its old rows stay on storage) ...
    docs[0] = {**docs[0], "text": docs[0]["text"] + "\n\nA paragraph added later."}
    (corpus / "docs.jsonl").write_bytes(jsonl_bytes(docs))
    run_conversion(convert_config([corpus], out, *overrides))
    # ... and a shard written twice, as a retried write of a resumed run can leave it.
    first = sorted(out.glob("part-*.parquet"))[0]
    shutil.copy(first, out / f"part-{'0' * 8}-again.parquet")

    sql = readme_sql().replace(SHARDS_IN_README, f"{out}/part-*.parquet")
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", CHILD],
        input=sql,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"the README SQL failed:\n{proc.stderr[-4000:]}"
    got = sorted(tuple(r) for r in json.loads(proc.stdout.strip().splitlines()[-1]))

    table = condlabel.read_tagged(str(out), columns=["doc_id", "doc_hash", "chunk_index", "text"])
    expected = sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))
    assert got == [tuple(r) for r in expected]
    assert any(docs[0]["text"].endswith(t) or "added later" in t for _, _, _, t in got)
