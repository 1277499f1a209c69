"""The `ct2` labeler (CTranslate2) on the tiny T5 + LoRA, over Python's help text: the same
greedy labels and scores as the `hf` backend in float32, raw-sum scores under sampling, int8,
the compute type in the fingerprint, `condlabel merge --format ct2` to a directory and to
s3://, and a whole conversion on the S3 server.

The models are random (tests/tiny_models.py); EOS is likely, so labels end at varied lengths.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
ctranslate2 = pytest.importorskip("ctranslate2")

from labeler_checks import (  # noqa: E402
    assert_fingerprint_sees,
    assert_rows_match,
    label_on_s3,
    teacher_forced_logprob,
)
from tiny_models import sample_texts  # noqa: E402

from condlabel.cli import main  # noqa: E402
from condlabel.config import HFLabelerConfig, LabelerConfig  # noqa: E402
from condlabel.config.labelers import CT2LabelerConfig  # noqa: E402
from condlabel.labelers import build_labeler, labeler_fingerprint  # noqa: E402
from condlabel.labelers.ct2 import CT2Labeler, fingerprint  # noqa: E402
from condlabel.labelers.hf import HFLabeler  # noqa: E402
from condlabel.models import merge_model  # noqa: E402
from condlabel.preflight import Weights, weights_problems  # noqa: E402
from condlabel.runs.runstate import read_manifests  # noqa: E402

NEW_TOKENS = 24
INPUT_LIMIT = 160  # below the longest chunks: truncation must agree with hf's too
GREEDY = {"do_sample": False, "max_new_tokens": NEW_TOKENS, "max_input_tokens": INPUT_LIMIT}


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(40, min_words=10, max_words=300, seed=11)


@pytest.fixture(scope="module")
def ct2_models(tiny_t5, tiny_t5_adapter, tmp_path_factory) -> dict[str, Path]:
    """The tiny T5 with its LoRA merged, converted to CTranslate2 in float32 and in int8."""
    out = tmp_path_factory.mktemp("ct2")
    return {
        q: Path(
            merge_model(
                str(tiny_t5), str(tiny_t5_adapter), str(out / q), format="ct2", quantization=q
            )
        )
        for q in ("float32", "int8")
    }


def _ct2(model: Path, compute_type: str = "float32", **options) -> CT2Labeler:
    options = {**GREEDY, "intra_threads": 1, **options}
    return CT2Labeler(CT2LabelerConfig(model=str(model), compute_type=compute_type, **options))


# --------------------------------------------------------------------------- config only


def test_fingerprint_holds_the_compute_type_not_the_threads():
    cfg = CT2LabelerConfig(model="s3://models/flan-ul2-condlabeler-ct2", do_sample=True)
    section = LabelerConfig(backend="ct2", model=cfg.model, generation={"do_sample": True})
    assert labeler_fingerprint(section) == fingerprint(cfg)
    assert fingerprint(cfg).startswith("ct2:flan-ul2-condlabeler-ct2:")
    assert_fingerprint_sees(
        fingerprint,
        cfg,
        changes=[
            {"compute_type": "float32"},
            {"compute_type": "int8_float16"},
            {"temperature": 0.7},
            {"seed": 1},
            {"max_input_tokens": 512},
            {"prompt_template": "Label: {text}"},
        ],
        ignored=[
            {"device": "cuda"},
            {"inter_threads": 4},
            {"intra_threads": 8},
            {"max_batch_size": 64},
            {"batch_type": "tokens"},
            {"cache_dir": "/tmp/elsewhere"},
        ],
    )


def test_config_refuses_unknown_compute_types_and_a_missing_model():
    with pytest.raises(ValueError, match="compute_type"):
        LabelerConfig(backend="ct2", model="/m", ct2={"compute_type": "int4"})
    with pytest.raises(ValueError, match=r"model: required for backend `ct2`"):
        LabelerConfig(backend="ct2")


# --------------------------------------------------------------------------- against hf


def _float32_is_exact_enough(model, ids: list[int], generated: list[int], score: float) -> bool:
    """Whether float32 itself gives this label's score within 5e-4 of float64's. The tiny
    T5's large random weights (initializer_factor 5) make a few inputs ill-conditioned: there
    hf's own float32 score is off by more than the 1e-3 the backends must agree to."""
    exact = teacher_forced_logprob(model, ids, generated, decoder_start=0)
    return abs(score - exact) <= 5e-4


