"""`condlabel distill` end to end: the keyphrase labeler (the teacher) labels real text, a tiny
T5 built in a fixture (the student) is trained on Ray Train, checkpointed and gated, exported
to the S3 server process, and then labels a corpus there through the normal pipeline as an
ordinary `hf` labeler. A gate above what the student reaches exits 1 and exports nothing.

Steps and learning rate: 150 steps of 16 examples at 3e-3 take the student from a loss of ~40 to
~5 and a held-out parse rate of 0.98-1.0 (seeds 0-2, bench/README.md): the margin over the
0.9 the test asks for keeps it reliable."""

from __future__ import annotations

import json

import pytest
from distill_helpers import TEACHER_SETTINGS, write_corpus, write_teacher_output
from tiny_models import student_t5 as _student_t5_fixture  # noqa: F401 - registers it

from condlabel.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.s3]

STUDENT = ["student.max_input_tokens=64", "student.max_new_tokens=80"]
TRAINING = [
    "holdout_fraction=0.2",
    "optimization.max_steps=150",
    "optimization.learning_rate=0.003",
    "optimization.warmup_steps=10",
    "optimization.micro_batch_size=16",
    "optimization.log_every_steps=25",
    "checkpoint.every_steps=75",
    "compute.cpus_per_worker=1",
    "gate.max_chunks=60",
]


def _args(teacher, student, output, storage, *extra: str) -> list[str]:
    args = ["distill"]
    for item in [
        f"data.paths=[{teacher}]",
        f"student.model={student}",
        f"output={output}",
        f"checkpoint.storage_path={storage}",
        "checkpoint.name=student",
        *STUDENT,
        *TRAINING,
        *extra,
    ]:
        args += ["--set", item]
    return args


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, student_t5, ray_local, s3_server):
    """One distill run shared by the tests: (work dir, teacher output, args, exit code, output)."""
    import s3fs

    work = tmp_path_factory.mktemp("distill")
    teacher = write_teacher_output(work, docs=60)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}, skip_instance_cache=True)
    fs.mkdir("distill")
    output = "s3://distill/student"
    code = main(_args(teacher, student_t5, output, work / "runs"))
    return work, teacher, output, code, fs


def test_the_student_learns_the_format_and_the_report_is_written(distilled, capsys):
    _, _, _, code, fs = distilled
    assert code == 0
    report = json.loads(fs.cat_file("distill/student/distill_report.json"))
    for key in ("parse_rate", "tag_f1", "tag_precision", "tag_recall", "rouge_l", "passed"):
        assert key in report
    assert report["passed"] is True
    assert report["parse_rate"] >= 0.9
    assert report["chunks"] == min(60, report["holdout_chunks"]) > 10
    assert 0 <= report["tag_f1"] <= 1 and 0 <= report["rouge_l"] <= 1
    assert report["calibration"]["bins"]
    assert fs.exists("distill/student/model.safetensors")
    assert "labeler.model=s3://distill/student" in report["labeler_overrides"]


def test_a_gate_above_what_the_student_reaches_exits_1_and_exports_nothing(
    distilled, student_t5, capsys
):
    work, teacher, _, _, fs = distilled
    # Same run name: resumes at its last step (nothing left to train) and is judged again.
    code = main(
        _args(teacher, student_t5, "s3://distill/strict", work / "runs", "gate.min_tag_f1=0.99")
    )
    assert code == 1
    out = capsys.readouterr().out
    assert "gate: FAILED" in out and "gate.min_tag_f1" in out
    assert "(resumed)" in out
    report = json.loads(fs.cat_file("distill/strict/distill_report.json"))
    assert report["passed"] is False
    assert fs.ls("distill/strict") == ["distill/strict/distill_report.json"]


def test_the_exported_student_labels_a_corpus_on_s3_through_the_pipeline(distilled, tmp_path):
    from pipeline_helpers import output_rows

    _, _, _, code, fs = distilled
    assert code == 0
    corpus = write_corpus(tmp_path / "docs.jsonl", docs=80)
    fs.put_file(str(corpus), "distill/corpus/docs.jsonl")
    report = json.loads(fs.cat_file("distill/student/distill_report.json"))
    args = ["convert", "--input", "s3://distill/corpus", "--output", "s3://distill/tagged"]
    for item in [
        *TEACHER_SETTINGS[:1],
        *report["labeler_overrides"],
        "compute.num_cpus_per_actor=0.5",
    ]:
        args += ["--set", item]
    assert main(args) == 0
    rows = output_rows("distill/tagged", filesystem=fs, columns=["parse_ok", "labeler"])
    assert rows.num_rows > 0
    assert sum(rows.column("parse_ok").to_pylist()) / rows.num_rows >= 0.9
    assert all(lab.startswith("hf:student") for lab in rows.column("labeler").to_pylist())
