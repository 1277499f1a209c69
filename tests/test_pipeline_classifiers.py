"""Control tokens in the pipeline: VADER + a Hugging Face classifier beside the CPU labeler."""

from __future__ import annotations

import pytest
from helpers import write_jsonl
from pipeline_helpers import convert_config, output_rows

from condlabel.convert.pipeline import run_conversion
from condlabel.schema import scores_as_dict

pytestmark = pytest.mark.usefixtures("ray_local")

DOCS = [
    {
        "id": "pos",
        "text": "What a wonderful, lovely day. The concert was amazing and I loved every minute.",
    },
    {
        "id": "neg",
        "text": "This was a terrible, awful experience. The food was disgusting and the staff rude.",
    },
    {
        "id": "two",
        "text": "I adore this beautiful garden. I hate the horrible noise from the road.",
    },
]


def rows(out):
    return {(r["doc_id"], r["chunk_index"]): r for r in output_rows(out).to_pylist()}


def test_both_classifiers_and_the_labeler_write_tokens_and_prefix(tmp_path, tiny_toxicity_dir):
    src = write_jsonl(tmp_path / "in.jsonl", DOCS)
    classifiers = f"[{{backend: vader}}, {{backend: hf, hf: {{model: '{tiny_toxicity_dir}'}}}}]"
    summary = run_conversion(convert_config([src], tmp_path / "out", f"classifiers={classifiers}"))
    assert summary.rows_written == 3
    assert summary.labeler.count("+") == 2  # labeler + vader + toxicity fingerprints
    out = rows(tmp_path / "out")
    pos, neg = out[("pos", 0)], out[("neg", 0)]
    assert pos["control_tokens"][0] == "<|pos|>" and neg["control_tokens"][0] == "<|neg|>"
    for row in (pos, neg):
        assert row["control_tokens"][1] in ("<|toxic|>", "<|nontoxic|>")
        scores = scores_as_dict(row["scores"])
        assert {"vader.compound", "toxicity.toxic"} <= scores.keys()
        expected_toxic = "<|toxic|>" if scores["toxicity.toxic"] >= 0.5 else "<|nontoxic|>"
        assert row["control_tokens"][1] == expected_toxic
        # default template: control tokens, then the synopsis and tags, then the text
        assert row["conditional_text"].startswith("".join(row["control_tokens"]) + "Synopsis: ")
        assert row["conditional_text"].endswith(row["text"])
    assert (
        scores_as_dict(pos["scores"])["vader.compound"]
        > 0.5
        > -0.5
        > scores_as_dict(neg["scores"])["vader.compound"]
    )


def test_control_tokens_only_at_sentence_level(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", DOCS)
    overrides = ["labeler.backend=none", "chunking.unit=sentence", "classifiers=[{backend: vader}]"]
    summary = run_conversion(convert_config([src], tmp_path / "out", *overrides))
    out = rows(tmp_path / "out")
    assert summary.rows_written == len(out) == 6
    first, second = out[("two", 0)], out[("two", 1)]
    assert first["text"] == "I adore this beautiful garden."
    assert first["conditional_text"] == "<|pos|>I adore this beautiful garden."
    assert second["conditional_text"] == "<|neg|>I hate the horrible noise from the road."
    assert all(r["synopsis"] == "" and r["tags"] == [] for r in out.values())
