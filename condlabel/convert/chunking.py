"""Chunking documents into labeler-sized pieces on paragraph and sentence boundaries, with stable
ids (doc_id, chunk_index) and character offsets. Plain functions: no Ray here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from condlabel.config import ChunkConfig
from condlabel.convert.reading import Document, content_hash


def doc_version(text: str, chunking: ChunkConfig) -> str:
    """The `doc_hash` stored with every chunk: content hash of the text *as chunked*, so a
    changed text or changed chunking settings both make the document's chunks new work."""
    return content_hash(
        f"{chunking.unit}/{chunking.max_words}/{chunking.effective_min_words}\x00{text}"
    )


# Separators are whitespace only, so splitting never drops a visible character.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_SENTENCE_END = re.compile(r"(?:(?<=[.!?。！？])|(?<=[.!?][\"')\]]))\s+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_index: int
    text: str
    num_words: int
    start: int
    """Character offset of the chunk in the document text."""


def _spans(
    pattern_split: re.Pattern[str], text: str, start: int, end: int
) -> list[tuple[int, int]]:
    """Split text[start:end] at the pattern's matches; spans are stripped of surrounding space."""
    spans = []
    pos = start
    for m in pattern_split.finditer(text, start, end):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _paragraph_spans(text: str) -> list[tuple[int, int]]:
    return _spans(_PARAGRAPH_BREAK, text, 0, len(text))


def _word_count(text: str, start: int, end: int) -> int:
    return sum(1 for _ in _WORD.finditer(text, start, end))


def _segments(text: str, max_words: int) -> list[tuple[int, int, int]]:
    """(start, end, words) units of at most max_words: paragraphs, else sentences, else words."""
    out: list[tuple[int, int, int]] = []
    for ps, pe in _paragraph_spans(text):
        n = _word_count(text, ps, pe)
        if n <= max_words:
            out.append((ps, pe, n))
            continue
        for ss, se in _spans(_SENTENCE_END, text, ps, pe):
            m = _word_count(text, ss, se)
            if m <= max_words:
                out.append((ss, se, m))
                continue
            words = [(w.start(), w.end()) for w in _WORD.finditer(text, ss, se)]
            for i in range(0, len(words), max_words):
                window = words[i : i + max_words]
                out.append((window[0][0], window[-1][1], len(window)))
    return out


def _pack(segments: list[tuple[int, int, int]], max_words: int) -> list[list[tuple[int, int, int]]]:
    windows: list[list[tuple[int, int, int]]] = []
    current: list[tuple[int, int, int]] = []
    words = 0
    for seg in segments:
        if current and words + seg[2] > max_words:
            windows.append(current)
            current, words = [], 0
        current.append(seg)
        words += seg[2]
    if current:
        windows.append(current)
    return windows


def _rebalance_tail(
    windows: list[list[tuple[int, int, int]]], max_words: int, min_words: int
) -> None:
    """Avoid a tiny last window: merge it into the previous one, or split the pair evenly."""
    if len(windows) < 2:
        return
    last_words = sum(s[2] for s in windows[-1])
    if last_words >= min_words:
        return
    pair = windows[-2] + windows[-1]
    total = sum(s[2] for s in pair)
    if total <= max_words:
        windows[-2:] = [pair]
        return
    best, best_cut, left = -1, len(windows[-2]), 0
    for cut in range(1, len(pair)):
        left += pair[cut - 1][2]
        right = total - left
        if left <= max_words and right <= max_words and min(left, right) > best:
            best, best_cut = min(left, right), cut
    windows[-2:] = [pair[:best_cut], pair[best_cut:]]


def chunk_text(text: str, max_words: int, min_words: int) -> list[tuple[int, int, int]]:
    """Split text into (start, end, words) windows of at most max_words words.

    Boundaries fall between paragraphs, else between sentences, else between words; a short last
    window is merged or rebalanced. Every word of the text lands in exactly one window, in order.
    """
    windows = _pack(_segments(text, max_words), max_words)
    _rebalance_tail(windows, max_words, min_words)
    return [(w[0][0], w[-1][1], sum(s[2] for s in w)) for w in windows]


def sentence_units(text: str, max_words: int, min_words: int) -> list[tuple[int, int, int]]:
    """(start, end, words) per sentence; sentences over max_words are split into windows and
    sentences under min_words are dropped (the reference removes short fragments)."""
    units: list[tuple[int, int, int]] = []
    for ps, pe in _paragraph_spans(text):
        for ss, se in _spans(_SENTENCE_END, text, ps, pe):
            n = _word_count(text, ss, se)
            if n > max_words:
                words = [(w.start(), w.end()) for w in _WORD.finditer(text, ss, se)]
                for i in range(0, len(words), max_words):
                    window = words[i : i + max_words]
                    units.append((window[0][0], window[-1][1], len(window)))
            elif n >= min_words:
                units.append((ss, se, n))
    return units


def chunk_document(doc: Document, cfg: ChunkConfig) -> list[Chunk]:
    if cfg.unit == "sentence":
        spans = sentence_units(doc.text, cfg.max_words, cfg.effective_min_words)
    else:
        spans = chunk_text(doc.text, cfg.max_words, cfg.effective_min_words)
    return [Chunk(doc.doc_id, i, doc.text[s:e], n, s) for i, (s, e, n) in enumerate(spans)]
