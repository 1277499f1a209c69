"""The managed tag vocabulary: merges with known answers (and ones that must not happen), the
file and its fingerprint, the out-of-vocabulary policy, and the vocabulary applied end to end
from `condlabel vocab build` through conversion to the training prefix."""

from __future__ import annotations

import json
import random

import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_config, output_rows

from condlabel.cli import main
from condlabel.config import ConfigError, StorageConfig, TrainDataConfig
from condlabel.convert.pipeline import run_conversion
from condlabel.runs.runstate import read_manifests
from condlabel.tags import Vocabulary, VocabularyError, load_vocabulary, tag_key
from condlabel.tags.build import VocabularySettings, build_vocabulary, count_tags
from condlabel.tags.vocabulary import vocabulary_from_dict
from condlabel.train.data import training_prefix

COUNTS = {
    "machine learning": 50,
    "Machine-Learning": 20,
    "machine  learning ": 3,
    "machine learning models": 4,
    "machine learning model": 6,
    "neural networks": 10,
    "neural network": 12,
    "nodejs": 5,
    "node js": 4,
    "protein kinase a": 8,
    "protein kinase b": 7,
    "C++": 6,
    "c": 6,
    "cat": 9,
    "car": 9,
    "called": 1,
    "true": 1,
}


def _groups(content: dict) -> dict[str, set[str]]:
    return {c: set(entry["variants"]) for c, entry in content["tags"].items()}


def test_known_merges_with_the_default_settings():
    content = build_vocabulary(COUNTS, VocabularySettings())
    assert _groups(content) == {
        "machine learning": {"machine learning", "Machine-Learning", "machine  learning "},
        "neural network": {"neural network", "neural networks"},
        "machine learning model": {"machine learning model", "machine learning models"},
        "nodejs": {"nodejs", "node js"},
        "cat": {"cat"},
        "car": {"car"},
        "protein kinase a": {"protein kinase a"},
        "protein kinase b": {"protein kinase b"},
        "C++": {"C++"},
        "c": {"c"},
    }
    assert content["tags"]["machine learning"]["count"] == 73
    assert content["dropped"] == {"called": 1, "true": 1}  # below min_count 2
    # Most frequent canonical tag first; the file is what a reviewer reads.
    assert list(content["tags"])[:2] == ["machine learning", "neural network"]


def test_merges_are_settable_judgements():
    biology = {"python": 10, "pythons": 6, "boa": 3}
    assert _groups(build_vocabulary(biology, VocabularySettings()))["python"] == {
        "python",
        "pythons",
    }
    apart = build_vocabulary(biology, VocabularySettings(plurals=False))
    assert set(apart["tags"]) == {"python", "pythons", "boa"}
    # A lower similarity merges the kinases (92.9 alike without spaces); 101 merges nothing.
    loose = build_vocabulary(COUNTS, VocabularySettings(similarity=90))
    assert _groups(loose)["protein kinase a"] == {"protein kinase a", "protein kinase b"}
    strict = build_vocabulary(COUNTS, VocabularySettings(similarity=101))
    assert "node js" in strict["tags"] and "nodejs" in strict["tags"]
    assert build_vocabulary(COUNTS, VocabularySettings(min_count=10))["dropped"]["cat"] == 9


def test_a_plural_merges_only_into_a_singular_that_was_seen():
    # inflect's singular of "physics" is "physic", of "bus" "bu": never seen, so nothing merges.
    content = build_vocabulary({"physics": 3, "bus": 3, "buses": 2}, VocabularySettings())
    assert _groups(content) == {"physics": {"physics"}, "bus": {"bus", "buses"}}


def test_count_tags_counts_chunks_not_mentions():
    assert count_tags([["a", "a", "b"], None, ["a", " "]]) == {"a": 2, "b": 1}


def _vocabulary() -> Vocabulary:
    return vocabulary_from_dict(build_vocabulary(COUNTS, VocabularySettings()), "mem")


def test_tags_map_to_canonical_tags_with_the_oov_policy():
    vocab = _vocabulary()
    raw = ["MACHINE_LEARNING", "neural networks", "node  JS", "unseen tag", "Machine-Learning"]
    assert vocab.map_tags(raw) == ["machine learning", "neural network", "nodejs", "unseen tag"]
    assert vocab.map_tags(raw, "drop") == ["machine learning", "neural network", "nodejs"]
    assert vocab.map_tags(["neural netwrks", "zebra"], "map", 85) == ["neural network"]
    assert vocab.map_tags(["called"]) == ["called"]  # dropped as rare: out of the vocabulary
    assert tag_key(" Machine--Learning ") == tag_key("machine learning")
    assert tag_key("C++") != tag_key("C")


def test_the_fingerprint_covers_the_mapping_not_the_counts():
    content = build_vocabulary(COUNTS, VocabularySettings())
    first = vocabulary_from_dict(content, "a").fingerprint
    content["tags"]["cat"]["count"] = 1000
    content["tags"]["cat"]["variants"]["cat"] = 1000
    assert vocabulary_from_dict(content, "b").fingerprint == first
    content["tags"]["cat"]["variants"]["kitty"] = 1
    assert vocabulary_from_dict(content, "c").fingerprint != first


