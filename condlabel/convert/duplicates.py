"""One document per id in a run: the rule, and the key pass that applies it across files.

Read tasks run in parallel, so no task can tell alone whether an id was seen in another file.
Before labeling, a pass over the inputs collects per document only 64-bit keys (the id's hash
in two halves, the text's hash, the file and line/row); `find_duplicates` then decides, the same
way every run:

- the first occurrence of an id in input order (files sorted by URI, then line/row) is the
  document; ids are compared as read (`7` and `"7"` are the same id);
- a later occurrence with the same text is labeled once: a `duplicate_text` reject;
- a later occurrence with a different text is a `duplicate_id` reject, with the record kept.

So reruns over the same inputs pick the same document per id and converge. No Ray here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from condlabel.config import InputConfig
from condlabel.convert.reading import REJECT_DUPLICATE_TEXT, Document, Reject

REJECT_DUPLICATE_ID = "duplicate_id"
KEY_FIELDS = ("file", "position", "id_high", "id_low", "text")


@dataclass(frozen=True)
class Duplicate:
    """A later occurrence of an id: why it is rejected, and where the kept document is."""

    reason: str
    first_source: str
    first_position: int


def _hash128(text: str) -> tuple[int, int]:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return (
        int.from_bytes(digest[:8], "little", signed=True),
        int.from_bytes(digest[8:], "little", signed=True),
    )


def document_key(doc: Document) -> tuple[int, int, int]:
    """(id_high, id_low, text) of `KEY_FIELDS`: the id's 128-bit hash in two halves, then the
    text's (64 bits)."""
    id_high, id_low = _hash128(doc.doc_id)
    return id_high, id_low, _hash128(doc.text)[0]


def find_duplicates(
    keys: dict[str, np.ndarray], uris: list[str]
) -> dict[str, dict[int, Duplicate]]:
    """{file URI: {line/row: Duplicate}} for every occurrence of an id after its first one;
    `keys` holds `KEY_FIELDS` arrays, `file` indexing `uris`."""
    n = keys["file"].size
    if n == 0:
        return {}
    order = np.lexsort((keys["position"], keys["file"], keys["id_low"], keys["id_high"]))
    high, low = keys["id_high"][order], keys["id_low"][order]
    starts = np.r_[True, (high[1:] != high[:-1]) | (low[1:] != low[:-1])]
    first = order[np.maximum.accumulate(np.where(starts, np.arange(n), 0))]
    found: dict[str, dict[int, Duplicate]] = {}
    for later, kept in zip(order[~starts], first[~starts], strict=True):
        same = keys["text"][later] == keys["text"][kept]
        duplicate = Duplicate(
            REJECT_DUPLICATE_TEXT if same else REJECT_DUPLICATE_ID,
            uris[keys["file"][kept]],
            int(keys["position"][kept]),
        )
        found.setdefault(uris[keys["file"][later]], {})[int(keys["position"][later])] = duplicate
    return found


def duplicate_reject(doc: Document, duplicate: Duplicate, cfg: InputConfig) -> Reject:
    """The reject of a later occurrence, holding its id and text so nothing is lost."""
    what = "the same text" if duplicate.reason == REJECT_DUPLICATE_TEXT else "another text"
    detail = (
        f"id {doc.doc_id!r} was read before with {what} at {duplicate.first_source} "
        f"line/row {duplicate.first_position}: that one is labeled"
    )
    raw = json.dumps({cfg.id_field: doc.doc_id, cfg.text_field: doc.text}, ensure_ascii=False)
    return Reject(doc.source, doc.position, cfg.id_field, duplicate.reason, detail, raw.encode())
