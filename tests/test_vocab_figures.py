"""`condlabel inspect` tag figures: raw vs canonical counts, vocabulary coverage, tag pairs and
drift between runs; on hand-made tables with known answers, then on a real output."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from helpers import make_docs, write_jsonl
from pipeline_helpers import convert_config

from condlabel.cli import main
from condlabel.convert.pipeline import run_conversion
from condlabel.tags.build import VocabularySettings, build_vocabulary
from condlabel.tags.figures import drift, figure_lines, tag_figures
from condlabel.tags.vocabulary import vocabulary_from_dict


def _table(rows: list[tuple[list[str], list[str] | None, str]]) -> pa.Table:
    return pa.table(
        {
            "tags": pa.array([r[0] for r in rows], pa.list_(pa.string())),
            "raw_tags": pa.array([r[1] for r in rows], pa.list_(pa.string())),
            "run_id": [r[2] for r in rows],
        }
    )


def test_raw_and_canonical_counts_coverage_and_pairs():
    vocab = vocabulary_from_dict(
        build_vocabulary(
            {"river": 3, "Rivers": 2, "bridge": 2, "tide": 2, "ferry": 2}, VocabularySettings()
        ),
        "v.json",
    )
    table = _table(
        [
            (["river", "bridge"], ["Rivers", "bridge"], "r1"),
            (["river", "bridge"], ["river", "bridge", "bridge"], "r1"),
            (["river", "gull"], ["river", "gull"], "r1"),
            (["moss"], None, "r1"),  # written without a vocabulary: its tags are the labeler's
        ]
    )
    figures = tag_figures(table, vocab, top=2)
    assert figures["rows_mapped"] == 3
    assert figures["raw"] == {"distinct": 5, "occurrences": 7}  # Rivers, river, bridge, gull, moss
    assert figures["canonical"] == {"distinct": 4, "occurrences": 7}
    assert figures["co_occurrences"] == [["bridge", "river", 2], ["gull", "river", 1]]
    coverage = figures["coverage"]
    assert coverage["raw_occurrences_known"] == 5 / 7  # gull and moss are unknown
    assert coverage["canonical_tags_used"] == 2 / 4  # river, bridge of river/bridge/tide/ferry
    assert coverage["vocabulary"]["fingerprint"] == vocab.fingerprint
    assert tag_figures(table)["coverage"] is None
    assert any("knows 71.4%" in line for line in figure_lines(figures))


def test_drift_is_zero_for_the_same_distribution_and_one_for_disjoint_tags():
    rows = [["a", "b"], ["a"], ["a", "b"], ["a"], ["c"]]
    runs = ["r1", "r1", "r2", "r2", "r3"]
    first, second = drift(rows, runs)
    assert (first["from_run"], first["to_run"]) == ("r1", "r2")
    assert first["jensen_shannon"] == pytest.approx(0.0)
    assert second["jensen_shannon"] == pytest.approx(1.0)
    # The tags that moved most come first, with their share of each run's chunks.
    assert second["moved"][0] == ["a", 1.0, 0.0]
    assert ["c", 0.0, 1.0] in second["moved"]


@pytest.mark.usefixtures("ray_local")
def test_inspect_shows_the_figures_of_an_output_with_two_runs(tmp_path, capsys):
    write_jsonl(tmp_path / "corpus" / "a.jsonl", make_docs(6, "a"))
    out = tmp_path / "out"
    run_conversion(convert_config([tmp_path / "corpus"], out, "chunking.max_words=60"))
    vocab_file = tmp_path / "vocab.json"
    assert main(["vocab", "build", str(out), "--output", str(vocab_file)]) == 0
    # The corpus grows; the second run maps its tags through the vocabulary.
    write_jsonl(tmp_path / "corpus" / "b.jsonl", make_docs(6, "b", start=6))
    cfg = convert_config(
        [tmp_path / "corpus"], out, "chunking.max_words=60", f"format.tag_vocabulary={vocab_file}"
    )
    second = run_conversion(cfg)
    capsys.readouterr()

    assert main(["inspect", str(out), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)["tag_figures"]
    assert figures["rows_mapped"] == second.rows_written
    assert figures["coverage"]["vocabulary"]["fingerprint"] == second.tag_vocabulary["fingerprint"]
    assert 0 < figures["coverage"]["raw_occurrences_known"] <= 1
    [change] = figures["drift"]
    assert change["to_run"] == second.run_id and 0 < change["jensen_shannon"] <= 1
    assert figures["co_occurrences"] and figures["co_occurrences"][0][2] >= 2

    assert main(["inspect", str(out)]) == 0
    assert "raw ->" in capsys.readouterr().out
    report = tmp_path / "report.html"
    assert main(["inspect", str(out), "--report", str(report)]) == 0
    page = report.read_text()
    assert "Tag vocabulary" in page and second.tag_vocabulary["fingerprint"] in page
    assert "Tag frequency drift between runs" in page
