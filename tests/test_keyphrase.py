"""The keyphrase labeler: tags, and a synopsis made of whole sentences from the shared splitter."""

from __future__ import annotations

from condlabel.config import KeyphraseLabelerConfig
from condlabel.labelers import keyphrase
from condlabel.labelers.keyphrase import KeyphraseLabeler

TWO_SENTENCES = (
    "Dr. Smith studied the rivers of the U.S. for many years, e.g. the Missouri and the Ohio.\n"
    "The rivers carry silt and sand to the sea every spring."
)


def label(text: str, **cfg) -> tuple[str, list[str]]:
    [result] = KeyphraseLabeler(KeyphraseLabelerConfig(**cfg)).label([text])
    assert result.parse_ok
    return result.synopsis, result.tags


def test_synopsis_keeps_sentences_whole_across_abbreviations_and_line_breaks():
    # The old synopsis regex cut after "Dr." (capital next) and lost "Dr." as a fragment.
    synopsis, tags = label(TWO_SENTENCES, synopsis_sentences=2, synopsis_max_words=60)
    assert synopsis == " ".join(TWO_SENTENCES.split())
    assert tags and all(t == t.lower() for t in tags)


def test_sentences_come_from_the_shared_splitter():
    # A lowercase start after a stop is a sentence too (the old regex wanted a capital letter);
    # each sentence keeps its words in order, with whitespace made single spaces.
    text = "the river floods every spring and summer. then the farmers plant rice in wet fields."
    assert keyphrase._sentences(text) == [
        "the river floods every spring and summer.",
        "then the farmers plant rice in wet fields.",
    ]


def test_code_blocks_and_fragments_are_not_synopsis_sentences():
    text = (
        "Short one.\n\n    x = compute(a, b)\n    y = x + 1\n\n"
        "This paragraph is plain prose, easy to read."
    )
    assert keyphrase._sentences(text) == ["This paragraph is plain prose, easy to read."]


def test_fingerprint_names_the_sentence_splitter(monkeypatch):
    cfg = KeyphraseLabelerConfig()
    before = keyphrase.fingerprint(cfg)
    monkeypatch.setattr(keyphrase, "splitter_version", lambda: "other-splitter")
    assert keyphrase.fingerprint(cfg) != before


def test_a_long_lowercase_word_after_prose_costs_no_more_than_prose():
    # Issue 12, item 6: segtok inside YAKE was quadratic here (20k letters: 8 s, 50k: 45 s).
    import random
    import time

    rng = random.Random(0)
    dna = "".join(rng.choice("acgt") for _ in range(50_000))
    text = "The sample was sequenced in the lab today. " * 5 + dna + " and then we went home."
    started = time.perf_counter()
    [result] = KeyphraseLabeler(KeyphraseLabelerConfig()).label([text])
    assert time.perf_counter() - started < 5
    assert result.tags and all(len(t) < 100 for t in result.tags)


def test_cjk_text_is_not_blanked_as_a_long_word():
    text = "河流在春天泛滥，农民在湿地里种植水稻，" * 10
    assert keyphrase._LONG_LOWERCASE_RUN.search(text) is None
