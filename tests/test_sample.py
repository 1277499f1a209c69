"""`convert --sample-fraction F`: a deterministic sample by id hash, extended by a larger F,
optionally keeping a document of every file; recorded in the manifest."""

from __future__ import annotations

import io
import json

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_args, output_rows, row_keys

from condlabel.cli import main
from condlabel.config import InputConfig, StorageConfig
from condlabel.convert.reading import Reject, iter_jsonl
from condlabel.convert.sampling import id_fraction, in_sample, sample_documents
from condlabel.runs.runstate import read_manifests


def _ids(items) -> list[str]:
    return [i.doc_id for i in items if not isinstance(i, Reject)]


def _read(lines: list[str], **sample) -> list:
    cfg = InputConfig(**sample)
    data = io.BufferedReader(io.BytesIO("".join(line + "\n" for line in lines).encode()))
    return list(sample_documents(iter_jsonl(data, cfg, "s.jsonl"), **_args(cfg)))


def _args(cfg: InputConfig) -> dict:
    return {"fraction": cfg.sample_fraction, "stratified": cfg.sample_stratified}


def test_the_sample_is_the_ids_below_the_fraction_and_grows_with_it():
    ids = [f"doc-{i}" for i in range(4000)]
    small = {i for i in ids if in_sample(i, 0.05)}
    large = {i for i in ids if in_sample(i, 0.2)}
    assert small < large  # a larger fraction keeps every document of a smaller one
    assert 0.03 < len(small) / len(ids) < 0.07
    assert 0.17 < len(large) / len(ids) < 0.23
    assert all(0 <= id_fraction(i) < 1 for i in ids[:50])
    assert all(in_sample(i, 1.0) for i in ids[:50])


def test_stratified_keeps_the_lowest_hash_of_a_file_without_sampled_ids_and_every_reject():
    ids = [f"x{i}" for i in range(30)]
    fraction = min(id_fraction(i) for i in ids) / 2  # below every id of this file
    lines = [json.dumps({"id": i, "text": f"text {i}"}) for i in ids] + ["{broken"]
    plain = _read(lines, sample_fraction=fraction)
    assert _ids(plain) == []
    assert [r.reason for r in plain if isinstance(r, Reject)] == ["invalid_json"]
    stratified = _read(lines, sample_fraction=fraction, sample_stratified=True)
    assert _ids(stratified) == [min(ids, key=id_fraction)]
    # Where the file has ids in the fraction, stratification adds nothing.
    wide = _read(lines, sample_fraction=0.5, sample_stratified=True)
    assert _ids(wide) == [i for i in ids if id_fraction(i) < 0.5]


def test_bad_fraction_fails_naming_the_key():
    from condlabel.config import ConfigError, load_convert_config

    with pytest.raises(ConfigError, match=r"input\.sample_fraction"):
        load_convert_config(overrides=["input.sample_fraction=0"])


@pytest.mark.usefixtures("ray_local")
def test_convert_labels_the_sample_records_it_and_extends_it(tmp_path):
    docs = make_docs(40, "a") + make_docs(3, "tiny")
    write_jsonl(tmp_path / "in" / "a.jsonl", docs[:40])
    write_jsonl(tmp_path / "in" / "tiny.jsonl", docs[40:])
    out = tmp_path / "out"
    args = convert_args([tmp_path / "in"], out, "chunking.max_words=400", "output.lease_ttl_s=30")
    tiny_ids = [d["id"] for d in docs[40:]]
    fraction = min(0.25, min(id_fraction(i) for i in tiny_ids) * 0.99)

    assert main([*args, "--sample-fraction", str(fraction), "--sample-stratified"]) == 0
    first = set(output_rows(out, columns=["doc_id"]).column("doc_id").to_pylist())
    expected = {d["id"] for d in docs[:40] if id_fraction(d["id"]) < fraction}
    assert first == expected | {min(tiny_ids, key=id_fraction)}
    [manifest] = read_manifests(str(out), StorageConfig())
    assert manifest["sample"]["fraction"] == fraction
    assert manifest["sample"]["stratified"] is True

    # Extending: a larger fraction adds documents, relabels none. The input ledger keys its
    # entries on the sample, so the files the first run completed are read again.
    assert main([*args, "--sample-fraction", "0.6"]) == 0
    rows = output_rows(out, columns=["doc_id", "chunk_index"])
    second = set(rows.column("doc_id").to_pylist())
    assert first < second
    assert second - first == {
        d["id"] for d in docs if id_fraction(d["id"]) < 0.6 and d["id"] not in first
    }
    keys = row_keys(rows)
    assert len(keys) == len(set(keys))
