"""A sample corpus built offline from text that ships with Python: help topics and docstrings
(`python -m condlabel.demo DIR` writes it alone).

Written as .jsonl, .jsonl.gz and .parquet so the demo exercises every reader.
"""

from __future__ import annotations

import ast
import gzip
import json
import sysconfig
from pathlib import Path


def _help_topics() -> list[tuple[str, str]]:
    from pydoc_data.topics import topics

    return [(f"pydoc-topic-{name}", text) for name, text in sorted(topics.items()) if text.strip()]


def _module_docstrings(min_words: int = 80) -> list[tuple[str, str]]:
    """Module docstrings of the standard library, read with `ast` (nothing is imported)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(stdlib.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        if doc and len(doc.split()) >= min_words:
            docs.append((f"stdlib-{path.stem}", doc))
    return docs


def sample_documents(limit: int | None = None) -> list[dict[str, str]]:
    docs = _help_topics() + _module_docstrings()
    rows = [{"id": doc_id, "text": text} for doc_id, text in docs]
    return rows[:limit] if limit else rows


def write_sample_corpus(directory: str | Path, limit: int | None = None) -> tuple[list[Path], int]:
    """Write the sample corpus in three formats; returns the files written and the number of
    documents in them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rows = sample_documents(limit)
    third = max(1, len(rows) // 3)
    parts = [rows[:third], rows[third : 2 * third], rows[2 * third :]]
    jsonl = out / "part-0.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in parts[0]))
    gz = out / "part-1.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in parts[1])
    parquet = out / "part-2.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            parts[2] or [], schema=pa.schema([("id", pa.string()), ("text", pa.string())])
        ),
        parquet,
    )
    return [jsonl, gz, parquet], len(rows)


if __name__ == "__main__":
    # `python -m condlabel.demo DIR`: only the corpus (the README's cluster walkthrough submits
    # its conversion as a Ray job).
    import sys

    written, count = write_sample_corpus(sys.argv[1] if len(sys.argv) > 1 else "corpus")
    print(f"{count} documents in {len(written)} files in {written[0].parent}")
