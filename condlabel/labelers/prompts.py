"""The labeler output format `Synopsis: ... Tags: [a, b, c]`: rendering and tolerant parsing.

Parsing takes the tags from the LAST `Tags:` followed by a bracketed list, so a synopsis that
says "price tags: cheap ones" keeps those words; without brackets, from the last `Tags:`. The
list is read item by item: a quoted item is one tag whatever commas it holds, nested brackets
are flattened into the list, and a list never closed (the output was cut at max_new_tokens)
keeps its items and is flagged. The synopsis is the text after `Synopsis:` up to the tags
marker, or to the end when the tags come first (`Tags: [...] Synopsis: ...`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROMPT_VERSION = "synopsis-tags-v2"
"""v2: the last bracketed `Tags:` list, quoted tags, nested lists, tags before the synopsis."""

# The decoder-only prompt is a config default: it lives with the config (imports run one way).
from condlabel.config.labelers import DECODER_PROMPT_TEMPLATE as DECODER_PROMPT_TEMPLATE  # noqa: E402

# Special tokens a generative labeler may leave in decoded text.
_SPECIAL = re.compile(r"</s>|<pad>|<s>|<unk>|<\|endoftext\|>|<\|eot_id\|>|<\|im_end\|>|<eos>")
_SYNOPSIS = re.compile(r"synopsis\s*:\s*", re.I)
_TAGS = re.compile(r"\btags?\s*:\s*", re.I)
# One piece of a tag list: a quoted item (only where an item starts, and only when the quote
# closes right before a separator, so "children's books" stays a word), a bracket, a comma,
# or a run of anything else.
_LIST_PIECE = re.compile(
    r"""\s*(?:
        (?P<quoted>"[^"]*"|'[^']*')(?=\s*(?:[,\]]|$))
      | (?P<open>\[) | (?P<close>\]) | (?P<comma>,)
      | (?P<word>[^,\[\]]+)
    )""",
    re.X,
)
_QUOTE_WORTHY = re.compile(r"[,\[\]]")


@dataclass(frozen=True)
class ParsedLabel:
    synopsis: str
    tags: list[str]
    ok: bool
    """A synopsis was found."""
    truncated: bool = False
    """The tag list was opened and never closed: the output was cut off."""


@dataclass(frozen=True)
class _TagList:
    tags: list[str]
    start: int
    """Where the `Tags:` marker starts."""
    end: int
    """Just past the list (its closing bracket, or the end of the text)."""
    unclosed: bool


def render_label(synopsis: str, tags: list[str]) -> str:
    """The canonical text a labeler writes (and the CPU labeler's `raw_output`); a tag holding a
    comma or a bracket is quoted, so `parse_label` gives it back whole."""
    return f"Synopsis: {synopsis} Tags: [{', '.join(_quoted(t) for t in tags)}]"


def _quoted(tag: str) -> str:
    if not _QUOTE_WORTHY.search(tag):
        return tag
    return f'"{tag}"' if '"' not in tag else f"'{tag}'"


def _read_list(text: str, pos: int, stop: int) -> tuple[list[str], int, bool]:
    """The items of a tag list starting at `pos` (at its `[`, or at a bare list), read up to
    `stop`: (items, end, unclosed). A bare list ends at a stray `]`, like a bracketed one."""
    items: list[str] = []
    depth = 0
    while pos < stop:
        piece = _LIST_PIECE.match(text, pos, stop)
        if piece is None:  # only whitespace left
            break
        pos = piece.end()
        if piece["open"]:
            depth += 1
        elif piece["close"]:
            depth -= 1
            if depth <= 0:
                return items, pos, False
        elif piece["quoted"]:
            items.append(piece["quoted"][1:-1])
        elif piece["word"]:
            items.append(piece["word"])
    return items, stop, depth > 0


def _clean_tags(items: list[str]) -> list[str]:
    """Tags with inner whitespace collapsed and stray quotes dropped, first spelling kept."""
    seen: set[str] = set()
    tags = []
    for item in items:
        tag = " ".join(item.strip().strip("\"'").split())
        key = tag.lower()
        if tag and key not in seen:
            seen.add(key)
            tags.append(tag)
    return tags


def _find_tags(text: str) -> _TagList | None:
    """The last `Tags:` marker followed by a bracketed list, else the last `Tags:` marker."""
    markers = list(_TAGS.finditer(text))
    if not markers:
        return None
    bracketed = [m for m in markers if text.startswith("[", m.end())]
    marker = (bracketed or markers)[-1]
    # A list given before the synopsis ends where the synopsis marker starts.
    after = _SYNOPSIS.search(text, marker.end())
    items, end, unclosed = _read_list(text, marker.end(), after.start() if after else len(text))
    return _TagList(_clean_tags(items), marker.start(), end, unclosed)


def parse_label(text: str) -> ParsedLabel:
    """Parse `Synopsis: ... Tags: [...]` (or `Tags: [...] Synopsis: ...`).

    Tolerates a leading space inside the brackets, missing brackets, a missing `Tags:` part,
    duplicated tags, trailing special tokens and output cut at max_new_tokens (the last,
    partial tag is kept and `truncated` set). `ok` is False when no synopsis can be found.
    """
    text = _SPECIAL.sub(" ", text or "").strip()
    tags = _find_tags(text)
    syn = _SYNOPSIS.search(text, 0, tags.start if tags else len(text))
    if syn is None and tags is not None:  # the tags came first
        syn = _SYNOPSIS.search(text, tags.end)
    if syn is None:
        synopsis = text[: tags.start] if tags else ""
    elif tags is not None and syn.start() < tags.start:
        synopsis = text[syn.end() : tags.start]
    else:
        synopsis = text[syn.end() :]
    synopsis = " ".join(synopsis.split())
    return ParsedLabel(
        synopsis,
        tags.tags if tags else [],
        ok=bool(syn and synopsis),
        truncated=bool(tags and tags.unclosed),
    )
