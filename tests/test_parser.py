"""Parsing hostile labeler outputs: a synopsis that says "tags:", nested lists, quoted tags with
commas, tags before the synopsis, and output cut off at max_new_tokens (`truncated`)."""

from __future__ import annotations

import pytest

from condlabel.labelers.prompts import parse_label, render_label


@pytest.mark.parametrize(
    ("raw", "synopsis", "tags"),
    [
        # the synopsis keeps its own "tags:"; the tags come from the last bracketed list
        (
            "Synopsis: Shops compare price tags: cheap ones. Tags: [retail, pricing]",
            "Shops compare price tags: cheap ones.",
            ["retail", "pricing"],
        ),
        (
            "Synopsis: HTML tags: [b] and [i] set type. Tags: [web, html]",
            "HTML tags: [b] and [i] set type.",
            ["web", "html"],
        ),
        # without brackets, the last marker
        (
            "Synopsis: Price tags: cheap ones. Tags: retail, pricing",
            "Price tags: cheap ones.",
            ["retail", "pricing"],
        ),
        # nested lists are flattened, none of their tags dropped
        ("Synopsis: Nested. Tags: [a, [b, c], d]", "Nested.", ["a", "b", "c", "d"]),
        ("Synopsis: Deep. Tags: [[a], [[b]], c] tail", "Deep.", ["a", "b", "c"]),
        # a quoted tag is one tag, whatever commas it holds; apostrophes are not quotes
        (
            "Synopsis: Cooking. Tags: [\"salt, pepper\", 'oil, vinegar', spice]",
            "Cooking.",
            ["salt, pepper", "oil, vinegar", "spice"],
        ),
        (
            "Synopsis: Books. Tags: [children's books, dogs' toys]",
            "Books.",
            ["children's books", "dogs' toys"],
        ),
        # tags before the synopsis: both kept
        ("Tags: [a, b] Synopsis: Tags came first.", "Tags came first.", ["a", "b"]),
        ("Tags: a, b Synopsis: Bare tags first.", "Bare tags first.", ["a", "b"]),
    ],
)
def test_hostile_outputs_parse(raw, synopsis, tags):
    parsed = parse_label(raw)
    assert (parsed.synopsis, parsed.tags, parsed.ok, parsed.truncated) == (
        synopsis,
        tags,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("raw", "tags", "truncated"),
    [
        ("Synopsis: Cut. Tags: [first tag, second ta", ["first tag", "second ta"], True),
        ("Synopsis: Cut nested. Tags: [a, [b, c]", ["a", "b", "c"], True),
        ('Synopsis: Cut in a quote. Tags: [x, "salt, pep', ["x", "salt", "pep"], True),
        ("Synopsis: Closed. Tags: [a, b]", ["a", "b"], False),
        ("Synopsis: Bare list. Tags: a, b", ["a", "b"], False),
        ("Synopsis: No tags part.", [], False),
    ],
)
def test_an_unclosed_list_is_flagged(raw, tags, truncated):
    parsed = parse_label(raw)
    assert (parsed.tags, parsed.truncated, parsed.ok) == (tags, truncated, True)


@pytest.mark.parametrize(
    "tags", [["salt, pepper", "spice"], ["a [b]", "c"], ['say "hi", twice', "x"], ["plain"]]
)
def test_render_quotes_what_parsing_would_split(tags):
    parsed = parse_label(render_label("A synopsis.", tags))
    assert (parsed.synopsis, parsed.tags, parsed.truncated) == ("A synopsis.", tags, False)
