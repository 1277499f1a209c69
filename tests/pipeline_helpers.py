"""Setting up conversions in tests and reading back what they wrote: one way for every test file.

A run is configured either as a `ConvertConfig` (`convert_config`, for `run_conversion`) or as
the `condlabel convert` arguments a user would type (`convert_args`); both take the inputs, the
output and `key=value` overrides. `output_rows` reads the data rows of an output prefix the way
a reader should (skipping `_manifest/`, `_rejects/` and other bookkeeping).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads

from condlabel.config import ConvertConfig, load_convert_config
from condlabel.convert.pipeline import run_conversion
from condlabel.demo import sample_documents

# Overrides for a small run that logs a progress line for every shard (of 2 rows).
FREQUENT_PROGRESS = (
    "chunking.max_words=40",
    "output.rows_per_file=2",
    "compute.progress_interval_s=0.001",
)


def convert_config(inputs: list, output, *overrides: str) -> ConvertConfig:
    return load_convert_config(
        inputs=[str(i) for i in inputs], output=str(output), overrides=list(overrides)
    )


def convert_args(inputs: list, output, *overrides: str) -> list[str]:
    """`condlabel convert` arguments (without the program name) for `cli.main` or a subprocess."""
    args = ["convert"]
    for uri in inputs:
        args += ["--input", str(uri)]
    args += ["--output", str(output)]
    for override in overrides:
        args += ["--set", override]
    return args


def output_rows(output, filesystem=None, columns: list[str] | None = None) -> pa.Table:
    """Every data row under an output prefix (`bucket/key` with an s3fs `filesystem`)."""
    dataset = pads.dataset(
        str(output), filesystem=filesystem, format="parquet", ignore_prefixes=["_", "."]
    )
    return dataset.to_table(columns=columns)


def row_keys(table: pa.Table) -> list[tuple]:
    """(doc_id, chunk_index) of every row, in order."""
    return list(
        zip(
            table.column("doc_id").to_pylist(), table.column("chunk_index").to_pylist(), strict=True
        )
    )


def jsonl_bytes(docs: list[dict]) -> bytes:
    return "".join(json.dumps(d) + "\n" for d in docs).encode()


def make_tagged_output(work: Path, docs: int = 24) -> tuple[Path, list[dict], pa.Table]:
    """Convert `docs` sample documents with the keyphrase labeler on the running Ray; returns the
    output directory, the documents and the rows written."""
    rows = sample_documents(limit=docs)
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "docs.jsonl").write_bytes(jsonl_bytes(rows))
    out = work / "tagged"
    summary = run_conversion(
        convert_config([corpus], out, "chunking.max_words=400", "output.rows_per_file=16")
    )
    if summary.rows_written == 0:
        raise RuntimeError(f"the conversion wrote nothing: {summary.lines()}")
    return out, rows, output_rows(out)
