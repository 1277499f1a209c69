"""Prefix formatting and parsing of `Synopsis: ... Tags: [...]`."""

from __future__ import annotations

import pytest

from condlabel.config import FormatConfig
from condlabel.labelers.prompts import parse_label, render_label
from condlabel.prefix import conditional_text, render_prefix


def test_default_prefix_follows_the_reference_format():
    cfg = FormatConfig()
    text = conditional_text(cfg, "Body.", "A synopsis.", ["a", "b c"], [], True)
    assert text == "Synopsis: A synopsis. Tags: [a, b c]\nBody."


def test_control_tokens_and_custom_template():
    cfg = FormatConfig(prefix_template="{control_tokens}[{tags}] ")
    assert (
        render_prefix(cfg, "s", ["x", "y"], ["<|pos|>", "<|nontoxic|>"], True)
        == "<|pos|><|nontoxic|>[x, y] "
    )


def test_failed_parse_gets_only_control_tokens():
    cfg = FormatConfig()
    assert conditional_text(cfg, "Body.", "", [], ["<|neg|>"], False) == "<|neg|>Body."


def test_render_and_parse_round_trip():
    raw = render_label("One line.", ["alpha", "beta gamma"])
    parsed = parse_label(raw)
    assert parsed.ok and parsed.synopsis == "One line." and parsed.tags == ["alpha", "beta gamma"]


@pytest.mark.parametrize(
    ("raw", "synopsis", "tags", "ok"),
    [
        # the model card's example: leading space inside the brackets
        (
            "Synopsis: The document outlines X. Tags: [ human language understanding, chatbots]",
            "The document outlines X.",
            ["human language understanding", "chatbots"],
            True,
        ),
        ("Synopsis: Missing brackets. Tags: a, b, c", "Missing brackets.", ["a", "b", "c"], True),
        ("Synopsis: No tags part at all.", "No tags part at all.", [], True),
        ("Synopsis: Dups. Tags: [a, b, A, a ]", "Dups.", ["a", "b"], True),
        ("Synopsis: Special. Tags: [x, y]</s><pad><pad>", "Special.", ["x", "y"], True),
        (
            "Synopsis: Cut at max_new_tokens. Tags: [first tag, second ta",
            "Cut at max_new_tokens.",
            ["first tag", "second ta"],
            True,
        ),
        ("Synopsis: Cut inside the synopsis and nev", "Cut inside the synopsis and nev", [], True),
        ("<pad> synopsis:lower case. tags:[q]", "lower case.", ["q"], True),
        ("random words without structure", "", [], False),
        ("", "", [], False),
        ("Tags: [only, tags]", "", ["only", "tags"], False),
    ],
)
def test_parser_tolerates_reference_cases(raw, synopsis, tags, ok):
    parsed = parse_label(raw)
    assert (parsed.synopsis, parsed.tags, parsed.ok) == (synopsis, tags, ok)