def test_greedy_float32_matches_the_hf_backend(tiny_t5, tiny_t5_adapter, ct2_models, texts):
    hf = HFLabeler(HFLabelerConfig(model=str(tiny_t5), adapter=str(tiny_t5_adapter), **GREEDY))
    ours = _ct2(ct2_models["float32"]).label(texts)
    theirs = hf.label(texts)
    assert any(r.truncated for r in theirs) and not all(r.truncated for r in theirs)
    same = [a.raw_output == b.raw_output for a, b in zip(ours, theirs, strict=True)]
    assert sum(same) >= 0.95 * len(texts), f"{sum(same)}/{len(texts)} greedy texts agree"
    assert len({r.num_generated_tokens for r in theirs}) > 3  # labels of varied lengths
    exact = hf.model.double()
    compared = 0
    for (ids, _), a, b, equal in zip(hf.encode(texts), ours, theirs, same, strict=True):
        assert (a.truncated, a.input_tokens) == (b.truncated, b.input_tokens)
        if not equal:
            continue
        assert a.extra["generated_ids"] == b.extra["generated_ids"]
        assert a.num_generated_tokens == b.num_generated_tokens
        assert a.label_truncated == b.label_truncated
        if _float32_is_exact_enough(exact, ids, b.extra["generated_ids"], b.logprob):
            compared += 1
            assert a.logprob == pytest.approx(b.logprob, abs=1e-3)
            assert a.mean_logprob == pytest.approx(b.mean_logprob, abs=1e-3)
    assert compared >= 0.85 * len(texts), f"{compared}/{len(texts)} well conditioned"


def test_greedy_labels_do_not_depend_on_batch_mates(ct2_models, texts):
    labeler = _ct2(ct2_models["float32"], max_batch_size=5)
    together = labeler.label(texts[:10])
    for text, batched in zip(texts[:10], together, strict=True):
        (alone,) = labeler.label([text])
        assert alone.raw_output == batched.raw_output
        # float32 kernels sum in another order at another padded batch shape: one CI machine
        # gave 1.1e-4 apart on a -0.19 sum. A pad token counted in, or a row's score given to
        # another, is off by a token's log-probability (1e-2 and more).
        assert alone.logprob == pytest.approx(batched.logprob, abs=1e-3)


def test_sampled_scores_are_raw_sums_with_eos(ct2_models, texts):
    """What CTranslate2 returns under sampling (temperature, top-k, top-p) is the raw
    log-probability sum, EOS included: `score_batch` on the sampled tokens gives the same."""
    labeler = _ct2(ct2_models["float32"], do_sample=True, temperature=0.5, top_k=5, top_p=0.95)
    batch = texts[:12]
    results = labeler.label(batch)
    sources, targets = [], []
    for (ids, _), result in zip(labeler.encoding.encode(batch), results, strict=True):
        generated = result.extra["generated_ids"]
        if generated and generated[-1] in labeler.eos_ids:
            generated = generated[:-1]  # score_batch appends EOS (and scores it) itself
        sources.append(labeler.tokenizer.convert_ids_to_tokens(ids))
        targets.append(labeler.tokenizer.convert_ids_to_tokens(generated))
    scored = labeler.translator.score_batch(sources, targets, max_input_length=0)
    stopped = 0
    for result, score in zip(results, scored, strict=True):
        n = result.num_generated_tokens
        assert sum(score.log_probs[:n]) == pytest.approx(result.logprob, abs=1e-3)
        assert result.mean_logprob == pytest.approx(result.logprob / n)
        stopped += not result.label_truncated or n < NEW_TOKENS
    assert stopped  # some samples ended at EOS, whose term is in the sum


