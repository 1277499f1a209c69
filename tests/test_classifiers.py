"""Control-token classifiers: VADER on real sentences, a tiny HF checkpoint, the table step."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from condlabel.classifiers import (
    ControlClassifier,
    HFSequenceClassifier,
    VaderClassifier,
    build_classifiers,
    classifier_fingerprints,
    classify_table,
    label_tokens,
)
from condlabel.config import (
    ClassifierConfig,
    ConfigError,
    ConvertConfig,
    HFClassifierConfig,
    VaderClassifierConfig,
    build_config,
)
from condlabel.schema import SCORES_TYPE, scores_as_dict

POSITIVE = [
    "I love this wonderful little cafe, the coffee is excellent and the staff are so kind.",
    "What a beautiful, happy day; we had a great time and laughed a lot.",
]
NEGATIVE = [
    "This is a terrible, awful product and I hate how it broke after one day.",
    "The service was horrible, rude and disgusting; worst experience ever.",
]
NEUTRAL = ["The table is in the kitchen.", "The train leaves at seven."]


def test_vader_tokens_on_clear_sentences():
    vader = VaderClassifier(VaderClassifierConfig())
    assert isinstance(vader, ControlClassifier)
    results = vader.classify(POSITIVE + NEGATIVE + NEUTRAL)
    assert [r.control_tokens for r in results] == [["<|pos|>"]] * 2 + [["<|neg|>"]] * 2 + [[]] * 2
    for r in results[:2]:
        assert r.scores["compound"] > 0.5
    for r in results[2:4]:
        assert r.scores["compound"] < -0.5
    assert set(results[0].scores) == {"compound", "pos", "neu", "neg"}


def test_vader_binary_mode_gives_every_sentence_a_token():
    """Three-way (default) leaves the neutral band without a token; binary, the control-token
    reference's mode, gives every sentence <|pos|> or <|neg|> by the sign of its compound."""
    cancelled = "The meeting was cancelled."  # compound -0.25
    lukewarm = "I guess the movie was fine."  # compound 0.20
    sentences = [*POSITIVE, *NEGATIVE, *NEUTRAL, cancelled, lukewarm]
    three_way = VaderClassifier(VaderClassifierConfig()).classify(sentences)
    binary = VaderClassifier(VaderClassifierConfig(mode="binary")).classify(sentences)
    assert [r.control_tokens for r in three_way] == (
        [["<|pos|>"]] * 2 + [["<|neg|>"]] * 2 + [[]] * 2 + [["<|neg|>"], ["<|pos|>"]]
    )
    # Neutral sentences (compound exactly 0) count as positive: compound >= 0.
    assert [r.scores["compound"] for r in binary[4:6]] == [0.0, 0.0]
    assert [r.control_tokens for r in binary] == (
        [["<|pos|>"]] * 2 + [["<|neg|>"]] * 2 + [["<|pos|>"]] * 2 + [["<|neg|>"], ["<|pos|>"]]
    )
    assert [r.scores for r in binary] == [r.scores for r in three_way]
    # The threshold is configurable: a lukewarm sentence falls below 0.3.
    raised = VaderClassifier(VaderClassifierConfig(mode="binary", binary_threshold=0.3))
    assert [r.control_tokens for r in raised.classify([lukewarm, POSITIVE[0], NEUTRAL[0]])] == [
        ["<|neg|>"],
        ["<|pos|>"],
        ["<|neg|>"],
    ]


def test_vader_mode_changes_the_fingerprint_and_the_default_keeps_its_own():
    import importlib.metadata as md

    from condlabel.labelers.base import make_fingerprint

    default = ClassifierConfig(backend="vader")
    binary = ClassifierConfig(backend="vader", vader={"mode": "binary"})
    shifted = ClassifierConfig(backend="vader", vader={"mode": "binary", "binary_threshold": 0.1})
    prints = classifier_fingerprints([default, binary, shifted])
    assert len(set(prints)) == 3
    # The default's fingerprint is the one conversions made before the option recorded.
    before = default.vader.model_dump(exclude={"mode", "binary_threshold"})
    version = md.version("vaderSentiment")
    assert prints[0] == make_fingerprint("vader", {"name": "vader", "version": version, **before})


