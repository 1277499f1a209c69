"""The README's "Reading results back" snippets, run as written against a real local output.

The snippets are taken from README.md itself, so the README cannot drift from what works; only
the output prefix (an s3:// example in the README) is replaced with a local directory.

They run in a fresh interpreter, as a user would paste them, and not inside the test process:
that process carries Ray, torch and CTranslate2 by now, and the readers' native code (DuckDB,
polars, Arrow's thread pools) crashed once in CI in that company (a segfault in
`load_dataset`) where it never did alone. A crash in the child fails these tests with its
output; it does not take the rest of the test run down with it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import make_tagged_output

pytestmark = pytest.mark.usefixtures("ray_local")

README = Path(__file__).resolve().parents[1] / "README.md"
OUTPUT_LINE = re.compile(r'^output = "[^"]+"', re.MULTILINE)

# Runs in the child: each snippet in order in one namespace, then prints what the tests check
# as one JSON line. Snippets are compiled under their README name, so a traceback says which.
CHILD = r"""
import json, sys
snippets, shards, cache = json.load(sys.stdin)
ns = {}
for i, code in enumerate(snippets):
    exec(compile(code, f"README.md snippet {i}", "exec"), ns)

from datasets import load_dataset

every_column = load_dataset("parquet", data_files=shards, split="train", cache_dir=cache)
print(json.dumps({
    "table_rows": ns["table"].num_rows,
    "table_doc_ids": sorted(set(ns["table"].column("doc_id").to_pylist())),
    "polars_height": ns["df_polars"].height,
    "tag_counts": [list(r) for r in ns["tag_counts"].iter_rows()],
    "pandas_columns": list(ns["df_pandas"].columns),
    "pandas_keys": sorted([d, int(c)] for d, c in zip(ns["df_pandas"].doc_id,
                                                     ns["df_pandas"].chunk_index)),
    "dataset_columns": ns["dataset"].column_names,
    "dataset_texts": sorted(ns["dataset"]["conditional_text"]),
    "top_tags": [list(r) for r in ns["top_tags"]],
    "every_column_rows": len(every_column),
    "every_column_names": every_column.column_names,
}))
"""


def readme_snippets() -> list[str]:
    text = README.read_text()
    section = text.split("## Reading results back", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    return make_tagged_output(tmp_path_factory.mktemp("readers"))


@pytest.fixture(scope="module")
def results(tagged, tmp_path_factory) -> dict:
    """Every snippet executed in order in one fresh interpreter, as a user would paste them."""
    out, _, _ = tagged
    snippets = readme_snippets()
    assert len(snippets) == 6, "expected: setup, condlabel, polars, pandas, datasets, duckdb"
    assert OUTPUT_LINE.search(snippets[0]), "the first snippet must set `output`"
    cache = str(tmp_path_factory.mktemp("hf-cache"))  # keep the HF cache inside the temp dir
    snippets[0] = OUTPUT_LINE.sub(f"output = {str(out)!r}", snippets[0])
    snippets = [
        code.replace('split="train",', f'split="train", cache_dir={cache!r},')
        if "load_dataset(" in code
        else code
        for code in snippets
    ]
    proc = subprocess.run(
        [sys.executable, "-X", "faulthandler", "-c", CHILD],
        input=json.dumps([snippets, f"{out}/part-*.parquet", cache]),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
    )
    assert proc.returncode == 0, (
        f"the README snippets failed (exit {proc.returncode}):\n{proc.stderr[-6000:]}"
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_output_has_bookkeeping_the_readers_must_skip(tagged):
    out, _, table = tagged
    assert (out / "_manifest").is_dir()  # a JSON manifest a naive reader would trip over
    assert table.num_rows > 0


def test_condlabel_read_tagged(results, tagged):
    _, docs, table = tagged
    assert results["table_rows"] == table.num_rows
    assert results["table_doc_ids"] == sorted({d["id"] for d in docs})


def test_polars(results, tagged):
    _, _, table = tagged
    assert results["polars_height"] == table.num_rows
    expected = Counter(t for tags in table.column("tags").to_pylist() for t in tags)
    assert dict(map(tuple, results["tag_counts"])) == dict(expected)


def test_pandas(results, tagged):
    _, _, table = tagged
    assert results["pandas_columns"] == ["doc_id", "chunk_index", "synopsis", "tags", "parse_ok"]
    keys = zip(
        table.column("doc_id").to_pylist(), table.column("chunk_index").to_pylist(), strict=True
    )
    assert results["pandas_keys"] == sorted([d, c] for d, c in keys)


def test_huggingface_datasets(results, tagged):
    _, _, table = tagged
    assert results["dataset_columns"] == ["conditional_text"]
    assert results["dataset_texts"] == sorted(table.column("conditional_text").to_pylist())


def test_duckdb(results, tagged):
    _, _, table = tagged
    expected = Counter(t for tags in table.column("tags").to_pylist() for t in tags)
    top = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert [tuple(r) for r in results["top_tags"]] == top


def test_huggingface_datasets_reads_every_column(results, tagged):
    _, _, table = tagged
    assert results["every_column_rows"] == table.num_rows
    assert results["every_column_names"] == table.column_names
