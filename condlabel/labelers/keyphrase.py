"""The CPU labeler: keyphrase tags (YAKE) and an extractive synopsis; no weights, deterministic.

It is the embedded default so the whole job runs meaningfully on any machine. The synopsis is
the `synopsis_sentences` sentences that cover the chunk's keyphrases best, in document order;
sentences are the ones chunking uses (`convert.sentences`).
"""

from __future__ import annotations

import re
from importlib.metadata import version

import regex

from condlabel.config import KeyphraseLabelerConfig
from condlabel.labelers.base import LabelResult, make_fingerprint
from condlabel.labelers.prompts import PROMPT_VERSION, render_label
from condlabel.sentences import sentence_spans, splitter_version

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_WORD = re.compile(r"[^\W\d_]+")
_MIN_SENTENCE_WORDS = 5
# A run of lowercase letters this long is no keyphrase (English words stop near 45), and YAKE's
# sentence splitter (segtok) is quadratic in its length after a full stop: 20k letters took 8 s,
# 50k took 45 s. Such runs are blanked in the text YAKE sees. `regex` (segtok's own dependency)
# gives the same \p{Ll} class segtok matches with; CJK runs, which are not cased, stay.
_LONGEST_KEYWORD_LETTERS = 64
_LONG_LOWERCASE_RUN = regex.compile(rf"\p{{Ll}}{{{_LONGEST_KEYWORD_LETTERS + 1},}}")


def fingerprint(cfg: KeyphraseLabelerConfig) -> str:
    return make_fingerprint(
        "keyphrase",
        {
            "name": "yake",
            "yake": version("yake"),
            "sentences": splitter_version(),
            "longest_keyword_letters": _LONGEST_KEYWORD_LETTERS,
            "prompt": PROMPT_VERSION,
            **cfg.model_dump(),
        },
    )


def _is_prose(paragraph: str) -> bool:
    """Indented blocks (code, grammar rules) and symbol-heavy lines make poor synopses."""
    lines = [ln for ln in paragraph.splitlines() if ln.strip()]
    indented = sum(1 for ln in lines if ln[:1].isspace())
    return bool(lines) and indented <= len(lines) // 2


def _sentences(text: str) -> list[str]:
    out = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        if not _is_prose(paragraph):
            continue
        for start, end in sentence_spans(paragraph):
            sentence = " ".join(paragraph[start:end].split())
            letters = sum(len(w) for w in _WORD.findall(sentence))
            if len(sentence.split()) >= _MIN_SENTENCE_WORDS and letters >= 0.6 * len(sentence):
                out.append(sentence)
    return out


class KeyphraseLabeler:
    def __init__(self, cfg: KeyphraseLabelerConfig):
        try:
            import yake
        except ImportError as exc:  # pragma: no cover - yake is a core dependency
            raise ImportError("the keyphrase labeler needs yake: pip install condlabel") from exc
        self.cfg = cfg
        # Ask for more candidates than tags: near-duplicates are dropped below.
        self._extractor = yake.KeywordExtractor(
            lan=cfg.language, n=cfg.max_ngram, top=cfg.num_tags * 3, dedup_lim=0.7
        )
        self._fingerprint = fingerprint(cfg)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def _tags(self, text: str) -> tuple[list[str], list[tuple[str, float]]]:
        # Lower score = more relevant.
        scored = self._extractor.extract_keywords(_LONG_LOWERCASE_RUN.sub(" ", text))
        tags: list[str] = []
        seen: set[str] = set()
        for phrase, _ in scored:
            key = phrase.lower()
            if key in seen or any(key in t or t in key for t in seen):
                continue
            seen.add(key)
            tags.append(key)
            if len(tags) == self.cfg.num_tags:
                break
        return tags, scored

    def _synopsis(self, text: str, scored: list[tuple[str, float]]) -> str:
        sentences = _sentences(text)
        if not sentences:
            words = text.split()
            return " ".join(words[: self.cfg.synopsis_max_words])
        weights = {p.lower(): 1.0 / (1e-6 + s) for p, s in scored}
        total = sum(weights.values()) or 1.0

        def score(item: tuple[int, str]) -> tuple[float, int]:
            i, s = item
            low = s.lower()
            coverage = sum(w for p, w in weights.items() if p in low) / total
            # Earlier sentences usually state the topic; a mild position prior breaks ties.
            return (coverage + 0.1 / (1 + i), -i)

        best = sorted(enumerate(sentences), key=score, reverse=True)[: self.cfg.synopsis_sentences]
        chosen = [s for _, s in sorted(best)]
        words = " ".join(chosen).split()
        if len(words) > self.cfg.synopsis_max_words:
            words = words[: self.cfg.synopsis_max_words]
            words[-1] = words[-1].rstrip(",;:") + "..."
        return " ".join(words)

    def label(self, texts: list[str]) -> list[LabelResult]:
        results = []
        for text in texts:
            tags, scored = self._tags(text)
            synopsis = self._synopsis(text, scored)
            results.append(
                LabelResult(
                    synopsis=synopsis,
                    tags=tags,
                    raw_output=render_label(synopsis, tags),
                    parse_ok=bool(synopsis),
                )
            )
        return results
