"""The labeler output format `Synopsis: ... Tags: [a, b, c]`: rendering and tolerant parsing."""

from __future__ import annotations

import re
from dataclasses import dataclass

PROMPT_VERSION = "synopsis-tags-v1"

DECODER_PROMPT_TEMPLATE = (
    "Read the document and write a one- or two-sentence synopsis of it, then a list of short "
    "descriptive tags, in the form `Synopsis: ... Tags: [tag one, tag two, ...]`.\n\n"
    "Document:\n{text}\n\nSynopsis:"
)
"""Prompt of a decoder-only (causal) labeler: an instruction, the chunk, and the start of the
answer. The model continues after `Synopsis:`; the backends prepend the marker before parsing.
The default of the `vllm` backend; the `hf` backend's causal path takes the same string as its
`prompt_template`."""

# Special tokens a generative labeler may leave in decoded text.
_SPECIAL = re.compile(r"</s>|<pad>|<s>|<unk>|<\|endoftext\|>|<\|eot_id\|>|<\|im_end\|>|<eos>")
_SYNOPSIS = re.compile(r"synopsis\s*:\s*", re.I)
_TAGS = re.compile(r"\btags?\s*:\s*", re.I)


@dataclass(frozen=True)
class ParsedLabel:
    synopsis: str
    tags: list[str]
    ok: bool


def render_label(synopsis: str, tags: list[str]) -> str:
    """The canonical text a labeler writes (and the CPU labeler's `raw_output`)."""
    return f"Synopsis: {synopsis} Tags: [{', '.join(tags)}]"


def _clean_tags(raw: str) -> list[str]:
    raw = raw.strip()
    if raw.startswith("["):
        raw = raw[1:]
    raw = raw.split("]", 1)[0]  # anything after the closing bracket is not a tag
    seen: set[str] = set()
    tags = []
    for part in raw.split(","):
        tag = " ".join(part.strip().strip("\"'").split())
        key = tag.lower()
        if tag and key not in seen:
            seen.add(key)
            tags.append(tag)
    return tags


def parse_label(text: str) -> ParsedLabel:
    """Parse `Synopsis: ... Tags: [...]`.

    Tolerates a leading space inside the brackets, missing brackets, a missing `Tags:` part,
    duplicated tags, trailing special tokens and output cut at max_new_tokens (the last,
    partial tag is kept). `ok` is False when no synopsis can be found.
    """
    text = _SPECIAL.sub(" ", text or "").strip()
    syn = _SYNOPSIS.search(text)
    tag = _TAGS.search(text, syn.end() if syn else 0)
    if syn is None:
        synopsis = text[: tag.start()].strip() if tag else ""
    else:
        synopsis = text[syn.end() : tag.start() if tag else len(text)].strip()
    tags = _clean_tags(text[tag.end() :]) if tag else []
    synopsis = " ".join(synopsis.split())
    return ParsedLabel(synopsis, tags, ok=bool(syn and synopsis))