def test_a_bad_vocabulary_file_names_the_key_and_the_file(tmp_path):
    with pytest.raises(VocabularyError, match=r"data.format.tag_vocabulary: .*nope.json: no such"):
        load_vocabulary(str(tmp_path / "nope.json"), key="data.format.tag_vocabulary")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"bad\.json: not JSON"):
        load_vocabulary(str(tmp_path / "bad.json"))
    (tmp_path / "other.json").write_text(json.dumps({"tags": {}}))
    with pytest.raises(ConfigError, match="not a tag vocabulary"):
        load_vocabulary(str(tmp_path / "other.json"))
    (tmp_path / "entry.json").write_text(
        json.dumps({"format": "condlabel-tag-vocabulary-v1", "tags": {"x": {"variants": 3}}})
    )
    with pytest.raises(ConfigError, match="tag 'x'"):
        load_vocabulary(str(tmp_path / "entry.json"))


# --- end to end: convert, vocab build, convert with the vocabulary, the training prefix --------


@pytest.mark.usefixtures("ray_local")
def test_the_vocabulary_from_build_to_the_training_prefix(tmp_path, capsys):
    write_jsonl(tmp_path / "corpus" / "docs.jsonl", make_docs(12, "v"))
    run_conversion(
        convert_config([tmp_path / "corpus"], tmp_path / "plain", "chunking.max_words=60")
    )
    plain = {
        (r["doc_id"], r["chunk_index"]): r for r in output_rows(tmp_path / "plain").to_pylist()
    }

    vocab_file = tmp_path / "vocab.json"
    argv = ["vocab", "build", str(tmp_path / "plain"), "--output", str(vocab_file)]
    assert main([*argv, "--min-count", "3"]) == 0
    assert "canonical tags" in capsys.readouterr().out
    vocab = load_vocabulary(str(vocab_file))
    counts = count_tags([r["tags"] for r in plain.values()])
    assert vocab.tags and all(vocab.counts[c] >= 3 for c in vocab.tags)
    assert {v for variants in vocab.tags.values() for v in variants} <= set(counts)

    summary = run_conversion(
        convert_config(
            [tmp_path / "corpus"],
            tmp_path / "mapped",
            "chunking.max_words=60",
            f"format.tag_vocabulary={vocab_file}",
            "format.tag_oov=drop",
        )
    )
    assert summary.tag_vocabulary == vocab.record()
    [manifest] = read_manifests(str(tmp_path / "mapped"), StorageConfig())
    assert manifest["tag_vocabulary"]["fingerprint"] == vocab.fingerprint
    rows = output_rows(tmp_path / "mapped").to_pylist()
    assert len(rows) == len(plain)
    known = {v for variants in vocab.tags.values() for v in variants}
    dropped_some = False
    for row in rows:
        labeler_tags = plain[(row["doc_id"], row["chunk_index"])]["tags"]
        assert row["raw_tags"] == labeler_tags  # the labeler's words are kept
        assert row["tags"] == vocab.map_tags(labeler_tags, "drop")
        assert set(row["tags"]) <= set(vocab.tags)
        dropped_some |= any(t not in known for t in labeler_tags)
        # Training renders the same prefix from the rows as written without a vocabulary.
        data = TrainDataConfig(
            untagged_fraction=0, format={"tag_vocabulary": str(vocab_file), "tag_oov": "drop"}
        )
        unmapped = plain[(row["doc_id"], row["chunk_index"])]
        prefix = training_prefix(unmapped, data, random.Random(0), vocab)
        assert prefix + row["text"] == row["conditional_text"]
    assert dropped_some  # rare tags were really out of the vocabulary


@pytest.mark.usefixtures("ray_local")
def test_training_reads_raw_tags_only_with_a_vocabulary(tmp_path):
    from condlabel.train.loop import read_training_rows

    write_jsonl(tmp_path / "corpus" / "docs.jsonl", make_docs(3, "t"))
    run_conversion(convert_config([tmp_path / "corpus"], tmp_path / "out", "chunking.max_words=60"))
    files = [str(p) for p in sorted((tmp_path / "out").glob("part-*.parquet"))]
    with_raw = read_training_rows(files, StorageConfig(), ("raw_tags",)).take(1)[0]
    assert "raw_tags" in with_raw and with_raw["raw_tags"] is None  # converted without one
    assert "raw_tags" not in read_training_rows(files, StorageConfig()).take(1)[0]


def test_a_run_with_an_unreadable_vocabulary_fails_before_any_work(tmp_path, capsys):
    write_jsonl(tmp_path / "corpus" / "docs.jsonl", make_docs(2, "e"))
    code = main(
        [
            "convert",
            "--input",
            str(tmp_path / "corpus"),
            "--output",
            str(tmp_path / "out"),
            "--set",
            f"format.tag_vocabulary={tmp_path / 'missing.json'}",
            "--set",
            "compute.num_cpus=1",
        ]
    )
    assert code == 2
    assert "format.tag_vocabulary" in capsys.readouterr().err
    assert not list((tmp_path / "out").glob("part-*.parquet"))
