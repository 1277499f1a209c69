"""The crawl-scale recipe end to end on vLLM's CPU build: the teacher labels a sample of the
corpus (`--sample-fraction`), `condlabel distill` trains a decoder-only student on it (Ray
Train) and exports it to the S3 server, and the student labels the whole corpus there through
the pipeline on the `vllm` backend with `constrain_format`, so every label parses.
(`ray_jobs/configs/distill_causal_student.yaml` and `vllm_student_constrained.yaml` are the
same recipe at scale.) Marked `vllm` and `slow`: `make test-vllm` runs it."""

from __future__ import annotations

import json
import math

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.s3]

import vllm_setup  # noqa: E402, F401  (first: the engine's environment, the skip)
from distill_helpers import TEACHER_SETTINGS, write_corpus  # noqa: E402

from condlabel.cli import main  # noqa: E402

PROMPT = json.dumps("{text}\n\nSynopsis:")  # a causal student continues after `Synopsis:`
NEW_TOKENS = 48


def _run(command: str, *items: str, **flags: str) -> int:
    args = [command]
    for flag, value in flags.items():
        args += [f"--{flag.replace('_', '-')}", value]
    for item in items:
        args += ["--set", item]
    return main(args)


def test_teacher_sample_then_a_causal_student_labels_the_corpus_on_vllm(
    tiny_llama, ray_local, s3_bucket, s3fs_client, tmp_path
):
    from pipeline_helpers import output_rows

    corpus = write_corpus(tmp_path / "corpus" / "docs.jsonl", docs=80)
    s3fs_client.put_file(str(corpus), f"{s3_bucket}/corpus/docs.jsonl")
    bucket = f"s3://{s3_bucket}"
    # 1. The teacher (the CPU keyphrase labeler here) labels a stratified half of the corpus.
    teacher = f"{bucket}/teacher-sample"
    assert _run("convert", *TEACHER_SETTINGS, input=f"{bucket}/corpus", output=teacher,
                sample_fraction="0.5") == 0  # fmt: skip
    # 2. A decoder-only student learns the teacher's labels and passes the gate.
    student = f"{bucket}/student"
    code = _run(
        "distill",
        f"data.paths=[{teacher}]",
        f"student.model={tiny_llama}",
        f"student.prompt_template={PROMPT}",
        "student.max_input_tokens=160",
        f"student.max_new_tokens={NEW_TOKENS}",
        "holdout_fraction=0.2",
        "optimization.max_steps=150",
        "optimization.learning_rate=0.003",
        "optimization.warmup_steps=10",
        "optimization.micro_batch_size=16",
        f"checkpoint.storage_path={tmp_path / 'runs'}",
        "checkpoint.name=student",
        "compute.cpus_per_worker=1",
        "gate.max_chunks=40",
        f"output={student}",
    )
    assert code == 0
    report = json.loads(s3fs_client.cat_file(f"{s3_bucket}/student/distill_report.json"))
    assert report["passed"]
    # 3. The student labels the whole corpus on vLLM, every label generated as capped slots.
    tagged = f"{bucket}/tagged"
    code = _run(
        "convert",
        TEACHER_SETTINGS[0],  # the teacher's chunking
        "labeler.backend=vllm",
        f"labeler.model={student}",
        f"labeler.cache_dir={tmp_path / 'cache'}",
        f"labeler.vllm.prompt_template={PROMPT}",
        "labeler.vllm.constrain_format=true",
        "labeler.vllm.max_input_tokens=160",
        "labeler.vllm.max_model_len=256",
        f"labeler.generation.max_new_tokens={NEW_TOKENS}",
        "labeler.generation.do_sample=false",
        "compute.num_cpus_per_actor=1",
        "compute.actors=1",
        "compute.batch_size=32",
        input=f"{bucket}/corpus",
        output=tagged,
    )
    assert code == 0
    s3fs_client.invalidate_cache()
    rows = output_rows(f"{s3_bucket}/tagged", s3fs_client).to_pylist()
    sample = output_rows(f"{s3_bucket}/teacher-sample", s3fs_client, ["doc_id"])
    assert len({r["doc_id"] for r in rows}) == 80 > len(set(sample.column("doc_id").to_pylist()))
    assert all(r["labeler"].startswith("vllm:") for r in rows)
    assert sum(r["parse_ok"] for r in rows) >= 0.99 * len(rows)
    assert all(math.isfinite(r["logprob"]) and r["synopsis"] for r in rows)
    assert all(r["raw_output"].rstrip().endswith("]") for r in rows)  # every tag list closes
