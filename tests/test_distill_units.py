"""Distillation without Ray: the holdout split, the student's examples (prompt ids exactly as
the `hf` labeler encodes them), collation, and the gate's metrics."""

from __future__ import annotations

import pyarrow as pa
import pytest

from condlabel.config import GateConfig, HFLabelerConfig, StudentConfig, load_config
from condlabel.distill.data import (
    collate,
    encode_examples,
    is_holdout,
    select_examples,
    student_encoding,
    target_text,
)
from condlabel.distill.metrics import (
    ChunkComparison,
    compare,
    gate_report,
    normalize_tag,
    report_lines,
    spearman,
)
from condlabel.distill.student import labeler_overrides, student_labeler_config
from condlabel.labelers.base import LabelResult
from condlabel.labelers.prompts import parse_label
from condlabel.train.data import IGNORE_INDEX


def _teacher_rows(n: int) -> pa.Table:
    return pa.table(
        {
            "doc_id": [f"d{i // 2}" for i in range(n)],
            "doc_hash": ["h"] * n,
            "chunk_index": pa.array([i % 2 for i in range(n)], pa.int32()),
            "run_id": ["r1"] * n,
            "text": [f"text {i}" for i in range(n)],
            "synopsis": [f"synopsis {i}" for i in range(n)],
            "tags": [["a", f"t{i}"] for i in range(n)],
            "parse_ok": [i % 7 != 3 for i in range(n)],
        }
    )


def test_split_keeps_documents_whole_and_drops_unparsed_rows():
    rows = _teacher_rows(400)
    train = select_examples(rows, None, 0.25, holdout=False)
    held = select_examples(rows, None, 0.25, holdout=True)
    assert train.column_names == ["doc_id", "text", "synopsis", "tags"]
    assert train.num_rows + held.num_rows == sum(rows.column("parse_ok").to_pylist())
    assert not set(train.column("doc_id").to_pylist()) & set(held.column("doc_id").to_pylist())
    assert all(is_holdout(d, 0.25) for d in held.column("doc_id").to_pylist())
    assert 0.15 < held.num_rows / rows.num_rows < 0.35


def test_target_is_the_canonical_label_and_a_causal_prompt_marker_is_not_repeated():
    assert target_text("A river.", ["water", "a, b"]) == 'Synopsis: A river. Tags: [water, "a, b"]'
    causal = target_text("A river.", ["water"], "\n\nSynopsis:")
    assert causal == " A river. Tags: [water]"
    assert parse_label("Synopsis:" + causal).tags == ["water"]


@pytest.mark.parametrize("fixture", ["tiny_t5", "tiny_llama"])
def test_prompt_ids_are_the_labelers_own(fixture, request):
    from condlabel.labelers.hf import HFLabeler

    model = str(request.getfixturevalue(fixture))
    template = "{text}" if fixture == "tiny_t5" else "{text}\n\nSynopsis:"
    student = StudentConfig(model=model, prompt_template=template, max_input_tokens=40)
    labeler = HFLabeler(HFLabelerConfig(model=model, prompt_template=template, max_input_tokens=40))
    encoding = student_encoding(
        labeler.tokenizer,
        labeler.model.config,
        labeler.model.generation_config.eos_token_id,
        student,
        labeler.seq2seq,
    )
    texts = ["A short chunk.", "word " * 200]  # the second is cut to the input limit
    rows = [{"text": t, "synopsis": "S.", "tags": ["x"]} for t in texts]
    examples = encode_examples(encoding, rows, max_new_tokens=80)
    assert [e.prompt_ids for e in examples] == [ids for ids, _ in labeler.encode(texts)]
    assert all(e.target_ids[-1] in labeler.eos_ids for e in examples)
    batch = collate(examples, pad_id=0, seq2seq=labeler.seq2seq)
    width = len(batch["input_ids"][0])
    assert all(len(r) == width for r in batch["input_ids"] + batch["attention_mask"])
    if not labeler.seq2seq:  # the prompt is out of the loss
        n = len(examples[0].prompt_ids)
        assert batch["labels"][0][:n] == [IGNORE_INDEX] * n
        assert batch["labels"][0][n : n + len(examples[0].target_ids)] == examples[0].target_ids


