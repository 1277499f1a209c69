"""Control-token classifiers: one protocol, a VADER and a Hugging Face backend, their registry
(`CLASSIFIERS`; packages add backends through the entry-point group `condlabel.classifiers`),
and the table step.

A classifier reads a batch of texts and returns, per text, the control tokens it assigns
(`<|pos|>`, `<|nontoxic|>`, ...) and its raw scores. `classify_table` runs the configured
classifiers over a chunk table: their tokens are appended to `control_tokens` in configured
order and their scores land in the `scores` column as (name, score) pairs named `<classifier name>.<score>`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from condlabel.components import CLASSIFIER_GROUP, Extra, Weights, load_plugin, plugin_names
from condlabel.config import (
    ClassifierConfig,
    HFClassifierConfig,
    Sentiment,
    StorageConfig,
    VaderClassifierConfig,
)
from condlabel.labelers.base import make_fingerprint
from condlabel.schema import SCORES_TYPE, scores_as_dict, scores_cell

CONTROL_TOKENS_TYPE = pa.list_(pa.string())
CLASSIFIER_MAX_TOKENS = 512
"""A classifier reads at most this many tokens of a text (fewer when its model's limit is
lower): sentiment and toxicity models are trained on short texts."""


@dataclass
class ClassifierResult:
    control_tokens: list[str]
    """Tokens for this text, in the classifier's own order (may be empty, e.g. neutral)."""
    scores: dict[str, float] = field(default_factory=dict)
    """Raw scores by key without the classifier name (`compound`, `toxic`, ...)."""


