"""A real, small tagged output for the read-back tests: the sample corpus through `run_conversion`."""

from __future__ import annotations

import json
from pathlib import Path

from condlabel.config import load_convert_config
from condlabel.convert.pipeline import run_conversion
from condlabel.demo import sample_documents


def make_tagged_output(work: Path, docs: int = 24) -> tuple[Path, list[dict]]:
    """Convert `docs` sample documents with the keyphrase labeler on the running Ray; returns the
    output directory and the documents."""
    rows = sample_documents(limit=docs)
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    (corpus / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = work / "tagged"
    cfg = load_convert_config(
        overrides=["chunking.max_words=400", "output.rows_per_file=16"],
        inputs=[str(corpus)],
        output=str(out),
    )
    summary = run_conversion(cfg)
    if summary.rows_written == 0:
        raise RuntimeError(f"the conversion wrote nothing: {summary.lines()}")
    return out, rows