def test_int8_loads_labels_and_is_another_labeler(ct2_models, texts):
    int8 = _ct2(ct2_models["int8"], compute_type="int8")
    results = int8.label(texts[:8])
    assert len(results) == 8
    assert all(math.isfinite(r.logprob) and r.logprob <= 0 for r in results)
    assert all(r.num_generated_tokens >= 1 for r in results)
    assert int8.translator.compute_type in ("int8", "int8_float32")  # CPU: int8_float32
    assert int8.fingerprint != _ct2(ct2_models["float32"]).fingerprint


# --------------------------------------------------------------------------- refusals


def test_compute_types_this_device_lacks_are_refused(ct2_models):
    if "float16" in ctranslate2.get_supported_compute_types("cpu"):
        pytest.skip("this CPU build runs float16")
    with pytest.raises(
        ValueError, match=r"labeler\.ct2\.compute_type: float16 is (not supported|refused)"
    ):
        _ct2(ct2_models["float32"], compute_type="float16", device="cpu")


def test_tokenizer_class_must_name_a_tokenizer(ct2_models, tmp_path):
    """tokenizer_config.json names the class that loads the tokenizer: a model class (which
    would load the weights as the tokenizer) or a function is refused, naming the file."""
    import json
    import shutil

    from condlabel.labelers.ct2 import load_ct2_tokenizer

    model = tmp_path / "ct2"
    shutil.copytree(ct2_models["float32"], model)
    settings_file = model / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text())
    assert load_ct2_tokenizer(str(model)).__class__.__name__.endswith(
        ("Tokenizer", "Fast", "Backend")
    )
    for name in ("AutoModelForSeq2SeqLM", "pipeline"):
        settings_file.write_text(json.dumps({**settings, "tokenizer_class": name}))
        with pytest.raises(ValueError, match=rf"tokenizer_config\.json: tokenizer_class '{name}'"):
            load_ct2_tokenizer(str(model))


def test_a_transformers_checkpoint_is_not_a_ct2_model(tiny_t5):
    with pytest.raises(FileNotFoundError, match=r"no model\.bin.*merge --format ct2"):
        _ct2(tiny_t5)
    (problem,) = weights_problems(Weights("labeler.model", str(tiny_t5), ct2=True))
    assert "labeler.model: no model.bin" in problem


def test_merge_flags_that_do_not_fit_the_format_exit_2(tiny_t5, tmp_path, capsys):
    base = ["merge", "--base", str(tiny_t5), "--output", str(tmp_path / "out")]
    assert main(base) == 2  # hf without an adapter: nothing to merge
    assert main([*base, "--adapter", str(tiny_t5), "--quantization", "int8"]) == 2
    err = capsys.readouterr().err
    assert "--adapter: required for --format hf" in err and "--quantization: only with" in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- S3


@pytest.mark.s3
def test_merge_to_s3_and_a_labeler_that_loads_from_it(
    tiny_t5, tiny_t5_adapter, ct2_models, s3_bucket, s3fs_client, tmp_path, texts, monkeypatch
):
    monkeypatch.setenv("CONDLABEL_CACHE", str(tmp_path / "merge-cache"))
    uri = f"s3://{s3_bucket}/models/t5-ct2-int8"
    args = ["merge", "--base", str(tiny_t5), "--adapter", str(tiny_t5_adapter), "--output", uri]
    assert main([*args, "--format", "ct2", "--quantization", "int8"]) == 0
    listed = {Path(p).name for p in s3fs_client.ls(f"{s3_bucket}/models/t5-ct2-int8")}
    assert {"model.bin", "config.json", "tokenizer.json", ".condlabel-complete"} <= listed
    cache = tmp_path / "cache"
    from_s3 = _ct2(uri, compute_type="int8", cache_dir=str(cache))
    local = _ct2(ct2_models["int8"], compute_type="int8")
    for a, b in zip(from_s3.label(texts[:6]), local.label(texts[:6]), strict=True):
        assert a.raw_output == b.raw_output and a.logprob == pytest.approx(b.logprob, abs=1e-5)
    _ct2(uri, compute_type="int8", cache_dir=str(cache))  # a second actor on the node
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1  # fetched once


