"""The sentence splitter: hard cases with known answers, and offsets that lose no character."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from sentence_cases import HARD_CASES, KNOWN_MISSES

from condlabel import sentences
from condlabel.demo import sample_documents
from condlabel.sentences import sentence_spans


def sentences_of(text: str) -> list[str]:
    return [text[s:e] for s, e in sentence_spans(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(text, gold, marks=pytest.mark.xfail(strict=True, reason="known miss"))
        if text in KNOWN_MISSES
        else (text, gold)
        for text, gold in HARD_CASES
    ],
)
def test_hard_cases(text, expected):
    assert sentences_of(text) == expected


def assert_exact_cover(text: str, spans: list[tuple[int, int]], start: int, end: int) -> None:
    """Spans are ordered, disjoint, stripped, inside [start, end], and hold every visible
    character of text[start:end]."""
    assert all(start <= s < e <= end for s, e in spans)
    assert all(e <= s for (_, e), (s, _) in pairwise(spans))
    assert all(text[s:e] == text[s:e].strip() for s, e in spans)
    visible = "".join(text[start:end].split())
    assert "".join("".join(text[s:e].split()) for s, e in spans) == visible


def test_real_text_keeps_every_visible_character():
    for row in sample_documents():
        text = row["text"]
        assert_exact_cover(text, sentence_spans(text), 0, len(text))


def test_offsets_of_a_slice_point_into_the_whole_text():
    text = "Skip this. Hello there, Mr. Smith. Bye now. And skip this."
    start, end = text.index("Hello"), text.index(" And")
    spans = sentence_spans(text, start, end)
    assert [text[s:e] for s, e in spans] == ["Hello there, Mr. Smith.", "Bye now."]
    assert_exact_cover(text, spans, start, end)


@pytest.mark.parametrize("text", ["", " ", "\n\n\t "])
def test_blank_text_has_no_sentences(text):
    assert sentence_spans(text) == []


def test_no_cut_inside_identifiers_or_before_a_closing_bracket():
    assert sentences_of("object.__lt__(self, other)\nobject.__le__(self, other)") == [
        "object.__lt__(self, other)\nobject.__le__(self, other)"
    ]
    assert sentences_of("It ended.)Then more.") == ["It ended.)Then more."]


def test_cjk_sentences_need_no_space():
    assert sentences_of("他说：「好。」然后走了。天黑了！") == [
        "他说：「好。」",
        "然后走了。",
        "天黑了！",
    ]


def test_lone_surrogate_keeps_offsets():
    text = "Broken \ud800 byte here. Next sentence."  # json.loads accepts lone surrogates
    assert sentences_of(text) == ["Broken \ud800 byte here.", "Next sentence."]


def test_multibyte_space_before_a_stop_does_not_crash():
    # sentencex 1.0.32 panics on "X\xa0." unless the space is replaced first.
    assert sentences_of("X\xa0. Next one.") == ["X\xa0.", "Next one."]
    assert sentences_of("Dr. A\u3000. Then we go.") == ["Dr. A\u3000.", "Then we go."]


def test_a_panic_in_sentencex_leaves_the_text_one_sentence(monkeypatch):
    panic = type("PanicException", (BaseException,), {})

    def explode(language, text):
        raise panic("index is not a char boundary")

    monkeypatch.setattr(sentences.sentencex, "get_sentence_boundaries", explode)
    assert sentences_of("  One. Two.  ") == ["One. Two."]


def test_random_text_never_loses_a_character_nor_crashes():
    alphabet = list("ab XY.!?。！？…\"'()«»“”\n\t\xa0\u3000\u2028\u200b\u0301😀1,_\x00\ud800") + [
        "Mr.",
        "e.g.",
        "U.S.",
        "3.14",
        "J. R.",
    ]
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120)))
        assert_exact_cover(text, sentence_spans(text), 0, len(text))