def test_vader_thresholds_and_token_map_as_configured():
    sentence = "The food was okay, nice enough."  # mildly positive
    compound = VaderClassifier(VaderClassifierConfig()).classify([sentence])[0].scores["compound"]
    assert 0.05 < compound < 0.9
    strict = VaderClassifier(
        VaderClassifierConfig(
            positive_threshold=0.9,
            negative_threshold=-0.9,
            tokens={"positive": "<|p|>", "negative": "<|n|>", "neutral": "<|neutral|>"},
        )
    )
    assert strict.classify([sentence])[0].control_tokens == ["<|neutral|>"]
    assert strict.classify([POSITIVE[1]])[0].control_tokens == ["<|p|>"]
    only_negative = VaderClassifier(VaderClassifierConfig(tokens={"negative": "<|neg|>"}))
    assert [r.control_tokens for r in only_negative.classify([POSITIVE[0], NEGATIVE[0]])] == [
        [],
        ["<|neg|>"],
    ]


def test_classifier_config_is_strict_and_collects_problems():
    with pytest.raises(ConfigError) as err:
        build_config(
            ConvertConfig,
            {
                "classifiers": [
                    {"backend": "hf"},
                    {"vader": {"tokens": {"happy": "<|h|>"}}},
                    {"backend": "bert"},
                ]
            },
        )
    text = str(err.value)
    assert "classifiers.0: Value error, hf.model: required" in text
    assert "classifiers.1.vader.tokens.happy" in text
    assert "classifiers.2.backend" in text


def test_label_tokens_threshold_and_maps():
    probs = {"toxic": 0.7, "insult": 0.2, "threat": 0.5}
    tokens = {"toxic": "<|toxic|>", "threat": "<|threat|>"}
    absent = {"toxic": "<|nontoxic|>", "insult": "<|polite|>"}
    assert label_tokens(probs, 0.5, tokens, absent) == ["<|toxic|>", "<|threat|>", "<|polite|>"]
    assert label_tokens(probs, 0.8, tokens, absent) == ["<|nontoxic|>", "<|polite|>"]
    assert label_tokens(probs, 0.1, tokens, absent) == ["<|toxic|>", "<|threat|>"]