@runtime_checkable
class ControlClassifier(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def fingerprint(self) -> str: ...

    def classify(self, texts: list[str]) -> list[ClassifierResult]: ...


# --------------------------------------------------------------------------- VADER


class VaderClassifier:
    """Sentiment from VADER's compound score (a lexicon and rules; CPU, no weights)."""

    def __init__(self, cfg: VaderClassifierConfig, name: str = "vader"):
        try:
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
        except ImportError as exc:
            raise ImportError(
                "the `vader` classifier needs vaderSentiment: pip install 'condlabel[classify]'"
            ) from exc
        self.cfg = cfg
        self.name = name
        self._analyzer = SentimentIntensityAnalyzer()

    @property
    def fingerprint(self) -> str:
        return vader_fingerprint(self.cfg, self.name)

    def sentiment(self, compound: float) -> Sentiment:
        """The class of a compound score."""
        if self.cfg.mode == "binary":
            return "positive" if compound >= self.cfg.binary_threshold else "negative"
        if compound >= self.cfg.positive_threshold:
            return "positive"
        if compound <= self.cfg.negative_threshold:
            return "negative"
        return "neutral"

    def classify(self, texts: list[str]) -> list[ClassifierResult]:
        results = []
        for text in texts:
            scores = self._analyzer.polarity_scores(text)
            token = self.cfg.tokens.get(self.sentiment(scores["compound"]))
            results.append(
                ClassifierResult(
                    control_tokens=[token] if token else [],
                    scores={k: float(scores[k]) for k in ("compound", "pos", "neu", "neg")},
                )
            )
        return results


def vader_fingerprint(cfg: VaderClassifierConfig, name: str) -> str:
    import importlib.metadata as md

    try:
        version = md.version("vaderSentiment")
    except md.PackageNotFoundError:
        version = "unknown"
    params = cfg.model_dump()
    if cfg.mode == "three_way":
        # Added with binary mode: left out of the default's fingerprint, so conversions made
        # before the option keep theirs (their labels are the same).
        del params["mode"], params["binary_threshold"]
    return make_fingerprint("vader", {"name": name, "version": version, **params})


# --------------------------------------------------------------------------- Hugging Face


def multi_label(problem_type: str, model_problem_type: str | None, num_labels: int) -> bool:
    """Sigmoid per label (True) or softmax over labels (False), as configured or per the model."""
    if problem_type != "auto":
        return problem_type == "multi_label"
    return model_problem_type == "multi_label_classification" or num_labels == 1


def label_tokens(
    probabilities: dict[str, float],
    threshold: float,
    tokens: dict[str, str],
    absent: dict[str, str],
) -> list[str]:
    """Tokens for one text: labels in `tokens` order when present, `absent` ones when not."""
    out = []
    for label in dict.fromkeys([*tokens, *absent]):
        present = probabilities[label] >= threshold
        token = tokens.get(label) if present else absent.get(label)
        if token:
            out.append(token)
    return out


class HFSequenceClassifier:
    """A Hugging Face sequence-classification checkpoint (e.g. Detoxify-style toxicity).

    Loaded once (safetensors only) onto `device` (`auto`: the GPU of the actor when it has one,
    else the CPU), in bfloat16 on a GPU and float32 on the CPU; texts are classified in batches.
    """

    def __init__(
        self,
        cfg: HFClassifierConfig,
        name: str = "toxicity",
        storage: StorageConfig | None = None,
        device: str = "auto",
    ):
        try:
            import torch
            from transformers import AutoModelForSequenceClassification, AutoTokenizer
        except ImportError as exc:
            raise ImportError(
                "the `hf` classifier needs torch and transformers: pip install 'condlabel[hf]'"
            ) from exc
        from condlabel.models import fetch_model, pick_device, pick_dtype

        if not cfg.model:
            raise ValueError("hf classifier: `hf.model` is required")
        self.cfg = cfg
        self.name = name
        self._torch = torch
        path = fetch_model(cfg.model, storage)
        self.device = pick_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=cfg.revision)
        self.model = (
            AutoModelForSequenceClassification.from_pretrained(
                path,
                revision=cfg.revision,
                use_safetensors=True,
                dtype=pick_dtype("auto", self.device),  # bfloat16 on GPU, float32 on CPU
            )
            .to(self.device)
            .eval()
        )
        if self.tokenizer.pad_token is None:
            # Padding is masked out by the attention mask; any known token will do.
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        config = self.model.config
        self.labels = [str(config.id2label[i]) for i in range(config.num_labels)]
        unknown = sorted((set(cfg.tokens) | set(cfg.absent_tokens)) - set(self.labels))
        if unknown:
            raise ValueError(
                f"hf classifier {cfg.model}: label(s) {unknown} in tokens/absent_tokens are not "
                f"labels of the model; its labels: {self.labels}"
            )
        self.multi_label = multi_label(cfg.problem_type, config.problem_type, config.num_labels)

    @property
    def fingerprint(self) -> str:
        return hf_fingerprint(self.cfg, self.name)

    def probabilities(self, texts: list[str]) -> list[dict[str, float]]:
        torch = self._torch
        out: list[dict[str, float]] = []
        for start in range(0, len(texts), self.cfg.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.cfg.batch_size],
                padding=True,
                truncation=True,
                max_length=min(CLASSIFIER_MAX_TOKENS, self.tokenizer.model_max_length),
                return_tensors="pt",
            ).to(self.device)
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            probs = torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)
            out.extend(dict(zip(self.labels, row, strict=True)) for row in probs.cpu().tolist())
        return out

    def classify(self, texts: list[str]) -> list[ClassifierResult]:
        return [
            ClassifierResult(
                label_tokens(p, self.cfg.threshold, self.cfg.tokens, self.cfg.absent_tokens), p
            )
            for p in self.probabilities(texts)
        ]


def hf_fingerprint(cfg: HFClassifierConfig, name: str) -> str:
    # `dtype` was a setting once; kept so outputs labeled before keep their fingerprint.
    params = {"dtype": "auto", **cfg.model_dump(exclude={"batch_size"})}
    return make_fingerprint("hf-classifier", {"name": name, **params})


# --------------------------------------------------------------------------- registry


def _no_weights(cfg: ClassifierConfig, at: str) -> Iterator[Weights]:
    return iter(())


@dataclass(frozen=True)
class ClassifierBackend:
    """A registry entry: how to build a classifier and know its fingerprint, and what the
    preflight checks and the manifest records (as `condlabel.labelers.Backend`)."""

    build: Callable[[ClassifierConfig, StorageConfig | None, str], ControlClassifier]
    """`(cfg, storage, device)` -> the classifier, loaded (once per actor)."""
    fingerprint: Callable[[ClassifierConfig], str]
    """From config alone."""
    config: type | None = None
    """The class of its settings section (`classifiers[i].<name>`)."""
    extra: Extra | None = None
    """The optional packages it imports, checked (not imported) by the preflight."""
    weights: Callable[[ClassifierConfig, str], Iterator[Weights]] = _no_weights
    """The model settings the preflight checks: `(cfg, at)`, `at` the prefix of their keys."""
    packages: tuple[str, ...] = ()
    """Distributions whose versions change its tokens: the run manifest records them."""


