"""Chunking: boundaries, the word limit, stability, no lost or duplicated text."""

from __future__ import annotations

import random

import pytest

from condlabel.config import ChunkConfig
from condlabel.convert.chunking import chunk_document, chunk_text
from condlabel.convert.reading import Document


def words_of(chunks: list[str]) -> list[str]:
    return " ".join(chunks).split()


def paragraphs(n: int, words_each: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(500)]
    paras = []
    for _ in range(n):
        sentences, left = [], words_each
        while left > 0:
            k = min(left, rng.randint(5, 20))
            sentences.append(" ".join(rng.choice(vocab) for _ in range(k)).capitalize() + ".")
            left -= k
        paras.append(" ".join(sentences))
    return "\n\n".join(paras)


def chunks_of(text: str, max_words: int, min_words: int | None = None) -> list[str]:
    cfg = ChunkConfig(max_words=max_words, min_words=min_words)
    return [c.text for c in chunk_document(Document("d", text, "src", 1), cfg)]


def test_short_document_is_one_chunk_and_keeps_its_formatting():
    text = "Title\n\nFirst paragraph.\n  indented line\n\nLast."
    assert chunks_of(text, 100) == [text]


def test_every_chunk_respects_the_limit_and_no_word_is_lost_or_duplicated():
    text = paragraphs(40, 70)
    chunks = chunks_of(text, 200)
    assert len(chunks) > 10
    assert all(len(c.split()) <= 200 for c in chunks)
    assert words_of(chunks) == text.split()


def test_splits_fall_on_paragraph_boundaries_when_paragraphs_fit():
    text = paragraphs(12, 50)
    paras = text.split("\n\n")
    for chunk in chunks_of(text, 120):
        # each chunk is a run of whole paragraphs
        assert chunk.startswith(tuple(p[:30] for p in paras))
        assert chunk.endswith(tuple(p[-30:] for p in paras))


def test_long_paragraph_splits_on_sentence_boundaries():
    text = paragraphs(1, 600, seed=3)
    chunks = chunks_of(text, 100)
    assert len(chunks) >= 6
    assert all(c.endswith(".") for c in chunks)
    assert words_of(chunks) == text.split()


def test_text_without_any_boundary_falls_back_to_word_windows():
    text = " ".join(f"x{i}" for i in range(1050))
    chunks = chunks_of(text, 100, min_words=10)
    assert [len(c.split()) for c in chunks][:10] == [100] * 10
    assert words_of(chunks) == text.split()


def test_no_tiny_trailing_fragment():
    # 2 full windows of 100 then 3 words: the tail is merged or rebalanced.
    text = "\n\n".join([paragraphs(1, 100, seed=1), paragraphs(1, 100, seed=2), "tail end here."])
    sizes = [len(c.split()) for c in chunks_of(text, 150, min_words=40)]
    assert min(sizes) >= 40, sizes
    assert sum(sizes) == len(text.split())


def test_rebalanced_tail_still_respects_the_limit():
    text = " ".join(f"Sentence number {i} is here." for i in range(250))  # 1250 words, 1 paragraph
    chunks = chunks_of(text, 400, min_words=100)
    assert all(100 <= len(c.split()) <= 400 for c in chunks), [len(c.split()) for c in chunks]
    assert words_of(chunks) == text.split()


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t \n"])
def test_empty_and_whitespace_documents_give_no_chunks(text):
    assert chunk_text(text, 100, 10) == []


def test_chunk_ids_are_stable_across_runs():
    text = paragraphs(30, 90, seed=7)
    doc = Document("doc-1", text, "s3://b/x.jsonl", 4)
    a = chunk_document(doc, ChunkConfig(max_words=300))
    b = chunk_document(doc, ChunkConfig(max_words=300))
    assert [(c.doc_id, c.chunk_index, c.text) for c in a] == [
        (c.doc_id, c.chunk_index, c.text) for c in b
    ]
    assert [c.chunk_index for c in a] == list(range(len(a)))


def test_ten_megabyte_document():
    text = paragraphs(3600, 580, seed=11)  # ~2M words, >10 MB
    assert len(text) > 10_000_000
    chunks = chunks_of(text, 2000)
    assert all(len(c.split()) <= 2000 for c in chunks)
    assert words_of(chunks) == text.split()


def test_offsets_point_into_the_document():
    text = paragraphs(8, 60, seed=5)
    for c in chunk_document(Document("d", text, "s", 1), ChunkConfig(max_words=100)):
        assert text[c.start : c.start + len(c.text)] == c.text


