"""Building conditional examples: prefix (from the configured template) + chunk text."""

from __future__ import annotations

from condlabel.config import FormatConfig


def render_prefix(
    cfg: FormatConfig, synopsis: str, tags: list[str], control_tokens: list[str], parse_ok: bool
) -> str:
    """The prefix for one chunk. A row whose label did not parse, or that has no synopsis and
    no tags (labeler `none`), gets only its control tokens: a failed labeler output never
    becomes training text, and an empty `Synopsis:  Tags: []` never either."""
    tokens = "".join(control_tokens)
    if not parse_ok or not (synopsis or tags):
        return tokens
    return cfg.prefix_template.format(
        synopsis=synopsis, tags=", ".join(tags), control_tokens=tokens
    )


def conditional_text(
    cfg: FormatConfig,
    text: str,
    synopsis: str,
    tags: list[str],
    control_tokens: list[str],
    parse_ok: bool,
) -> str:
    return render_prefix(cfg, synopsis, tags, control_tokens, parse_ok) + text
