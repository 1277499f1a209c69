"""A deterministic sample of the documents (`convert --sample-fraction F`), no Ray here.

A document is in the sample when the hash of its id, read as a number in [0, 1), falls below
F. The hash depends on the id alone, so the sample is the same in every run, whatever the
order, sharding or compression of the files, and raising F keeps every document a smaller F
took: a sample is extended by rerunning with a larger fraction over the same output (the
chunks already there are skipped as usual). `stratified` adds, for each input file where no
id falls below F, the document with the lowest hash, so every shard of the corpus has at least
one document in the sample (the rest of each file is already sampled at rate F by the hash).
Both choices are made while the file streams: at most one document is held back per file.

Teachers' labels are usually wanted on a sample of a crawl (distillation, issue 14); the
salt keeps this hash independent of every other hash of an id (holdout split, duplicates).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from condlabel.config import InputConfig

SAMPLE_SALT = "condlabel-sample-v1"
Item = TypeVar("Item")


def id_fraction(doc_id: str, salt: str = SAMPLE_SALT) -> float:
    """The id's place in [0, 1): 64 bits of blake2b over the salt and the id."""
    digest = hashlib.blake2b(
        f"{salt}\x00{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") / 2**64


def in_sample(doc_id: str, fraction: float) -> bool:
    return fraction >= 1 or id_fraction(doc_id) < fraction


def sample_documents(items: Iterator[Item], fraction: float, stratified: bool) -> Iterator[Item]:
    """The items of one file with the documents outside the sample left out; rejects (items
    without a `doc_id`) all pass, so bad input is kept whether sampled or not."""
    if fraction >= 1:
        yield from items
        return
    took_one = False
    lowest: tuple[float, Any] | None = None
    for item in items:
        doc_id = getattr(item, "doc_id", None)
        if doc_id is None:
            yield item
            continue
        key = id_fraction(doc_id)
        if key < fraction:
            took_one = True
            yield item
        elif stratified and not took_one and (lowest is None or key < lowest[0]):
            lowest = (key, item)
    if stratified and not took_one and lowest is not None:
        yield lowest[1]


def sample_record(cfg: InputConfig) -> dict[str, Any] | None:
    """What the run manifest records of the sample (None: every document)."""
    if cfg.sample_fraction >= 1:
        return None
    return {
        "fraction": cfg.sample_fraction,
        "stratified": cfg.sample_stratified,
        "hash": f"blake2b-64 of '{SAMPLE_SALT}' + NUL + doc id, as a fraction of 2^64",
    }
