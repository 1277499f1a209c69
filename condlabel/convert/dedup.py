"""Duplicate-aware labeling: each distinct chunk text is labeled once per run.

Crawls repeat themselves (boilerplate, mirrors, syndication). Read tasks and labeler actors run
in parallel, so no batch can tell alone whether another batch holds the same text; the decision
is made before labeling, the same way every run, like the one-document-per-id rule
(`condlabel.convert.duplicates`):

1. the run's key pass (one read of every input, shared with the one-document-per-id rule)
   chunks every document and keeps per chunk still to label only 64-bit keys: its file and
   line/row, its chunk index, its key (`key_hash` of doc_id, doc_hash, chunk_index) and the hash
   of its normalised text; the chunks of later occurrences of an id are dropped (`plan_keys`);
2. `plan_copies`: among chunks with the same text hash, the first in input order (files sorted by
   URI, then line/row, then chunk index) is labeled; the others are its copies;
3. the read step holds the copies back (`split_copies`); the label stage keeps the labels of the
   chunks that have copies (`canonical_labels`); after the graph, each copy gets exactly the
   labels, scores and outputs of its labeled chunk, and `copied_from` names it (`fill_copies`).

Normalised text: Unicode NFC with runs of whitespace collapsed to one space and the ends
stripped; case and punctuation count. A 64-bit hash collision would copy one label onto another
text about once in 10^19/n² runs of n chunks. No Ray here (`condlabel.convert.copies` wires it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from condlabel.config import ConvertConfig
from condlabel.convert.chunking import chunk_document, doc_version
from condlabel.convert.duplicates import KEY_FIELDS, Duplicate, document_key, find_duplicates
from condlabel.convert.format import COPIED_FROM
from condlabel.convert.reading import Document, iter_file
from condlabel.current import normalise_text
from condlabel.runs.runstate import key_hash
from condlabel.storage import resolve

TEXT_HASH = "_text_hash"
"""A labeled chunk's text hash, kept beside its labels until its copies are filled."""
CHUNK_KEY_FIELDS = ("file", "position", "chunk_index", "key", "text")