def test_sentence_units_one_chunk_per_sentence():
    text = "I love this park. It is wonderful!\n\nThe service was awful? Never again. Ok."
    cfg = ChunkConfig(unit="sentence", max_words=50)
    chunks = [c.text for c in chunk_document(Document("d", text, "s", 1), cfg)]
    assert chunks == [
        "I love this park.",
        "It is wonderful!",
        "The service was awful?",
        "Never again.",
        "Ok.",
    ]
    dropped = ChunkConfig(unit="sentence", max_words=50, min_words=3)
    assert [c.text for c in chunk_document(Document("d", text, "s", 1), dropped)] == [
        "I love this park.",
        "It is wonderful!",
        "The service was awful?",
    ]


def test_sentence_units_split_overlong_sentences_without_losing_words():
    text = " ".join(f"w{i}" for i in range(130)) + "."
    chunks = chunks_of_unit(text, "sentence", 50)
    assert [len(c.split()) for c in chunks] == [50, 50, 30]
    assert words_of(chunks) == text.split()


def chunks_of_unit(text: str, unit: str, max_words: int) -> list[str]:
    cfg = ChunkConfig(unit=unit, max_words=max_words)
    return [c.text for c in chunk_document(Document("d", text, "s", 1), cfg)]


def test_chunking_settings_change_the_document_version():
    from condlabel.convert.chunking import doc_version

    text = paragraphs(3, 50)
    assert doc_version(text, ChunkConfig()) == doc_version(text, ChunkConfig())
    assert doc_version(text, ChunkConfig()) != doc_version(text, ChunkConfig(max_words=100))
    assert doc_version(text, ChunkConfig()) != doc_version(text, ChunkConfig(unit="sentence"))
    assert doc_version(text, ChunkConfig()) != doc_version(text + " ", ChunkConfig())


def test_long_paragraphs_split_where_sentences_end_not_after_abbreviations():
    sentence = "Dr. Smith met Mr. Jones in the U.S. on the 3.5 mile trail, e.g. near the river. "
    text = sentence * 40  # one paragraph of 640 words
    chunks = chunks_of(text, 50, min_words=10)
    assert all(c.endswith("river.") for c in chunks), [c[-20:] for c in chunks]
    assert words_of(chunks) == text.split()


def test_an_overlong_word_is_cut_into_pieces_of_its_own():
    # Issue 12, item 6: a 5 MB lowercase DNA "word" must not reach a labeler whole.
    dna = "acgt" * 1_250_000
    text = "The sample was sequenced.\n\n" + dna + " and then stored."
    doc = Document("d", text, "s", 1)
    chunks = chunk_document(doc, ChunkConfig(max_words=100, max_word_chars=10_000))
    assert [c.text for c in chunks[:2]] == ["The sample was sequenced.", dna[:10_000]]
    assert chunks[-1].text == "and then stored."
    pieces = chunks[1:-1]
    assert len(pieces) == 500 and all(len(c.text) == 10_000 and c.num_words == 1 for c in pieces)
    assert "".join(c.text for c in pieces) == dna
    assert all(text[c.start : c.start + len(c.text)] == c.text for c in chunks)


@pytest.mark.parametrize("unit", ["window", "sentence"])
def test_a_word_at_the_limit_is_whole_and_one_over_it_is_cut(unit):
    at, over = "x" * 50, "y" * 51
    cfg = ChunkConfig(unit=unit, max_words=100, max_word_chars=50, min_words=3)
    texts = [
        c.text
        for c in chunk_document(Document("d", f"Keep {at} whole. Cut {over} here.", "s", 1), cfg)
    ]
    assert at in " ".join(texts)
    assert "y" * 50 in texts and "y" in texts and over not in " ".join(texts)


def test_the_word_limit_changes_only_the_version_of_a_text_it_cuts():
    from condlabel.convert.chunking import doc_version

    short, long = paragraphs(3, 50), paragraphs(1, 20) + " " + "z" * 200
    for text, changes in [(short, False), (long, True)]:
        before = doc_version(text, ChunkConfig())
        assert (doc_version(text, ChunkConfig(max_word_chars=100)) != before) == changes


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 20])
def test_long_words_are_found_and_cut_exactly(limit):
    from condlabel.convert.chunking import _has_long_word

    rng = random.Random(limit)
    for _ in range(200):
        words = ["w" * rng.randint(1, 2 * limit + 2) for _ in range(rng.randint(1, 8))]
        text = "".join(w + rng.choice([" ", "\n\n", ". "]) for w in words)
        longest = max(len(w) for w in text.split())
        assert _has_long_word(text, limit) == (longest > limit), text
        for unit in ("window", "sentence"):
            cfg = ChunkConfig(unit=unit, max_words=5, max_word_chars=limit)
            chunks = chunk_document(Document("d", text, "s", 1), cfg)
            assert all(text[c.start : c.start + len(c.text)] == c.text for c in chunks)
            assert all(len(w) <= limit for c in chunks for w in c.text.split())
            assert "".join("".join(c.text.split()) for c in chunks) == "".join(text.split())
