"""Checks the generative-labeler tests share (tests/test_hf_labeler.py, tests/test_vllm_labeler.py):
comparing two labels, the teacher-forced score a label must equal, and a whole conversion on the
S3 server with a labeler whose weights are read from s3://.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pipeline_helpers import jsonl_bytes, output_rows


def assert_same_label(a, b, tol: float, rel: float = 0.0) -> None:
    """Two `LabelResult`s of one chunk: the same tokens and text, scores within `tol`
    (absolute) or `rel` (relative), whichever is looser, as `pytest.approx` reads them."""
    assert a.raw_output == b.raw_output
    assert a.extra["generated_ids"] == b.extra["generated_ids"]
    assert a.num_generated_tokens == b.num_generated_tokens
    assert (a.synopsis, a.tags, a.parse_ok) == (b.synopsis, b.tags, b.parse_ok)
    assert a.logprob == pytest.approx(b.logprob, rel=rel, abs=tol)
    assert a.mean_logprob == pytest.approx(b.mean_logprob, rel=rel, abs=tol)


def teacher_forced_logprob(
    model, ids: list[int], generated: list[int], decoder_start: int | None = None
) -> float:
    """The model's raw log-probability of `generated` after the input `ids`, from one forward
    pass in float64: a seq2seq model (give its `decoder_start`) reads `ids` in its encoder; a
    causal one reads `ids + generated`."""
    import torch

    with torch.no_grad():
        if decoder_start is not None:
            logits = model(
                input_ids=torch.tensor([ids]),
                decoder_input_ids=torch.tensor([[decoder_start, *generated]]),
            ).logits[0, :-1]
        else:
            logits = model(input_ids=torch.tensor([ids + generated])).logits[0]
            logits = logits[len(ids) - 1 : -1]
    logprobs = torch.log_softmax(logits.double(), -1)
    return logprobs.gather(1, torch.tensor(generated)[:, None]).sum().item()


def upload_dir(fs, local: Path, prefix: str) -> None:
    """Every file of a model directory under `prefix` (`bucket/key`, no scheme)."""
    for path in sorted(Path(local).iterdir()):
        fs.put_file(str(path), f"{prefix}/{path.name}")


def label_on_s3(fs, bucket: str, models: dict[str, Path], docs: list[str], overrides: list[str]):
    """Upload `models` (key prefix -> local directory) and `docs` (as one JSONL file) to the
    bucket, convert `s3://bucket/in/` to `s3://bucket/out` with `overrides`, check what every
    labeled output must hold, and return (config, summary, rows written)."""
    import pyarrow.fs as pafs

    from condlabel.config import load_convert_config
    from condlabel.convert.pipeline import run_conversion
    from condlabel.labelers import labeler_fingerprint

    for prefix, local in models.items():
        upload_dir(fs, local, f"{bucket}/{prefix}")
    records = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(docs)]
    fs.pipe(f"{bucket}/in/part-0.jsonl", jsonl_bytes(records))
    cfg = load_convert_config(
        overrides=overrides, inputs=[f"s3://{bucket}/in/"], output=f"s3://{bucket}/out"
    )
    summary = run_conversion(cfg)
    assert summary.rows_written == summary.chunks > len(docs)

    s3 = pafs.S3FileSystem(endpoint_override=os.environ["AWS_ENDPOINT_URL"])
    table = output_rows(f"{bucket}/out", filesystem=s3)
    assert table.num_rows == summary.rows_written
    assert set(table.column("labeler").to_pylist()) == {labeler_fingerprint(cfg.labeler)}
    assert all(lp is not None and lp <= 0 for lp in table.column("logprob").to_pylist())
    assert all(n > 0 for n in table.column("input_tokens").to_pylist())
    return cfg, summary, table


def assert_rows_match(table, labeler, tol: float, rows: int = 4) -> None:
    """The first `rows` rows written hold what `labeler` (the same config, run here) gives."""
    head = table.select(["text", "logprob", "raw_output"]).to_pylist()[:rows]
    for row, result in zip(head, labeler.label([r["text"] for r in head]), strict=True):
        assert row["raw_output"] == result.raw_output
        assert row["logprob"] == pytest.approx(result.logprob, abs=tol)


def assert_fingerprint_sees(fingerprint, cfg, changes: list[dict], ignored: list[dict]) -> None:
    """`fingerprint(cfg)` changes with each of `changes` (what changes outputs) and with none of
    `ignored` (how fast or where)."""
    fp = fingerprint(cfg)
    for change in changes:
        assert fingerprint(cfg.model_copy(update=change)) != fp, change
    for change in ignored:
        assert fingerprint(cfg.model_copy(update=change)) == fp, change