def _independent_probabilities(model_dir, texts, multi_label):
    """Scores straight from transformers, one text at a time (no padding)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    out = []
    for text in texts:
        with torch.no_grad():
            logits = model(**tok(text, return_tensors="pt")).logits[0]
        probs = torch.sigmoid(logits) if multi_label else torch.softmax(logits, -1)
        out.append(
            dict(
                zip(
                    [model.config.id2label[i] for i in range(len(probs))],
                    probs.tolist(),
                    strict=True,
                )
            )
        )
    return out


def test_hf_multi_label_scores_tokens_and_batching(tiny_toxicity_dir):
    texts = POSITIVE + NEGATIVE + NEUTRAL + ["short", "x " * 40]
    expected = _independent_probabilities(tiny_toxicity_dir, texts, multi_label=True)
    # Threshold at the median toxic score: the tokens must split the texts by their own scores.
    median = sorted(p["toxic"] for p in expected)[len(texts) // 2]
    clf = HFSequenceClassifier(
        HFClassifierConfig(model=str(tiny_toxicity_dir), threshold=median, batch_size=3)
    )
    assert clf.multi_label and clf.labels == ["toxic", "insult", "threat"]
    results = clf.classify(texts)
    for res, exp in zip(results, expected, strict=True):
        for label in exp:  # batched with padding == one at a time
            assert math.isclose(res.scores[label], exp[label], abs_tol=1e-5)
        assert res.control_tokens == (["<|toxic|>"] if exp["toxic"] >= median else ["<|nontoxic|>"])
    tokens = [r.control_tokens[0] for r in results]
    assert 0 < tokens.count("<|toxic|>") < len(texts)


def test_hf_single_label_softmax(tiny_sentiment_dir):
    cfg = HFClassifierConfig(
        model=str(tiny_sentiment_dir),
        tokens={"positive": "<|pos|>", "negative": "<|neg|>"},
        absent_tokens={},
    )
    clf = HFSequenceClassifier(cfg)
    assert not clf.multi_label
    texts = POSITIVE + NEGATIVE
    expected = _independent_probabilities(tiny_sentiment_dir, texts, multi_label=False)
    for res, exp in zip(clf.classify(texts), expected, strict=True):
        assert math.isclose(sum(res.scores.values()), 1.0, abs_tol=1e-5)
        assert math.isclose(res.scores["positive"], exp["positive"], abs_tol=1e-5)
        assert res.control_tokens == ["<|pos|>" if exp["positive"] >= 0.5 else "<|neg|>"]
    # Forcing sigmoid on the same checkpoint changes the scores: the config is honoured.
    forced = HFSequenceClassifier(cfg.model_copy(update={"problem_type": "multi_label"}))
    assert forced.multi_label
    assert not math.isclose(sum(forced.classify(texts[:1])[0].scores.values()), 1.0, abs_tol=1e-3)


def test_hf_unknown_label_names_the_model_labels(tiny_toxicity_dir):
    with pytest.raises(ValueError, match=r"\['obscene'\].*\['toxic', 'insult', 'threat'\]"):
        HFSequenceClassifier(
            HFClassifierConfig(model=str(tiny_toxicity_dir), tokens={"obscene": "<|o|>"})
        )


@pytest.mark.s3
def test_hf_classifier_loads_from_s3(
    tiny_toxicity_dir, s3_bucket, s3fs_client, tmp_path, monkeypatch
):
    monkeypatch.setenv("CONDLABEL_CACHE", str(tmp_path / "cache"))
    s3fs_client.put(str(tiny_toxicity_dir) + "/", f"{s3_bucket}/models/tox/", recursive=True)
    local = HFSequenceClassifier(HFClassifierConfig(model=str(tiny_toxicity_dir)))
    remote = HFSequenceClassifier(HFClassifierConfig(model=f"s3://{s3_bucket}/models/tox"))
    a, b = local.classify(NEGATIVE), remote.classify(NEGATIVE)
    assert [r.scores for r in a] == [r.scores for r in b]
    # One copy of the model; `.locks` holds the per-URI download locks beside the copies.
    entries = [p.name for p in (tmp_path / "cache" / "models").iterdir() if p.name != ".locks"]
    assert len(entries) == 1, entries


def test_classify_table_appends_in_configured_order(tiny_toxicity_dir):
    cfgs = [
        ClassifierConfig(backend="vader"),
        ClassifierConfig(
            backend="hf", hf=HFClassifierConfig(model=str(tiny_toxicity_dir), threshold=0.0)
        ),
    ]
    classifiers = build_classifiers(cfgs)
    table = pa.table(
        {
            "doc_id": ["a", "b", "c"],
            "text": [POSITIVE[0], NEGATIVE[0], NEUTRAL[0]],
            "control_tokens": pa.array([["<|lab|>"], [], None], pa.list_(pa.string())),
        }
    )
    out = classify_table(classifiers, table)
    assert out.column_names == ["doc_id", "text", "control_tokens", "scores"]
    assert out.schema.field("scores").type == SCORES_TYPE
    # threshold 0 -> every text is "toxic"; the labeler's token stays first.
    assert out.column("control_tokens").to_pylist() == [
        ["<|lab|>", "<|pos|>", "<|toxic|>"],
        ["<|neg|>", "<|toxic|>"],
        ["<|toxic|>"],
    ]
    scores = [scores_as_dict(s) for s in out.column("scores").to_pylist()]
    assert set(scores[0]) == {
        "vader.compound",
        "vader.pos",
        "vader.neu",
        "vader.neg",
        "toxicity.toxic",
        "toxicity.insult",
        "toxicity.threat",
    }
    assert scores[1]["vader.compound"] < -0.5
    # Running again extends the existing columns rather than dropping them.
    again = classify_table(classifiers[:1], out)
    assert again.column("control_tokens").to_pylist()[0] == [
        "<|lab|>",
        "<|pos|>",
        "<|toxic|>",
        "<|pos|>",
    ]
    assert len(classifier_fingerprints(cfgs)) == 2
    assert classifier_fingerprints(cfgs)[0] == classifiers[0].fingerprint


def test_duplicate_classifier_names_are_refused():
    with pytest.raises(ValueError, match="used twice"):
        build_classifiers([ClassifierConfig(), ClassifierConfig()])
