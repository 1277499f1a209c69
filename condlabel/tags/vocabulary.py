"""A tag vocabulary file: loading, its fingerprint, and mapping a row's tags to canonical ones.

The file is the reviewable JSON `condlabel vocab build` writes (people edit it: move a variant,
rename a canonical tag, delete an entry):

    {"format": "condlabel-tag-vocabulary-v1",
     "tags": {"machine learning": {"count": 130,
                                   "variants": {"machine learning": 80, "Machine-Learning": 30,
                                                "machine learning models": 20}}, ...},
     "dropped": {"called": 1, ...}, "settings": {...}, "source": "...", "built_at": "..."}

A tag maps to its canonical tag when it is one of the variants as written, else when its
`tag_key` (case, spacing and separators folded) is that of a variant or of the canonical tag.
The fingerprint covers the mapping only (canonical tags and their variants), not the counts.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from condlabel.config import ConfigError, StorageConfig

FORMAT = "condlabel-tag-vocabulary-v1"
OOV_POLICIES = ("keep", "map", "drop")
INSTALL_HINT = "pip install 'condlabel[vocab]'"

# Separators fold to one space; `+` and `#` stay, so "C++" and "C#" are not "C".
_SEPARATORS = re.compile(r"(?:[^\w+#]|_)+")


def tag_key(tag: str) -> str:
    """What two spellings of a tag must share to be the same tag: NFKC, case folded, every run
    of spaces and punctuation (except + and #) one space, trimmed. "Machine-Learning " and
    "machine learning" share a key."""
    return _SEPARATORS.sub(" ", unicodedata.normalize("NFKC", tag).casefold()).strip()


class VocabularyError(ConfigError):
    """A vocabulary file that cannot be used; names the config key and the file."""

    def __init__(self, key: str, uri: str, problem: str):
        super().__init__([f"{key}: {uri}: {problem}"])


@dataclass
class Vocabulary:
    """Canonical tags, each with its variants; see the module docstring for the file."""

    tags: dict[str, dict[str, int]]
    """canonical tag -> {variant as written: chunks carrying it}"""
    counts: dict[str, int] = field(default_factory=dict)
    """canonical tag -> chunks carrying any of its variants"""
    uri: str = ""
    _exact: dict[str, str] = field(init=False, repr=False)
    _by_key: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._exact, self._by_key = {}, {}
        for canonical, variants in self.tags.items():
            for variant in [canonical, *variants]:
                self._exact.setdefault(variant, canonical)
                self._by_key.setdefault(tag_key(variant), canonical)

    @property
    def fingerprint(self) -> str:
        mapping = {c: sorted(v) for c, v in sorted(self.tags.items())}
        digest = hashlib.sha256(json.dumps(mapping, ensure_ascii=False).encode()).hexdigest()
        return f"vocab-{digest[:16]}"

    def record(self) -> dict[str, Any]:
        """What manifests and training provenance keep of it."""
        return {"uri": self.uri, "fingerprint": self.fingerprint, "canonical_tags": len(self.tags)}

    def canonical(self, tag: str) -> str | None:
        """The canonical tag of `tag`, or None when the vocabulary does not know it."""
        found = self._exact.get(tag)
        return found if found is not None else self._by_key.get(tag_key(tag))

    def map_tags(
        self, tags: Iterable[str], oov: str = "keep", similarity: float = 85.0
    ) -> list[str]:
        """A row's tags as canonical tags, in order, each once. A tag outside the vocabulary is
        kept as written (`keep`), mapped to the most similar canonical tag when their keys are
        at least `similarity` alike (`map`, rapidfuzz's ratio, 0-100; else dropped), or dropped
        (`drop`)."""
        out: list[str] = []
        for tag in tags:
            mapped = self.canonical(tag)
            if mapped is None and oov == "keep":
                mapped = tag
            elif mapped is None and oov == "map":
                mapped = self.nearest(tag, similarity)
            if mapped is not None and mapped not in out:
                out.append(mapped)
        return out

    def nearest(self, tag: str, similarity: float) -> str | None:
        process, fuzz = require_rapidfuzz()
        found = process.extractOne(
            tag_key(tag), list(self._by_key), scorer=fuzz.ratio, score_cutoff=similarity
        )
        return self._by_key[found[0]] if found else None


def require_rapidfuzz():
    try:
        from rapidfuzz import fuzz, process
    except ImportError as exc:
        raise ImportError(
            f"format.tag_oov=map and `condlabel vocab build` need rapidfuzz: {INSTALL_HINT}"
        ) from exc
    return process, fuzz


def vocabulary_from_dict(data: Any, uri: str, key: str = "format.tag_vocabulary") -> Vocabulary:
    """Check a parsed vocabulary file; every problem names the key and the file."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise VocabularyError(key, uri, f'not a tag vocabulary (expected "format": "{FORMAT}")')
    tags = data.get("tags")
    if not isinstance(tags, dict):
        raise VocabularyError(key, uri, '"tags" must map each canonical tag to its entry')
    parsed: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for canonical, entry in tags.items():
        variants = entry.get("variants") if isinstance(entry, dict) else None
        if not canonical.strip() or not isinstance(variants, dict):
            raise VocabularyError(
                key,
                uri,
                f'tag {_quoted(canonical)}: needs a non-empty name and a "variants" object',
            )
        if not all(_is_count(n) for n in variants.values()):
            raise VocabularyError(
                key, uri, f"tag {_quoted(canonical)}: variant counts must be integers >= 0"
            )
        count = entry.get("count", sum(variants.values()))
        if not _is_count(count):
            raise VocabularyError(
                key, uri, f'tag {_quoted(canonical)}: "count" must be an integer >= 0'
            )
        parsed[canonical] = dict(variants)
        counts[canonical] = count
    return Vocabulary(parsed, counts, uri)


# A count is a chunk count: a JSON integer of sane size (not a bool, a float, text or null).
_MAX_COUNT = 2**63 - 1


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_COUNT


def _quoted(name: str, limit: int = 80) -> str:
    shown = repr(name)
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


@functools.lru_cache(maxsize=8)
def _load_cached(uri: str, storage_json: str, key: str) -> Vocabulary:
    from condlabel.storage import resolve

    storage = StorageConfig.model_validate_json(storage_json) if storage_json else None
    fs, path = resolve(uri, storage)
    try:
        if fs.isdir(path):
            raise VocabularyError(key, uri, "a directory, not a vocabulary file")
        with fs.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise VocabularyError(key, uri, "no such file") from None
    except (IsADirectoryError, PermissionError) as exc:
        raise VocabularyError(key, uri, f"cannot be read ({type(exc).__name__})") from None
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise VocabularyError(key, uri, f"not JSON ({exc})") from None
    except (ValueError, RecursionError) as exc:
        # An integer of thousands of digits, NaN/Infinity, or arrays nested thousands deep.
        raise VocabularyError(key, uri, f"not a usable JSON file ({_clipped(exc)})") from None
    return vocabulary_from_dict(data, uri, key)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number a vocabulary may hold")


def _clipped(exc: BaseException, limit: int = 200) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_vocabulary(
    uri: str, storage: StorageConfig | None = None, key: str = "format.tag_vocabulary"
) -> Vocabulary:
    """The vocabulary at `uri` (local or s3://), read once per process; `key` is the config
    key that named it (for error messages)."""
    # The cache key holds the storage settings, secrets revealed so two credentials differ; it
    # stays in this process's memory.
    dumped = (
        json.dumps(storage.model_dump(mode="python"), default=_reveal, sort_keys=True)
        if storage is not None
        else ""
    )
    return _load_cached(uri, dumped, key)


def _reveal(value: Any) -> Any:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else str(value)