def test_a_long_target_is_cut_without_eos():
    from transformers import AutoTokenizer  # noqa: F401 - the encoding below needs transformers

    class Encoding:  # only what encode_examples reads
        def __init__(self, tokenizer):
            self.tokenizer, self.suffix, self.eos_ids = tokenizer, "", [1]

        def encode(self, texts):
            return [([5, 1], False) for _ in texts]

    def tokenizer(text, add_special_tokens, verbose):
        return {"input_ids": list(range(10, 10 + len(text.split())))}

    [long] = encode_examples(
        Encoding(tokenizer), [{"text": "t", "synopsis": "w " * 50, "tags": []}], 8
    )
    assert len(long.target_ids) == 8 and 1 not in long.target_ids
    [short] = encode_examples(Encoding(tokenizer), [{"text": "t", "synopsis": "w", "tags": []}], 8)
    assert short.target_ids[-1] == 1


def test_tags_are_compared_after_normalisation():
    assert normalize_tag("  Machine   Learning. ") == "machine learning"
    assert normalize_tag("ＡＢＣ") == "abc"
    teacher = [{"synopsis": "the cat sat on the mat", "tags": ["Cats", "mats"]}]
    student = [LabelResult("the cat sat", ["cats!", "dogs"], "", True, mean_logprob=-0.5)]
    [chunk] = compare(teacher, student)
    assert (chunk.matched_tags, chunk.student_tags, chunk.teacher_tags) == (1, 2, 2)
    assert chunk.tag_f1 == pytest.approx(0.5)
    assert 0.5 < chunk.rouge_l < 1.0
    unparsed = compare(teacher, [LabelResult("", ["cats"], "junk", False)])[0]
    assert unparsed.matched_tags == 0 and unparsed.rouge_l == 0.0


def _chunk(f1_matched: int, logprob: float, ok: bool = True) -> ChunkComparison:
    return ChunkComparison(ok, f1_matched, 2, 2, f1_matched / 2, logprob)


def test_gate_report_figures_calibration_and_pass_fail(monkeypatch):
    monkeypatch.setattr("condlabel.distill.metrics.CALIBRATION_BINS", 3)
    chunks = [
        _chunk(m, lp)
        for m, lp in [(0, -3.0), (0, -2.5), (1, -2.0), (1, -1.0), (2, -0.5), (2, -0.1)]
    ]
    chunks.append(_chunk(0, -4.0, ok=False))
    report = gate_report(chunks, GateConfig(min_parse_rate=0.8, min_tag_f1=0.3))
    assert report["parse_rate"] == pytest.approx(6 / 7)
    assert report["tag_precision"] == pytest.approx(6 / 14)
    assert report["tag_f1"] == pytest.approx(6 / 14)
    cal = report["calibration"]
    assert cal["spearman_logprob_tag_f1"] > 0.8  # agreement rises with the student's confidence
    assert [b["chunks"] for b in cal["bins"]] == [2, 2, 3]
    assert cal["bins"][0]["routed_share"] == pytest.approx(2 / 7)
    assert cal["bins"][-1]["kept_tag_f1"] is None
    assert report["passed"]
    strict = gate_report(chunks, GateConfig(min_parse_rate=0.9, min_tag_f1=0.9))
    assert not strict["passed"]
    assert len(strict["failed"]) == 2 and "gate.min_parse_rate" in strict["failed"][0]
    assert "gate: FAILED" in report_lines(strict)[-1]
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) is None


def test_the_student_is_used_as_the_gate_used_it():
    cfg = load_config(
        "distill",
        None,
        ["student.model=m", "output=/o", 'student.prompt_template="{text}\\n\\nSynopsis:"'],
    )
    labeler = student_labeler_config(cfg, "/o")
    flags = labeler_overrides(labeler)
    assert flags[:2] == ["labeler.backend=hf", "labeler.model=/o"]
    assert "labeler.generation.do_sample=false" in flags
    from condlabel.config import load_convert_config

    convert = load_convert_config(overrides=flags)
    assert convert.labeler.hf.prompt_template == "{text}\n\nSynopsis:"
    assert convert.labeler.generation.do_sample is False


def test_distill_config_problems_name_their_keys():
    from condlabel.config import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(
            "distill",
            None,
            ["holdout_fraction=1.5", "gate.min_parse_rate=2", "student.prompt_template=x"],
        )
    text = str(err.value)
    for key in ("holdout_fraction", "gate.min_parse_rate", "student.prompt_template"):
        assert key in text
