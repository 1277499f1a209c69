"""The tag vocabulary at training time on Ray Train: a real (tiny) run records the vocabulary's
fingerprint in its provenance and beside the exported model."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from lm_fixtures import sentiment_sentences, tagged_table

from condlabel.config import load_train_config
from condlabel.tags.build import VocabularySettings, build_vocabulary, count_tags
from condlabel.tags.vocabulary import load_vocabulary
from condlabel.train.loop import PROVENANCE_FILE, run_training

pytestmark = pytest.mark.slow


def test_training_records_the_vocabulary_it_applied(ray_local, tiny_gpt2_dir, tmp_path):
    table = tagged_table(sentiment_sentences(64, seed=3))
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "part-0.parquet")
    counts = count_tags(table.column("tags").to_pylist())
    vocab_file = tmp_path / "vocab.json"
    vocab_file.write_text(json.dumps(build_vocabulary(counts, VocabularySettings())))
    vocabulary = load_vocabulary(str(vocab_file))

    cfg = load_train_config(
        overrides=[
            f"data.paths=[{tmp_path / 'data'}]",
            f"data.format.tag_vocabulary={vocab_file}",
            f"model.path={tiny_gpt2_dir}",
            "optimization.seq_len=32",
            "optimization.micro_batch_size=2",
            "optimization.max_steps=2",
            "optimization.log_every_steps=1",
            f"checkpoint.storage_path={tmp_path / 'runs'}",
            "checkpoint.name=vocab",
            "checkpoint.every_steps=2",
            f"checkpoint.export_uri={tmp_path / 'export'}",
            "compute.num_workers=1",
            "compute.cpus_per_worker=0.5",
        ]
    )
    summary = run_training(cfg)
    assert summary.provenance["tag_vocabulary"] == vocabulary.record()
    exported = json.loads((tmp_path / "export" / PROVENANCE_FILE).read_text())
    assert exported["tag_vocabulary"]["fingerprint"] == vocabulary.fingerprint
    assert exported["config"]["data"]["format"]["tag_vocabulary"] == str(vocab_file)