def _vader() -> ClassifierBackend:
    return ClassifierBackend(
        lambda c, storage, device: VaderClassifier(c.vader, c.effective_name),
        lambda c: vader_fingerprint(c.vader, c.effective_name),
        config=VaderClassifierConfig,
        extra=Extra(("vaderSentiment",), "pip install 'condlabel[classify]'"),
        packages=("vaderSentiment",),
    )


def _hf() -> ClassifierBackend:
    from condlabel.models import HF_INSTALL_HINT

    return ClassifierBackend(
        lambda c, storage, device: HFSequenceClassifier(c.hf, c.effective_name, storage, device),
        lambda c: hf_fingerprint(c.hf, c.effective_name),
        config=HFClassifierConfig,
        extra=Extra(("torch", "transformers"), HF_INSTALL_HINT),
        weights=lambda c, at: iter([Weights(f"{at}hf.model", c.hf.model)]),
        packages=("torch", "transformers"),
    )


CLASSIFIERS: dict[str, Callable[[], ClassifierBackend]] = {"vader": _vader, "hf": _hf}
"""Built-in classifier backends; packages add more through the entry-point group
`condlabel.classifiers`."""


def registered_classifiers() -> list[str]:
    names = plugin_names(CLASSIFIER_GROUP)
    return [*CLASSIFIERS, *(n for n in names if n not in CLASSIFIERS)]


def classifier_backend(name: str) -> ClassifierBackend:
    """The registry entry of `name`: built in, or a package's entry point."""
    if name in CLASSIFIERS:
        return CLASSIFIERS[name]()
    plugin = load_plugin(CLASSIFIER_GROUP, name)
    if plugin is None:
        valid = ", ".join(registered_classifiers())
        raise ValueError(f"unknown classifier backend {name!r}; valid: {valid}")
    return plugin if isinstance(plugin, ClassifierBackend) else plugin()


def build_classifier(
    cfg: ClassifierConfig, storage: StorageConfig | None = None, device: str = "auto"
) -> ControlClassifier:
    return classifier_backend(cfg.backend).build(cfg, storage, device)


def build_classifiers(
    cfgs: Sequence[ClassifierConfig], storage: StorageConfig | None = None, device: str = "auto"
) -> list[ControlClassifier]:
    """One classifier per config, in order, on `device` (`auto`: the actor's GPU when it has
    one); two classifiers may not share a name (score keys)."""
    names = [c.effective_name for c in cfgs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"classifiers: name(s) {dupes} used twice; set `name` to tell them apart")
    return [build_classifier(c, storage, device) for c in cfgs]


def classifier_fingerprints(cfgs: Sequence[ClassifierConfig]) -> list[str]:
    """Fingerprints from config alone (the driver never loads a model to know them)."""
    return [classifier_backend(c.backend).fingerprint(c) for c in cfgs]


# --------------------------------------------------------------------------- table step


def classify_table(
    classifiers: Sequence[ControlClassifier], table: pa.Table, text_column: str = "text"
) -> pa.Table:
    """Append each classifier's tokens to `control_tokens` and put its scores in `scores`.

    Existing `control_tokens` (e.g. from the labeler) come first; an existing `scores` column is
    kept and extended. Both columns are replaced in place or appended at the end.
    """
    texts = table.column(text_column).to_pylist()
    n = len(texts)
    tokens: list[list[str]] = (
        [list(t or []) for t in table.column("control_tokens").to_pylist()]
        if "control_tokens" in table.column_names
        else [[] for _ in range(n)]
    )
    scores: list[dict[str, float]] = (
        [scores_as_dict(s) for s in table.column("scores").to_pylist()]
        if "scores" in table.column_names
        else [{} for _ in range(n)]
    )
    for classifier in classifiers:
        results = classifier.classify(texts)
        if len(results) != n:
            raise RuntimeError(
                f"classifier {classifier.fingerprint} returned {len(results)} results for {n} texts"
            )
        for row_tokens, row_scores, result in zip(tokens, scores, results, strict=True):
            row_tokens.extend(result.control_tokens)
            for key, value in result.scores.items():
                row_scores[f"{classifier.name}.{key}"] = _finite(value)
    table = _set_column(table, "control_tokens", pa.array(tokens, CONTROL_TOKENS_TYPE))
    return _set_column(table, "scores", pa.array([scores_cell(s) for s in scores], SCORES_TYPE))


def _finite(value: Any) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"classifier score {value} is not finite")
    return value


def _set_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), pa.field(name, values.type), values)
    return table.append_column(pa.field(name, values.type), values)
