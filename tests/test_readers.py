"""The README's "Reading results back" snippets, run as written against a real local output.

The snippets are taken from README.md itself, so the README cannot drift from what works; only
the output prefix (an s3:// example in the README) is replaced with a local directory.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from pipeline_helpers import make_tagged_output

pytestmark = pytest.mark.usefixtures("ray_local")

README = Path(__file__).resolve().parents[1] / "README.md"
OUTPUT_LINE = re.compile(r'^output = "[^"]+"', re.MULTILINE)


def readme_snippets() -> list[str]:
    text = README.read_text()
    section = text.split("## Reading results back", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    return make_tagged_output(tmp_path_factory.mktemp("readers"))


@pytest.fixture(scope="module")
def namespace(tagged, tmp_path_factory):
    """Every snippet executed in order in one namespace, as a user would paste them."""
    out, _, _ = tagged
    snippets = readme_snippets()
    assert len(snippets) == 6, "expected: setup, condlabel, polars, pandas, datasets, duckdb"
    assert OUTPUT_LINE.search(snippets[0]), "the first snippet must set `output`"
    cache = tmp_path_factory.mktemp("hf-cache")
    ns: dict = {}
    for i, code in enumerate(snippets):
        if i == 0:
            code = OUTPUT_LINE.sub(f"output = {str(out)!r}", code)
        if "load_dataset(" in code:  # keep the HF cache inside the test's temp dir
            code = code.replace('split="train",', f'split="train", cache_dir={str(cache)!r},')
        exec(compile(code, f"README.md snippet {i}", "exec"), ns)
    return ns


def test_output_has_bookkeeping_the_readers_must_skip(tagged):
    out, _, table = tagged
    assert (out / "_manifest").is_dir()  # a JSON manifest a naive reader would trip over
    assert table.num_rows > 0


def test_condlabel_read_tagged(namespace, tagged):
    _, docs, table = tagged
    got = namespace["table"]
    assert got.num_rows == table.num_rows
    assert set(got.column("doc_id").to_pylist()) == {d["id"] for d in docs}


def test_polars(namespace, tagged):
    _, _, table = tagged
    df = namespace["df_polars"]
    assert df.height == table.num_rows
    expected = Counter(t for tags in table.column("tags").to_pylist() for t in tags)
    counts = dict(namespace["tag_counts"].iter_rows())
    assert counts == dict(expected)


def test_pandas(namespace, tagged):
    _, _, table = tagged
    df = namespace["df_pandas"]
    assert len(df) == table.num_rows
    assert list(df.columns) == ["doc_id", "chunk_index", "synopsis", "tags", "parse_ok"]
    assert sorted(zip(df.doc_id, df.chunk_index, strict=True)) == sorted(
        zip(
            table.column("doc_id").to_pylist(), table.column("chunk_index").to_pylist(), strict=True
        )
    )


def test_huggingface_datasets(namespace, tagged):
    _, _, table = tagged
    dataset = namespace["dataset"]
    assert dataset.column_names == ["conditional_text"]
    assert len(dataset) == table.num_rows
    assert sorted(dataset["conditional_text"]) == sorted(
        table.column("conditional_text").to_pylist()
    )


def test_duckdb(namespace, tagged):
    _, _, table = tagged
    expected = Counter(t for tags in table.column("tags").to_pylist() for t in tags)
    top = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:20]
    assert [tuple(r) for r in namespace["top_tags"]] == top


def test_huggingface_datasets_reads_every_column(tagged, tmp_path):
    from datasets import load_dataset

    out, _, table = tagged
    dataset = load_dataset(
        "parquet", data_files=f"{out}/part-*.parquet", split="train", cache_dir=str(tmp_path)
    )
    assert len(dataset) == table.num_rows
