"""Sentence splitters side by side in one run: speed and quality (issue 11).

    python bench/sentence_split.py [--seconds 1] [--rounds 3]

Candidates: the two regexes condlabel had before issue 11 (chunking's, which knows CJK stops,
and the keyphrase synopsis's, which wants a capital letter after the stop), segtok (installed
with yake), pysbd, blingfire, sentencex and nupunkt (`pip install pysbd blingfire sentencex
nupunkt`; a missing one is skipped), and condlabel's own splitter (sentencex plus guards).
Each is called the way the chunker calls it: once per paragraph, and gives character spans.

- speed: characters per CPU second over every paragraph of the sample corpus (Python help topics
  and stdlib docstrings), best of interleaved rounds, and the ratio to the chunking regex;
- hard cases: hand-made texts with known sentences (abbreviations, decimals, ellipses, quotes
  and brackets after the stop, CJK stops, lowercase starts, newlines): cases fully right and
  boundary precision/recall;
- real text (no gold standard, so proxies): sentences found, visible characters lost, splits
  right after a known abbreviation or before a lowercase word/digit (likely false), cuts with
  no space before them outside CJK (inside a word: false), and ". Capital" inside a sentence
  after a plain word (likely missed).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
import unicodedata
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path

from condlabel.demo import sample_documents

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
from sentence_cases import HARD_CASES  # shared with tests/test_sentences.py

Spans = list[tuple[int, int]]
Splitter = Callable[[str], Spans]

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
_CHUNKING_REGEX = re.compile(r"(?:(?<=[.!?。！？])|(?<=[.!?][\"')\]]))\s+")
_KEYPHRASE_REGEX = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREVIATIONS = {"e.g.", "i.e.", "etc.", "mr.", "mrs.", "dr.", "vs.", "cf.", "no.", "fig."}
_ABBREVIATIONS |= {"u.s.", "p.m.", "a.m.", "st.", "jr.", "approx.", "al."}


def _regex_splitter(pattern: re.Pattern[str]) -> Splitter:
    def split(text: str) -> Spans:
        spans, pos = [], 0
        for m in pattern.finditer(text):
            spans.append((pos, m.start()))
            pos = m.end()
        spans.append((pos, len(text)))
        return [(s, e) for s, e in spans if text[s:e].strip()]

    return split


def _located(text: str, sentences: list[str]) -> Spans:
    """Spans of sentence strings found in order in text (for splitters that give strings)."""
    spans, pos = [], 0
    for s in sentences:
        s = s.strip()
        i = text.find(s, pos)
        if s and i >= 0:
            spans.append((i, i + len(s)))
            pos = i + len(s)
    return spans


def candidates() -> dict[str, Splitter]:
    found: dict[str, Splitter] = {
        "regex (chunking)": _regex_splitter(_CHUNKING_REGEX),
        "regex (keyphrase)": _regex_splitter(_KEYPHRASE_REGEX),
    }
    from segtok.segmenter import split_multi

    found["segtok split_multi"] = lambda t: _located(t, list(split_multi(t)))
    try:
        import pysbd

        seg = pysbd.Segmenter(language="en", clean=False, char_span=True)
        found["pysbd"] = lambda t: [(s.start, s.end) for s in seg.segment(t) if s.sent.strip()]
    except ImportError:
        print("pysbd not installed: skipped")
    try:
        import blingfire

        found["blingfire"] = lambda t: blingfire.text_to_sentences_and_offsets(t)[1]
    except ImportError:
        print("blingfire not installed: skipped")
    try:
        import sentencex

        found["sentencex"] = lambda t: [
            (b["start_index"], b["end_index"]) for b in sentencex.get_sentence_boundaries("en", t)
        ]
    except ImportError:
        print("sentencex not installed: skipped")
    try:
        import nupunkt

        found["nupunkt"] = nupunkt.sent_spans
    except ImportError:
        print("nupunkt not installed: skipped")
    try:
        sentences = importlib.import_module("condlabel.sentences")
        found["condlabel.sentences"] = sentences.sentence_spans
    except ImportError:
        pass
    return found


def paragraphs() -> list[str]:
    out = []
    for row in sample_documents():
        out += [p for p in _PARAGRAPH_BREAK.split(row["text"]) if p.strip()]
    return out


def speed(split: Splitter, paras: list[str], seconds: float) -> float:
    """Characters per CPU second: on a shared machine CPU time varies far less than wall time."""
    chars = sum(map(len, paras))
    rounds, start = 0, time.process_time()
    while rounds == 0 or time.process_time() - start < seconds:
        for p in paras:
            split(p)
        rounds += 1
    return rounds * chars / (time.process_time() - start)


def hard_case_scores(split: Splitter) -> tuple[int, float, float]:
    """(cases fully right, boundary precision, boundary recall); a boundary is a sentence start."""
    right = true_pos = found = wanted = 0
    for text, gold in HARD_CASES:
        got = [text[s:e].strip() for s, e in split(text)]
        right += got == gold
        got_starts = {s for s, _ in split(text)} - {0}
        gold_starts = set(s for s, _ in _located(text, gold)) - {0}
        true_pos += len(got_starts & gold_starts)
        found += len(got_starts)
        wanted += len(gold_starts)
    return right, true_pos / max(found, 1), true_pos / max(wanted, 1)


def _wide(char: str) -> bool:
    return bool(char) and unicodedata.east_asian_width(char) in ("W", "F")


def real_text_proxies(split: Splitter, paras: list[str]) -> dict[str, int]:
    counts = {"sentences": 0, "chars lost": 0, "after abbrev.": 0, "before lower/digit": 0}
    counts["cut inside text"] = counts["missed '. X'"] = 0
    missed = re.compile(r"\b([a-z]{3,})[.!?][\"')\]]?\s+[A-Z][a-z]")
    for p in paras:
        spans = split(p)
        counts["sentences"] += len(spans)
        covered = "".join(p[s:e] for s, e in spans)
        counts["chars lost"] += len("".join(p.split())) - len("".join(covered.split()))
        for (_, end), (nxt, _) in pairwise(spans):
            before = p[:nxt].rstrip()[-1:]
            counts["cut inside text"] += nxt == len(p[:nxt].rstrip()) and not _wide(before)
            last = p[:end].split()[-1].lower() if p[:end].split() else ""
            counts["after abbrev."] += last in _ABBREVIATIONS
            counts["before lower/digit"] += p[nxt : nxt + 1].islower() or p[nxt : nxt + 1].isdigit()
        for s, e in spans:
            counts["missed '. X'"] += sum(
                m.group(1) not in {a.rstrip(".") for a in _ABBREVIATIONS}
                for m in missed.finditer(p, s, e)
            )
    return counts


def best_speeds(found: dict[str, Splitter], paras: list[str], args) -> dict[str, float]:
    """Best of `--rounds` interleaved measurements: on a shared machine the load changes while
    the benchmark runs, and interleaving exposes every candidate to the same changes."""
    best = dict.fromkeys(found, 0.0)
    for _ in range(args.rounds):
        for name, split in found.items():
            best[name] = max(best[name], speed(split, paras, args.seconds))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=1.0, help="time per speed measurement")
    parser.add_argument("--rounds", type=int, default=3, help="speed measurements per splitter")
    args = parser.parse_args()
    paras = paragraphs()
    print(f"load average {os.getloadavg()[0]:.2f}; {len(paras)} paragraphs, "
          f"{sum(map(len, paras)):,} chars; {len(HARD_CASES)} hard cases")  # fmt: skip
    found = candidates()
    rates = best_speeds(found, paras, args)
    base = rates["regex (chunking)"]
    header = f"{'splitter':28} {'chars/cpu-s':>11} {'ratio':>6} {'cases':>6} {'P':>5} {'R':>5}"
    for name, split in found.items():
        right, precision, recall = hard_case_scores(split)
        proxies = real_text_proxies(split, paras)
        if header:
            print(header + "".join(f" {k:>18}" for k in proxies))
            header = ""
        line = f"{name:28} {rates[name]:11,.0f} {rates[name] / base:6.2f}"
        line += f" {right:3}/{len(HARD_CASES):2} {precision:5.2f} {recall:5.2f}"
        print(line + "".join(f" {v:18}" for v in proxies.values()))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