@pytest.mark.s3
def test_conversion_with_ct2_on_the_s3_server(
    ray_local, s3_bucket, s3fs_client, ct2_models, tmp_path
):
    docs = sample_texts(8, min_words=30, max_words=220, seed=23)
    cfg, summary, table = label_on_s3(
        s3fs_client,
        s3_bucket,
        {"models/t5-ct2": ct2_models["int8"]},
        docs,
        [
            "labeler.backend=ct2",
            f"labeler.model=s3://{s3_bucket}/models/t5-ct2",
            f"labeler.cache_dir={tmp_path / 'cache'}",
            f"labeler.generation.max_new_tokens={NEW_TOKENS}",
            "labeler.generation.do_sample=false",
            "labeler.ct2.intra_threads=1",
            "chunking.max_words=120",
            "compute.num_cpus_per_actor=1",
            "compute.actors=1",
            "compute.batch_size=8",
        ],
    )
    assert set(table.column("labeler").to_pylist()) == {fingerprint(cfg.labeler.backend_config())}
    assert all(n >= 1 for n in table.column("num_generated_tokens").to_pylist())
    # The actor's labels are those of the same labeler built here, chunk by chunk.
    assert_rows_match(table, build_labeler(cfg.labeler), 1e-4)
    # The manifest names the CTranslate2 that made them (int8 kernels change between releases).
    [manifest] = read_manifests(cfg.output.uri, cfg.storage)
    assert manifest["run_id"] == summary.run_id
    assert manifest["versions"]["ctranslate2"] == ctranslate2.__version__


def test_the_backend_imports_nothing_heavy_until_it_loads():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import condlabel.labelers.ct2, condlabel.adapter_bin, condlabel.preflight\n"
        "from condlabel.config import load_convert_config\n"
        "from condlabel.labelers import labeler_fingerprint\n"
        "cfg = load_convert_config(overrides=['labeler.backend=ct2', 'labeler.model=/m'])\n"
        "labeler_fingerprint(cfg.labeler)\n"
        "heavy = ('ctranslate2', 'torch', 'transformers', 'ray')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_a_loaded_labeler_runs_without_torch(ct2_models, texts):
    """The actor holds CTranslate2 and a tokenizer, not torch (AutoTokenizer would import it:
    ~330 MB of RSS per actor); the tokenizer is the one AutoTokenizer loads."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    model = ct2_models["int8"]
    code = (
        "import sys\n"
        "from condlabel.config.labelers import CT2LabelerConfig\n"
        "from condlabel.labelers.ct2 import CT2Labeler\n"
        f"cfg = CT2LabelerConfig(model={str(model)!r}, compute_type='int8', intra_threads=1,\n"
        "                       do_sample=False, max_new_tokens=8)\n"
        "labeler = CT2Labeler(cfg)\n"
        f"labeler.label({texts[:2]!r})\n"
        "print(type(labeler.tokenizer).__name__, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    expected = type(AutoTokenizer.from_pretrained(model)).__name__
    assert out.stdout.strip().splitlines()[-1] == f"{expected} False"
    ours = _ct2(model, compute_type="int8").tokenizer
    reference = AutoTokenizer.from_pretrained(model)
    for text in texts[:5]:
        assert ours(text)["input_ids"] == reference(text)["input_ids"]
    assert ours.all_special_ids == reference.all_special_ids
