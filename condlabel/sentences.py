"""Sentence boundaries with character offsets: the one splitter that chunking and the keyphrase
synopsis share.

The rules are sentencex's (Wikimedia's rule-based segmenter, Rust core): abbreviations,
initials, decimals, ellipses, quotes after the stop and the CJK stops 。！？, at the speed of a
plain regex. bench/sentence_split.py measured it against segtok, pysbd, blingfire, nupunkt and
the two regexes condlabel had before. Plain functions: no Ray here.
"""

from __future__ import annotations

import re
import unicodedata
from importlib.metadata import version
from itertools import pairwise

import sentencex

# sentencex falls back from a language to its generic rules; English ones also know CJK stops.
LANGUAGE = "en"
# Characters sentencex cannot take: lone surrogates (legal in a JSON string) do not encode to
# UTF-8, and a multi-byte space before a stop makes it panic (sentencex 1.0.32: "Z\u3000.",
# "X\xa0."). Each is replaced by one character, so every offset stays where it was.
_UNSAFE = re.compile(r"[\ud800-\udfff]|[^\S\x00-\x7f]")


def splitter_version() -> str:
    """Names the rules in use, for fingerprints of outputs that depend on where sentences end."""
    return f"sentencex-{version('sentencex')}-{LANGUAGE}"


def _stand_in(match: re.Match[str]) -> str:
    return " " if match.group().isspace() else "\ufffd"


def _sentence_starts(text: str) -> list[int]:
    if not text.isascii():
        text = _UNSAFE.sub(_stand_in, text)
    try:
        bounds = sentencex.get_sentence_boundaries(LANGUAGE, text)
    except BaseException as exc:
        # A Rust panic arrives as pyo3's PanicException, a BaseException. Rather than fail the
        # whole batch, the text stays one sentence (chunking then cuts it between words).
        if type(exc).__name__ != "PanicException":
            raise
        return []
    return [b["start_index"] for b in bounds]


def _is_separator(char: str) -> bool:
    """Whether a sentence may start right after `char`: after whitespace, or after a full-width
    stop or closing mark (CJK puts no space between sentences). sentencex also cuts inside
    identifiers ("object.__lt__") and before a closing bracket ("end.)"), which this refuses."""
    return char.isspace() or unicodedata.east_asian_width(char) in ("W", "F")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each sentence of text[start:end], as offsets into `text`, in order.

    Spans are stripped of surrounding whitespace and whitespace-only ones are left out. The text
    is cut only where a sentence starts, so every visible character lands in exactly one span.
    """
    end = len(text) if end is None else end
    piece = text[start:end]
    cuts = sorted(
        {c for c in _sentence_starts(piece) if 0 < c < len(piece) and _is_separator(piece[c - 1])}
    )
    spans = []
    for s, e in pairwise([0, *cuts, len(piece)]):
        sentence = piece[s:e]
        stripped = sentence.strip()
        if stripped:
            s += len(sentence) - len(sentence.lstrip())
            spans.append((start + s, start + s + len(stripped)))
    return spans
