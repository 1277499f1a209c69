"""One score definition for every backend (`scoring.label_score`), checked where backends used to
disagree: labels cut at `max_new_tokens`. Such a label holds no EOS, so none may be scored; its
score is the model's raw log-probability of exactly its tokens, on `hf` and on `ct2` alike
(vLLM's check is in tests/test_vllm_labeler.py, in the vLLM venv)."""

from __future__ import annotations

import math

import pytest

from condlabel.labelers.scoring import label_score

EOS = 1


def test_label_score_counts_up_to_the_first_eos_and_nothing_more():
    cut = label_score([5, 6, 7], [-0.5, -0.25, -0.125], {EOS})
    assert (cut.logprob, cut.num_tokens, cut.stopped) == (-0.875, 3, False)
    assert cut.mean_logprob == pytest.approx(-0.875 / 3)
    stopped = label_score([5, EOS, 9, 9], [-0.5, -2.0, -7.0, -7.0], {EOS})
    assert (stopped.tokens, stopped.logprob, stopped.stopped) == ([5, EOS], -2.5, True)
    assert label_score([], [], {EOS}).mean_logprob == 0.0
    with pytest.raises(RuntimeError, match="2 log-probabilities for 3 generated tokens"):
        label_score([5, 6, 7], [-0.5, -0.25], {EOS})


torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from labeler_checks import teacher_forced_logprob  # noqa: E402
from tiny_models import sample_texts  # noqa: E402

from condlabel.config import HFLabelerConfig  # noqa: E402
from condlabel.labelers.hf import HFLabeler  # noqa: E402

NEW_TOKENS = 3  # short: most labels of the tiny T5 are cut here
TOL = 1e-4


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sample_texts(16, min_words=10, max_words=120, seed=5)


@pytest.fixture(scope="module")
def hf_labels(tiny_t5, texts):
    labeler = HFLabeler(
        HFLabelerConfig(model=str(tiny_t5), do_sample=False, max_new_tokens=NEW_TOKENS)
    )
    return labeler, labeler.label(texts)


def _cut(result) -> bool:
    ids = result.extra["generated_ids"]
    return len(ids) == NEW_TOKENS and ids[-1] != EOS


def _assert_scores_exactly_the_tokens(model, encoded, results) -> int:
    """Every cut label scores its own tokens (teacher-forced); returns how many were cut where
    an EOS term would have shown (so the check can fail)."""
    telling = 0
    for (ids, _), result in zip(encoded, results, strict=True):
        generated = result.extra["generated_ids"]
        own = teacher_forced_logprob(model, ids, generated, decoder_start=0)
        assert result.logprob == pytest.approx(own, abs=TOL)
        assert result.num_generated_tokens == len(generated)
        assert result.mean_logprob == pytest.approx(own / len(generated), abs=TOL)
        if _cut(result):
            assert result.label_truncated
            with_eos = teacher_forced_logprob(model, ids, [*generated, EOS], decoder_start=0)
            telling += abs(with_eos - own) > 100 * TOL
    return telling


def test_hf_scores_a_cut_label_over_its_own_tokens(hf_labels, texts):
    labeler, results = hf_labels
    assert any(_cut(r) for r in results) and not all(_cut(r) for r in results)
    assert _assert_scores_exactly_the_tokens(labeler.model, labeler.encode(texts), results) >= 2


def test_ct2_scores_a_cut_label_as_hf_does(tiny_t5, hf_labels, texts, tmp_path_factory):
    pytest.importorskip("ctranslate2")
    from condlabel.config.labelers import CT2LabelerConfig
    from condlabel.labelers.ct2 import CT2Labeler
    from condlabel.models import merge_model

    out = tmp_path_factory.mktemp("ct2-scores") / "model"
    merge_model(str(tiny_t5), None, str(out), format="ct2", quantization="float32")
    cfg = CT2LabelerConfig(
        model=str(out),
        compute_type="float32",
        do_sample=False,
        max_new_tokens=NEW_TOKENS,
        intra_threads=1,
        max_batch_size=5,  # CTranslate2 splits the batch: each row keeps its own steps
    )
    ours = CT2Labeler(cfg).label(texts)
    hf, theirs = hf_labels
    assert _assert_scores_exactly_the_tokens(hf.model, hf.encode(texts), ours) >= 2
    for a, b in zip(ours, theirs, strict=True):
        assert a.extra["generated_ids"] == b.extra["generated_ids"]
        assert a.label_truncated == b.label_truncated
        assert a.logprob == pytest.approx(b.logprob, abs=TOL)
        assert math.isfinite(a.mean_logprob)
