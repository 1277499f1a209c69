"""Small corpus builders shared by pipeline tests."""

from __future__ import annotations

import json
from pathlib import Path

from condlabel.config import ChunkConfig
from condlabel.convert.chunking import chunk_document
from condlabel.convert.reading import Document

TOPICS = [
    "rivers and bridges",
    "trains and stations",
    "harbours and ships",
    "orchards and bees",
    "glaciers and valleys",
    "printing presses",
    "clock towers",
    "salt marshes",
]


def make_docs(n: int, prefix: str, start: int = 0) -> list[dict]:
    docs = []
    for i in range(start, start + n):
        topic = TOPICS[i % len(TOPICS)]
        paras = [
            f"Paragraph {p} of {prefix} document {i} is about {topic}. "
            f"Surveyors recorded the {topic} near town {i} in spring {2000 + p}. " * (3 + (i % 5))
            for p in range(2 + i % 4)
        ]
        docs.append({"id": f"{prefix}-{i}", "text": "\n\n".join(paras)})
    return docs


def write_jsonl(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def expected_chunks(docs: list[dict], max_words: int) -> int:
    cfg = ChunkConfig(max_words=max_words)
    return sum(len(chunk_document(Document(d["id"], d["text"], "s", 1), cfg)) for d in docs)
