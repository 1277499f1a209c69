"""The cascade: the student labels every chunk, the teacher exactly those it is unsure of,
on its own actor pool in the same run; the `labeler` column says who labeled each row."""

from __future__ import annotations

import json
import statistics

import pyarrow as pa
import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_config, output_rows

from condlabel.config import ChunkConfig, HFLabelerConfig, KeyphraseLabelerConfig, StorageConfig
from condlabel.convert.chunking import chunk_document
from condlabel.convert.reading import Document
from condlabel.labelers.cascade import CascadeLabeler, merge_relabeled, needs_teacher, routed_mask
from condlabel.runs.runstate import read_manifests


def test_routing_rule():
    assert needs_teacher(True, -2.0, threshold=-1.0)
    assert not needs_teacher(True, -0.5, threshold=-1.0)
    assert needs_teacher(False, -0.1, threshold=-1.0)  # an unparsed label always goes
    assert needs_teacher(True, None, threshold=-1.0)  # a labeler without scores too


def test_merge_keeps_unrouted_rows_and_the_classifier_columns_of_routed_ones():
    student = pa.table(
        {
            "doc_id": ["a", "b", "c"],
            "synopsis": ["sa", "sb", "sc"],
            "control_tokens": [["<|pos|>"], ["<|neg|>"], []],
            "parse_ok": [True, True, False],
            "mean_logprob": [-0.2, -3.0, -0.1],
            "labeler": ["student"] * 3,
        }
    )
    routed = routed_mask(student, threshold=-1.0)
    assert routed.to_pylist() == [False, True, True]
    teacher = pa.table(
        {
            "doc_id": ["b", "c"],
            "synopsis": ["tb", "tc"],
            "control_tokens": [[], []],
            "parse_ok": [True, True],
            "mean_logprob": pa.array([None, None], pa.float64()),
            "labeler": ["teacher"] * 2,
        }
    )
    merged = merge_relabeled(student, teacher, routed).to_pylist()
    assert [(r["doc_id"], r["synopsis"], r["labeler"]) for r in merged] == [
        ("a", "sa", "student"),
        ("b", "tb", "teacher"),
        ("c", "tc", "teacher"),
    ]
    assert merged[1]["control_tokens"] == ["<|neg|>"]


# A causal student prompted up to `Synopsis:`: its (random) continuation parses, so the
# threshold on mean_logprob, not the parse, decides what is routed.
PROMPT = "{text}\n\nSynopsis:"


def _student_config(model) -> HFLabelerConfig:
    return HFLabelerConfig(
        model=str(model), prompt_template=PROMPT, do_sample=False, max_new_tokens=12
    )


def test_cascade_labeler_sends_the_unsure_chunks_to_the_teacher(tiny_llama):
    from tiny_models import sample_texts

    from condlabel.labelers.hf import HFLabeler
    from condlabel.labelers.keyphrase import KeyphraseLabeler

    student = HFLabeler(_student_config(tiny_llama))
    teacher = KeyphraseLabeler(KeyphraseLabelerConfig())
    texts = sample_texts(12, max_words=80)
    alone = student.label(texts)
    threshold = statistics.median(r.mean_logprob for r in alone)
    results = CascadeLabeler(student, teacher, threshold).label(texts)
    expected = [needs_teacher(r.parse_ok, r.mean_logprob, threshold) for r in alone]
    assert [r.extra["labeled_by"] == "teacher" for r in results] == expected
    assert 0 < sum(expected) < len(texts)
    assert all(r.parse_ok for r in alone)
    for r, a, routed in zip(results, alone, expected, strict=True):
        if routed:  # the keyphrase teacher's label: no model, no log-probability
            assert r.mean_logprob is None and r.parse_ok
        else:
            assert (r.raw_output, r.mean_logprob) == (a.raw_output, a.mean_logprob)


@pytest.mark.usefixtures("ray_local")
def _keyphrase_file(tmp_path) -> str:
    """A labeler config file of the keyphrase labeler: the teacher."""
    path = tmp_path / "teacher.yaml"
    path.write_text("backend: keyphrase\n")
    return str(path)


def test_convert_with_a_cascade_routes_exactly_the_chunks_below_the_threshold(tmp_path, tiny_llama):
    from condlabel.convert.cascade import teacher_fingerprint
    from condlabel.convert.pipeline import run_conversion, run_fingerprint
    from condlabel.labelers.hf import HFLabeler

    docs = make_docs(8, "c")
    write_jsonl(tmp_path / "in" / "docs.jsonl", docs)
    chunking = ChunkConfig(max_words=60)
    chunks = {
        (c.doc_id, c.chunk_index): c.text
        for d in docs
        for c in chunk_document(Document(d["id"], d["text"], "s", 1), chunking)
    }
    alone = HFLabeler(_student_config(tiny_llama)).label(list(chunks.values()))
    threshold = statistics.median(r.mean_logprob for r in alone)
    expected = {
        key
        for key, r in zip(chunks, alone, strict=True)
        if needs_teacher(r.parse_ok, r.mean_logprob, threshold)
    }
    cfg = convert_config(
        [tmp_path / "in"],
        tmp_path / "out",
        "chunking.max_words=60",
        "labeler.backend=hf",
        f"labeler.model={tiny_llama}",
        f"labeler.hf.prompt_template={json.dumps(PROMPT)}",
        "labeler.generation.do_sample=false",
        "labeler.generation.max_new_tokens=12",
        "compute.num_cpus_per_actor=0.5",
        "cascade.enabled=true",
        f"cascade.threshold={threshold!r}",
        f"cascade.teacher_config={_keyphrase_file(tmp_path)}",
        "cascade.compute.num_cpus_per_actor=0.5",
        "output.lease_ttl_s=30",
    )
    summary = run_conversion(cfg)
    rows = output_rows(tmp_path / "out", columns=["doc_id", "chunk_index", "labeler"]).to_pylist()
    by_teacher = {
        (r["doc_id"], r["chunk_index"]) for r in rows if r["labeler"] == teacher_fingerprint(cfg)
    }
    by_student = {
        (r["doc_id"], r["chunk_index"]) for r in rows if r["labeler"] == run_fingerprint(cfg)
    }
    assert 0 < len(expected) < len(chunks)
    assert by_teacher == expected
    assert by_student == set(chunks) - expected
    assert summary.routed_to_teacher == len(expected)
    [manifest] = read_manifests(str(tmp_path / "out"), StorageConfig())
    assert manifest["counts"]["routed_share"] == pytest.approx(len(expected) / len(chunks))
    assert any("labeled by the teacher" in line for line in summary.lines())
