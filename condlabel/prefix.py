"""The prefix put before a chunk's text: one rendering for conversion (`conditional_text`),
training (from the tagged shards) and evaluation (from a conditional), so a model is always
shown a conditional the way it was trained on it.

    labels (synopsis, tags through the vocabulary, control tokens) + kept input fields
        -> `format.prefix_template`, line by line:
           a line whose fields all render empty is dropped (never "None", never `Tags: []`);
           a line naming {synopsis} or {tags} is dropped when the label is unusable
           (did not parse, or no synopsis and no tags: labeler `none`);
           control tokens of a dropped line open the prefix, so they are never lost;
           lines without fields stay only beside a line with a field that is shown

Template fields: {synopsis}, {tags} (comma-joined), {control_tokens} (concatenated),
{meta.NAME} (the kept input field NAME as text) and {url_domain} (the host of the URL field,
lowercased, without a leading `www.`). Kept text has control tokens and line breaks removed
before it enters a prefix, so a field cannot forge a control token or a template line.
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from condlabel.config import FormatConfig, StorageConfig
from condlabel.config.common import META_FIELD, URL_DOMAIN_FIELD
from condlabel.tags.vocabulary import Vocabulary, load_vocabulary, require_rapidfuzz

RAW_TAGS = "raw_tags"
META = META_FIELD
"""Template fields `{meta.NAME}` name the kept input field NAME."""
URL_DOMAIN = URL_DOMAIN_FIELD
LABEL_FIELDS = ("synopsis", "tags")
CONTROL_TOKENS = "control_tokens"

# `<|pos|>`-style tokens: a kept field must not smuggle one into a prefix.
_CONTROL_TOKEN = re.compile(r"<\|[^\s|]*\|>")
_FORMATTER = string.Formatter()


# --------------------------------------------------------------------------- the rendering


def render_prefix(
    cfg: FormatConfig,
    synopsis: str,
    tags: list[str],
    control_tokens: list[str],
    parse_ok: bool,
    meta: Mapping[str, str] | None = None,
) -> str:
    """The prefix for one chunk. `meta`: the metadata template fields as text
    (`metadata_fields` of a row, or an evaluation conditional's values); a field it lacks is
    empty. A row whose label did not parse, or that has no synopsis and no tags (labeler
    `none`), keeps its control tokens and its metadata lines: a failed labeler output never
    becomes training text."""
    usable = parse_ok and bool(synopsis or tags)
    values = {
        "synopsis": synopsis if usable else "",
        "tags": ", ".join(tags) if usable else "",
        CONTROL_TOKENS: "".join(control_tokens),
        **(meta or {}),
    }
    carried, lines, shown = "", [], False
    for line in cfg.prefix_template.splitlines(keepends=True):
        rendered = _render_line(line, values, usable)
        names = _line_fields(line)
        if rendered is None:
            # Dropped: its control tokens still lead the prefix.
            carried += values[CONTROL_TOKENS] if CONTROL_TOKENS in names else ""
            continue
        lines.append(rendered)
        shown = shown or any(n != CONTROL_TOKENS for n in names)
    if not shown:
        # Nothing but template text left (a MeCo `URL: {url_domain}\n\n` without a URL): no
        # prefix but the control tokens, all of them for a row without a usable label.
        return carried if usable else values[CONTROL_TOKENS]
    return carried + "".join(lines)


def _line_fields(line: str) -> list[str]:
    return [name for _, name, _, _ in _FORMATTER.parse(line) if name is not None]


def _render_line(line: str, values: Mapping[str, str], usable: bool) -> str | None:
    """One template line filled in, or None when it is dropped."""
    names = _line_fields(line)
    if not usable and any(n in LABEL_FIELDS for n in names):
        return None
    # The control tokens alone do not keep a line that has other fields (they move up instead).
    content = [n for n in names if n != CONTROL_TOKENS] or names
    if content and not any(values.get(n, "") for n in content):
        return None
    out = []
    for literal, name, spec, conversion in _FORMATTER.parse(line):
        out.append(literal)
        if name is not None:
            value: Any = values.get(name, "")
            if conversion:
                value = _FORMATTER.convert_field(value, conversion)
            out.append(_FORMATTER.format_field(value, spec or ""))
    return "".join(out)


def conditional_text(
    cfg: FormatConfig,
    text: str,
    synopsis: str,
    tags: list[str],
    control_tokens: list[str],
    parse_ok: bool,
    meta: Mapping[str, str] | None = None,
) -> str:
    return render_prefix(cfg, synopsis, tags, control_tokens, parse_ok, meta) + text


# --------------------------------------------------------------------------- metadata


def template_metadata(template: str) -> tuple[list[str], bool]:
    """(the kept fields `{meta.NAME}` names, whether it uses `{url_domain}`), in order."""
    names = _line_fields(template)
    kept = list(dict.fromkeys(n[len(META) :] for n in names if n.startswith(META)))
    return kept, URL_DOMAIN in names


def metadata_columns(template: str, url_field: str) -> list[str]:
    """The row columns a template's metadata fields are rendered from."""
    kept, uses_domain = template_metadata(template)
    return list(dict.fromkeys(kept + ([url_field] if uses_domain else [])))


def metadata_fields(row: Mapping[str, Any], template: str, url_field: str) -> dict[str, str]:
    """The metadata template fields of one row (a shard row, or a chunk being formatted), as
    the prefix shows them."""
    kept, uses_domain = template_metadata(template)
    fields = {META + name: meta_text(row.get(name)) for name in kept}
    if uses_domain:
        fields[URL_DOMAIN] = url_domain(row.get(url_field))
    return fields


def meta_text(value: Any) -> str:
    """A kept field's value as prefix text: empty for null, `true`/`false`, ISO 8601 for a
    timestamp; control tokens and line breaks removed."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (dt.datetime, dt.date)):
        text = value.isoformat()
    else:
        text = str(value)
    return clean_text(text)


def clean_text(text: str) -> str:
    """Text safe inside one prefix line: no control token, no line break."""
    text = _CONTROL_TOKEN.sub("", text)
    return " ".join(part.strip() for part in text.splitlines() if part.strip())


def url_domain(url: Any) -> str:
    """The host of a URL, lowercased, without a leading `www.`; empty for no URL or one
    without a host. A URL without a scheme (`example.com/page`) is read as a host first."""
    if not isinstance(url, str) or not url.strip():
        return ""
    url = url.strip()
    if "//" not in url:
        url = "//" + url
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:  # e.g. an unbalanced `[` of an IPv6 literal
        return ""
    host = host.lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    return clean_text(host)


# --------------------------------------------------------------------------- tags


def vocabulary_for(
    cfg: FormatConfig, storage: StorageConfig | None, key: str = "format.tag_vocabulary"
) -> Vocabulary | None:
    """The configured tag vocabulary (read once per process), or None. `tag_oov: map` needs
    rapidfuzz: its absence fails here, before any work, with the install line."""
    if not cfg.tag_vocabulary:
        return None
    if cfg.tag_oov == "map":
        require_rapidfuzz()
    return load_vocabulary(cfg.tag_vocabulary, storage, key)


def row_tags(row: Mapping[str, Any], cfg: FormatConfig, vocabulary: Vocabulary | None) -> list[str]:
    """A row's tags as the prefix shows them: through the vocabulary when there is one, from
    the labeler's own (`raw_tags`, else `tags` of a row written without a vocabulary)."""
    if vocabulary is None:
        return list(row.get("tags") or [])
    raw = row.get(RAW_TAGS)
    return vocabulary.map_tags(
        raw if raw is not None else row.get("tags") or [], cfg.tag_oov, cfg.tag_oov_similarity
    )
