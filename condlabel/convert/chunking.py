"""Chunking documents into labeler-sized pieces on paragraph and sentence boundaries (sentences
from `convert.sentences`), with stable ids (doc_id, chunk_index) and character offsets: every
chunk is exactly doc.text[start:start + len(text)]. A run of non-space characters longer than
`max_word_chars` is cut into pieces, each a chunk of its own. Plain functions: no Ray here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from dataclasses import dataclass

from condlabel.config import ChunkConfig
from condlabel.convert.reading import Document, content_hash
from condlabel.sentences import sentence_spans


def doc_version(text: str, chunking: ChunkConfig) -> str:
    """The `doc_hash` stored with every chunk: content hash of the text *as chunked*, so a
    changed text or changed chunking settings both make the document's chunks new work.
    `max_word_chars` counts only for a text it cuts, so other documents keep their hash."""
    settings = f"{chunking.unit}/{chunking.max_words}/{chunking.effective_min_words}"
    if _has_long_word(text, chunking.max_word_chars):
        settings += f"/{chunking.max_word_chars}"
    return content_hash(f"{settings}\x00{text}")


@functools.cache
def _long_word(max_chars: int) -> re.Pattern[str]:
    # Anchored at a word start, so a text of words just under the limit is scanned once.
    return re.compile(rf"(?<!\S)\S{{{max_chars + 1},}}")


def _has_long_word(text: str, max_chars: int) -> bool:
    """Whether text has a run of more than max_chars non-space characters. The regex alone
    takes ~1 s per 10 MB, so it runs only where such a run may be: every run that long covers
    a space-free window of step + 1 characters starting at a multiple of step."""
    step = max(1, max_chars // 2)
    windows = range(0, len(text) - step, step)
    return any(_SPACE.search(text, p, p + step + 1) is None for p in windows) and bool(
        _long_word(max_chars).search(text)
    )


# Separators are whitespace only, so splitting never drops a visible character.
_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_WORD = re.compile(r"\S+")
_SPACE = re.compile(r"\s")


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    chunk_index: int
    text: str
    num_words: int
    start: int
    """Character offset of the chunk in the document text."""


def _regions(text: str, max_word_chars: int | None) -> Iterator[tuple[int, int, bool]]:
    """(start, end, is_piece) covering the text in order: pieces of max_word_chars characters
    cut from each longer word, and the stretches of text between those words."""
    pos = 0
    if max_word_chars is not None and _has_long_word(text, max_word_chars):
        for m in _long_word(max_word_chars).finditer(text):
            yield pos, len(text[pos : m.start()].rstrip()) + pos, False
            for start in range(m.start(), m.end(), max_word_chars):
                yield start, min(start + max_word_chars, m.end()), True
            after = _WORD.search(text, m.end())
            pos = after.start() if after else len(text)
    yield pos, len(text), False


def _paragraph_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) of each paragraph of text[start:end]: blank lines and the whitespace after
    them separate."""
    end = len(text) if end is None else end
    spans = []
    pos = start
    for m in _PARAGRAPH_BREAK.finditer(text, start, end):
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, end))
    return [(s, e) for s, e in spans if text[s:e].strip()]


def _word_count(text: str, start: int, end: int) -> int:
    return sum(1 for _ in _WORD.finditer(text, start, end))


def _sentences(
    text: str, start: int, end: int, max_words: int, min_words: int = 0
) -> list[tuple[int, int, int]]:
    """(start, end, words) per sentence of text[start:end]. A sentence over max_words is cut
    into windows of max_words words (all kept); one under min_words is dropped."""
    out: list[tuple[int, int, int]] = []
    for ss, se in sentence_spans(text, start, end):
        n = _word_count(text, ss, se)
        if n > max_words:
            words = [(w.start(), w.end()) for w in _WORD.finditer(text, ss, se)]
            for i in range(0, len(words), max_words):
                window = words[i : i + max_words]
                out.append((window[0][0], window[-1][1], len(window)))
        elif n >= min_words:
            out.append((ss, se, n))
    return out


def _segments(text: str, start: int, end: int, max_words: int) -> list[tuple[int, int, int]]:
    """(start, end, words) units of text[start:end] of at most max_words: paragraphs, else
    sentences, else words."""
    out: list[tuple[int, int, int]] = []
    for ps, pe in _paragraph_spans(text, start, end):
        n = _word_count(text, ps, pe)
        if n <= max_words:
            out.append((ps, pe, n))
        else:
            out += _sentences(text, ps, pe, max_words)
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


def chunk_text(
    text: str, max_words: int, min_words: int, max_word_chars: int | None = None
) -> list[tuple[int, int, int]]:
    """Split text into (start, end, words) windows of at most max_words words.

    Boundaries fall between paragraphs, else between sentences, else between words; a short last
    window is merged or rebalanced. Every word of the text lands in exactly one window, in order;
    a word over max_word_chars lands in pieces, one window each.
    """
    out: list[tuple[int, int, int]] = []
    for start, end, is_piece in _regions(text, max_word_chars):
        if is_piece:
            out.append((start, end, 1))
            continue
        windows = _pack(_segments(text, start, end, max_words), max_words)
        _rebalance_tail(windows, max_words, min_words)
        out += [(w[0][0], w[-1][1], sum(s[2] for s in w)) for w in windows]
    return out


def sentence_units(
    text: str, max_words: int, min_words: int, max_word_chars: int | None = None
) -> list[tuple[int, int, int]]:
    """(start, end, words) per sentence; sentences over max_words are split into windows and
    sentences under min_words are dropped (the reference removes short fragments). A word over
    max_word_chars ends its sentence and becomes pieces, each kept as a unit of one word."""
    units: list[tuple[int, int, int]] = []
    for start, end, is_piece in _regions(text, max_word_chars):
        if is_piece:
            units.append((start, end, 1))
            continue
        for ps, pe in _paragraph_spans(text, start, end):
            units += _sentences(text, ps, pe, max_words, min_words)
    return units


def chunk_document(doc: Document, cfg: ChunkConfig) -> list[Chunk]:
    split = sentence_units if cfg.unit == "sentence" else chunk_text
    spans = split(doc.text, cfg.max_words, cfg.effective_min_words, cfg.max_word_chars)
    return [Chunk(doc.doc_id, i, doc.text[s:e], n, s) for i, (s, e, n) in enumerate(spans)]
