"""A teacher's tagged output for distillation tests and the benchmark: the keyphrase labeler
on real text (Python's help topics and module docstrings), written as conversion writes it,
without Ray (the conversion's own read, label, format and write steps)."""

from __future__ import annotations

import json
from pathlib import Path

from condlabel.config import ConvertConfig, load_convert_config
from condlabel.convert.stages import format_table, label_table, read_and_chunk, write_shard
from condlabel.demo import sample_documents
from condlabel.labelers import build_labeler

# A short label (one sentence, three tags) that a tiny student learns in a few hundred steps.
TEACHER_SETTINGS = (
    "chunking.max_words=120",
    "labeler.keyphrase.num_tags=3",
    "labeler.keyphrase.synopsis_sentences=1",
    "labeler.keyphrase.synopsis_max_words=12",
)


def write_corpus(path: Path, docs: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sample_documents(limit=docs)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def teacher_config(corpus: Path | str, output: Path | str, *overrides: str) -> ConvertConfig:
    return load_convert_config(
        inputs=[str(corpus)], output=str(output), overrides=[*TEACHER_SETTINGS, *overrides]
    )


def write_teacher_output(work: Path, docs: int = 60, run_id: str = "teacher-run") -> Path:
    """Label `docs` sample documents with the keyphrase labeler into `work/teacher`."""
    corpus = write_corpus(work / "corpus" / "docs.jsonl", docs)
    out = work / "teacher"
    out.mkdir(parents=True, exist_ok=True)
    cfg = teacher_config(corpus, out)
    labeler = build_labeler(cfg.labeler)
    for table in read_and_chunk(str(corpus), cfg, run_id, rows_per_batch=64):
        if hasattr(table, "num_rows") and table.num_rows:
            labeled = label_table(labeler, table).drop_columns(["_position"])
            write_shard(format_table(cfg.format, labeled, run_id), str(out), cfg.storage, "zstd")
    return out
