"""Building a tag vocabulary from the tags an output holds (`condlabel vocab build`).

    raw tag counts (chunks carrying each tag as the labeler wrote it)
      -> groups of one `tag_key`             case, spacing and separators ("Machine-Learning")
      -> plural groups into singular ones    inflect's singular noun, when that form was seen too
      -> near-duplicates into frequent ones  rapidfuzz ratio of the keys without spaces
      -> canonical tag per group             its most frequent spelling
      -> groups under `min_count` dropped    listed in the file for review

Each merge is a judgement ("python" and "pythons" in a biology corpus are different things), so
each step has a setting; `VocabularySettings` holds the defaults. Needs the `vocab` extra.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from condlabel.tags.vocabulary import FORMAT, INSTALL_HINT, tag_key


@dataclass(frozen=True)
class VocabularySettings:
    min_count: int = 2
    """Canonical tags carried by fewer chunks (all variants together) are dropped."""
    plurals: bool = True
    """Merge a plural into its singular (inflect) when the singular was seen as a tag too."""
    similarity: float = 94.0
    """Merge a tag into a more frequent one whose key (spaces removed) is at least this similar
    (rapidfuzz ratio, 0-100): "node js" and "nodejs" (100), not "protein kinase a" and
    "protein kinase b" (92.9). 100 merges only identical keys; above 100 turns it off."""
    min_fuzzy_length: int = 6
    """Keys shorter than this (spaces removed) never merge by similarity: "cat"/"car" stay."""


def count_tags(rows: list[list[str] | None]) -> Counter[str]:
    """How many chunks carry each tag (a tag twice in one chunk counts once)."""
    counts: Counter[str] = Counter()
    for tags in rows:
        counts.update(set(t for t in tags or [] if t and t.strip()))
    return counts


class _Groups:
    """Union-find over tag keys; the root of a group is the key it was merged into."""

    def __init__(self, keys: list[str]) -> None:
        self.parent = {k: k for k in keys}

    def find(self, key: str) -> str:
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def merge(self, key: str, into: str) -> None:
        a, b = self.find(key), self.find(into)
        if a != b:
            self.parent[a] = b


def _libraries():
    try:
        import inflect
        from rapidfuzz import fuzz, process
    except ImportError as exc:
        raise ImportError(
            f"`condlabel vocab build` needs rapidfuzz and inflect: {INSTALL_HINT}"
        ) from exc
    return inflect.engine(), process, fuzz


def merge_variants(counts: Mapping[str, int], settings: VocabularySettings) -> dict[str, list[str]]:
    """{root key: [raw tags of its group]}: the merges of the module docstring."""
    inflector, process, fuzz = _libraries()
    by_key: dict[str, list[str]] = {}
    for tag in counts:
        key = tag_key(tag)
        if key:
            by_key.setdefault(key, []).append(tag)
    key_count = {k: sum(counts[t] for t in tags) for k, tags in by_key.items()}
    groups = _Groups(list(by_key))
    if settings.plurals:
        for key in by_key:
            singular = inflector.singular_noun(key)
            if singular and singular != key and singular in by_key:
                groups.merge(key, singular)
    if settings.similarity <= 100:
        _merge_similar(groups, key_count, settings, process, fuzz)
    merged: dict[str, list[str]] = {}
    for key, tags in by_key.items():
        merged.setdefault(groups.find(key), []).extend(tags)
    return merged


def _merge_similar(groups: _Groups, key_count: dict[str, int], settings, process, fuzz) -> None:
    """Most frequent groups first; each later one joins the most similar kept group, if any."""
    totals: Counter[str] = Counter()
    for key, n in key_count.items():
        totals[groups.find(key)] += n
    kept: list[str] = []  # root keys without spaces, parallel to kept_roots
    kept_roots: list[str] = []
    for root, _ in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])):
        compact = root.replace(" ", "")
        if len(compact) >= settings.min_fuzzy_length and kept:
            found = process.extractOne(
                compact, kept, scorer=fuzz.ratio, score_cutoff=settings.similarity
            )
            if found is not None:
                groups.merge(root, kept_roots[found[2]])
                continue
        kept.append(compact)
        kept_roots.append(root)


def build_vocabulary(
    counts: Mapping[str, int], settings: VocabularySettings, source: str = ""
) -> dict[str, Any]:
    """The vocabulary file's content (see `condlabel.tags.vocabulary`) for raw tag counts."""
    tags: dict[str, dict[str, Any]] = {}
    dropped: dict[str, int] = {}
    for variants in merge_variants(counts, settings).values():
        ranked = sorted(variants, key=lambda t: (-counts[t], len(t), t))
        total = sum(counts[t] for t in variants)
        if total < settings.min_count:
            dropped.update({t: counts[t] for t in ranked})
            continue
        canonical = ranked[0].strip()
        tags[canonical] = {"count": total, "variants": {t: counts[t] for t in ranked}}
    order = sorted(tags, key=lambda c: (-tags[c]["count"], c))
    return {
        "format": FORMAT,
        "source": source,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": asdict(settings),
        "raw_tags": len(counts),
        "tags": {c: tags[c] for c in order},
        "dropped": dict(sorted(dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def output_tag_rows(uri: str, storage=None) -> list[list[str] | None]:
    """Each chunk's tags as the labeler wrote them (`raw_tags` where a vocabulary mapped them),
    over the latest version of every document of an output prefix."""
    from condlabel.readback import read_dataset, tagged_dataset

    dataset = tagged_dataset(uri, storage, strict=True)
    columns = [c for c in ("tags", "raw_tags") if c in dataset.schema.names]
    table = read_dataset(dataset, columns)
    tags = table.column("tags").to_pylist() if "tags" in columns else []
    if "raw_tags" not in columns:
        return tags
    raw = table.column("raw_tags").to_pylist()
    return [r if r is not None else t for r, t in zip(raw, tags, strict=True)]


def write_vocabulary(content: dict[str, Any], uri: str, storage=None) -> None:
    """Write the file (local or s3://), readable and diffable: sorted as built, indented."""
    import json

    from condlabel.storage import resolve, write_bytes_atomic

    fs, path = resolve(uri, storage)
    data = json.dumps(content, indent=2, ensure_ascii=False) + "\n"
    write_bytes_atomic(fs, path, data.encode("utf-8"))
