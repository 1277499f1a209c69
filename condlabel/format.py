"""Building conditional examples: prefix (from the configured template) + chunk text."""

from __future__ import annotations

from condlabel.config import FormatConfig


def render_prefix(
    cfg: FormatConfig, synopsis: str, tags: list[str], control_tokens: list[str], parse_ok: bool
) -> str:
    """The prefix for one chunk. A row whose label did not parse gets only its control tokens,
    so a failed labeler output never becomes training text."""
    tokens = "".join(control_tokens)
    if not parse_ok:
        return tokens
    return cfg.prefix_template.format(synopsis=synopsis, tags=", ".join(tags), control_tokens=tokens)


def conditional_text(
    cfg: FormatConfig,
    text: str,
    synopsis: str,
    tags: list[str],
    control_tokens: list[str],
    parse_ok: bool,
) -> str:
    return render_prefix(cfg, synopsis, tags, control_tokens, parse_ok) + text