def text_hash(text: str) -> int:
    digest = hashlib.blake2b(
        normalise_text(text).encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little", signed=True)


def text_hashes(texts: Iterable[str]) -> np.ndarray:
    return np.array([text_hash(t) for t in texts], dtype=np.int64)


def chunk_label_name(doc_id: str, chunk_index: int, doc_hash: str) -> str:
    """How `copied_from` names the labeled row: `doc_id#chunk_index@doc_hash` (its version
    included, so the name stays true when that document is edited later)."""
    return f"{doc_id}#{chunk_index}@{doc_hash}"


def file_keys(
    uri: str,
    file_index: int,
    cfg: ConvertConfig,
    done: Callable[[str, str, int], bool] | None = None,
    chunks: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One read of one file for the run's key pass: the `KEY_FIELDS` of every document (the
    one-document-per-id rule, `find_duplicates`) and, with `chunks`, the `CHUNK_KEY_FIELDS` of
    every chunk that `done` (called with doc_id, doc_hash, chunk_index) does not say is in the
    output. Later occurrences of an id are not known yet: `plan_keys` drops their chunks."""
    fs, path = resolve(uri, cfg.storage)
    docs: dict[str, list[int]] = {name: [] for name in KEY_FIELDS}
    rows: dict[str, list[int]] = {name: [] for name in CHUNK_KEY_FIELDS}
    for item in iter_file(fs, path, uri, cfg.input):
        if not isinstance(item, Document):
            continue
        for name, value in zip(
            KEY_FIELDS, (file_index, item.position, *document_key(item)), strict=True
        ):
            docs[name].append(value)
        if not chunks:
            continue
        doc_hash = doc_version(item.text, cfg.chunking)
        for chunk in chunk_document(item, cfg.chunking):
            if done is not None and done(item.doc_id, doc_hash, chunk.chunk_index):
                continue
            rows["file"].append(file_index)
            rows["position"].append(item.position)
            rows["chunk_index"].append(chunk.chunk_index)
            rows["key"].append(key_hash(item.doc_id, doc_hash, chunk.chunk_index))
            rows["text"].append(text_hash(chunk.text))
    return _arrays(docs), _arrays(rows)


def _arrays(rows: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    return {name: np.array(values, dtype=np.int64) for name, values in rows.items()}


@dataclass(frozen=True)
class CopyPlan:
    """Which chunks of a run are copies, and which labeled chunks have copies."""

    copy_keys: np.ndarray
    """Sorted `key_hash`es of the copies: the read step holds these back."""
    labeled_texts: np.ndarray
    """Sorted text hashes of the labeled chunks that have copies: their labels are kept."""
    to_label: int = 0
    """Chunks the run has to label or copy (none already in the output)."""

    @property
    def copies(self) -> int:
        return int(self.copy_keys.size)


def plan_copies(keys: Mapping[str, np.ndarray]) -> CopyPlan:
    """Every chunk after the first (in input order) with the same normalised text is a copy."""
    empty = np.array([], dtype=np.int64)
    if keys["key"].size == 0:
        return CopyPlan(empty, empty, 0)
    order = np.lexsort((keys["chunk_index"], keys["position"], keys["file"], keys["text"]))
    texts = keys["text"][order]
    later = np.r_[False, texts[1:] == texts[:-1]]
    return CopyPlan(
        np.sort(keys["key"][order][later]), np.unique(texts[later]), int(keys["key"].size)
    )


_PLACE = np.dtype([("file", np.int64), ("position", np.int64)])


def plan_keys(
    docs: Mapping[str, np.ndarray], chunks: Mapping[str, np.ndarray] | None, uris: list[str]
) -> tuple[dict[str, dict[int, Duplicate]], CopyPlan | None]:
    """The key pass's decisions from the keys of every file (`file_keys`): the later
    occurrences of each id, {file URI: {line/row: Duplicate}}, and the copy plan over the chunks
    a run labels, i.e. without the chunks of those later occurrences (None without `chunks`)."""
    found = find_duplicates(dict(docs), uris)
    if chunks is None:
        return found, None
    if found:
        file_of = {uri: i for i, uri in enumerate(uris)}
        later = np.array(
            [(file_of[uri], position) for uri, at in found.items() for position in at], _PLACE
        )
        place = np.empty(chunks["file"].size, _PLACE)
        place["file"], place["position"] = chunks["file"], chunks["position"]
        keep = ~np.isin(place, later)
        chunks = {name: values[keep] for name, values in chunks.items()}
    return found, plan_copies(chunks)


def _row_keys(table: pa.Table) -> np.ndarray:
    cols = table.select(["doc_id", "doc_hash", "chunk_index"]).to_pydict()
    return np.array(
        [
            key_hash(d, h, i)
            for d, h, i in zip(cols["doc_id"], cols["doc_hash"], cols["chunk_index"], strict=True)
        ],
        dtype=np.int64,
    )


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not sorted_set.size or not values.size:
        return np.zeros(values.size, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_set, values), sorted_set.size - 1)
    return sorted_set[at] == values


def split_copies(table: pa.Table, plan: CopyPlan) -> tuple[pa.Table, pa.Table]:
    """(the chunks to label, the copies held back) of a chunk table."""
    if not plan.copies or table.num_rows == 0:
        return table, table.slice(0, 0)
    is_copy = pa.array(_member(_row_keys(table), plan.copy_keys))
    return table.filter(pc.invert(is_copy)), table.filter(is_copy)


def canonical_labels(labeled: pa.Table, plan: CopyPlan, label_columns: list[str]) -> pa.Table:
    """The labels of the rows of a labeled batch that have copies: `label_columns`, the text
    hash and `copied_from` (this row's `chunk_label_name`)."""
    hashes = text_hashes(labeled.column("text").to_pylist())
    keep = _member(hashes, plan.labeled_texts)
    rows = labeled.filter(pa.array(keep))
    names = [
        chunk_label_name(d, i, h)
        for d, i, h in zip(
            rows.column("doc_id").to_pylist(),
            rows.column("chunk_index").to_pylist(),
            rows.column("doc_hash").to_pylist(),
            strict=True,
        )
    ]
    return (
        rows.select(label_columns)
        .append_column(TEXT_HASH, pa.array(hashes[keep], pa.int64()))
        .append_column(COPIED_FROM, pa.array(names, pa.string()))
    )


def fill_copies(copies: pa.Table, labels: pa.Table | None) -> tuple[pa.Table, pa.Table]:
    """(the copies with their labeled chunk's label columns and `copied_from`, the copies whose
    labeled chunk has no label: it failed to label and is a `labeler_error` reject).
    `labels` comes from `canonical_labels` (None: no chunk with copies was labeled)."""
    if labels is None or copies.num_rows == 0:
        return copies.slice(0, 0), copies
    index = {h: i for i, h in enumerate(labels.column(TEXT_HASH).to_pylist())}
    rows = [index.get(h) for h in text_hashes(copies.column("text").to_pylist()).tolist()]
    found = pa.array([r is not None for r in rows])
    taken = labels.take(pa.array([r for r in rows if r is not None], pa.int64()))
    filled = copies.filter(found)
    for name in labels.column_names:
        if name != TEXT_HASH:
            filled = filled.append_column(labels.schema.field(name), taken.column(name))
    return filled, copies.filter(pc.invert(found))
