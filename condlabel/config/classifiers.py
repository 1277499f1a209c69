"""Control-token classifiers' settings (`classifiers:` of a conversion, and the judges of
`condlabel eval`): VADER sentiment and Hugging Face sequence classifiers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from condlabel.config.common import StrictModel, backend_has_model

Sentiment = Literal["positive", "negative", "neutral"]
SENTIMENT_TOKENS: dict[Sentiment, str] = {"positive": "<|pos|>", "negative": "<|neg|>"}
TOXICITY_TOKENS = {"toxic": "<|toxic|>"}
NONTOXIC_TOKENS = {"toxic": "<|nontoxic|>"}


class VaderClassifierConfig(StrictModel):
    """VADER sentiment. In the default `three_way` mode a text whose compound score lies in the
    neutral band (between the two thresholds) gets no token: neutral training text carries no
    sentiment token, and in `condlabel eval` a neutral generation never counts as misaligned.
    The control-token reference gave every sentence `<|pos|>` or `<|neg|>`; `mode: binary` does
    that, and `mode: split_neutral` too, with the neutral band shared between the two."""

    mode: Literal["three_way", "binary", "split_neutral"] = "three_way"
    """`three_way`: positive / neutral / negative by the two thresholds below (VADER's own
    convention); `binary` (the control-token reference's): compound >= `binary_threshold` is
    `positive`, anything lower `negative`, so every text gets a token and no text is neutral;
    `split_neutral`: positive and negative by the two thresholds below, and a neutral text gets
    one of the two by a hash of its text (half each, the same on every run). Every text gets a
    token, and no text under either token leans the other way: `binary` puts the whole neutral
    band on one side, so one token means "nothing of the other polarity" and the other "some of
    this polarity", and a small model learns the first far sooner than the second. Measured in
    bench/README.md (tag_adherence.py): which side holds the neutral band decides which token a
    small model learns first; neither mode gets both at 1,200-2,500 steps."""
    binary_threshold: float = Field(0.0, ge=-1, le=1)
    """`binary` mode only: compound score at or above which a text is `positive`."""
    positive_threshold: float = Field(0.05, ge=-1, le=1)
    """`three_way` and `split_neutral` modes: compound score at or above which a text is
    `positive` (VADER's own convention: 0.05)."""
    negative_threshold: float = Field(-0.05, ge=-1, le=1)
    """`three_way` and `split_neutral` modes: compound score at or below which a text is
    `negative`; in between is `neutral`."""
    tokens: dict[Sentiment, str] = Field(default_factory=lambda: dict(SENTIMENT_TOKENS))
    """Control token per sentiment class; a class without an entry (default: neutral) adds none."""

    @model_validator(mode="after")
    def _ordered(self) -> VaderClassifierConfig:
        if self.negative_threshold >= self.positive_threshold:
            raise ValueError(
                f"negative_threshold ({self.negative_threshold}) must be below "
                f"positive_threshold ({self.positive_threshold})"
            )
        return self


class HFClassifierConfig(StrictModel):
    model: str | None = None
    """Sequence-classification checkpoint (safetensors only): local directory, s3:// prefix or
    hub id, e.g. a Detoxify-style toxicity model. Required for backend `hf`."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) when `model` is a hub id."""
    problem_type: Literal["auto", "multi_label", "single_label"] = "auto"
    """`multi_label`: sigmoid per label; `single_label`: softmax over labels; `auto` follows the
    model config (`multi_label_classification` or a single output -> sigmoid, else softmax)."""
    threshold: float = Field(0.5, ge=0, le=1)
    """Probability at or above which a label counts as present."""
    tokens: dict[str, str] = Field(default_factory=lambda: dict(TOXICITY_TOKENS))
    """Model label -> control token added when the label is present (probability >= threshold)."""
    absent_tokens: dict[str, str] = Field(default_factory=lambda: dict(NONTOXIC_TOKENS))
    """Model label -> control token added when the label is absent (probability < threshold)."""
    batch_size: int = Field(32, ge=1)
    """Texts per forward pass."""
    max_length: int = Field(512, ge=8)
    """Texts are truncated to this many tokens."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: the GPU of the actor when it has one, else CPU."""
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """`auto`: bfloat16 on a GPU that supports it (else float16), float32 on CPU."""


class ClassifierConfig(StrictModel):
    """One control-token classifier; its tokens are appended to a row's `control_tokens` in the
    order the classifiers are configured, and its scores go to `scores` as `<name>.<key>`."""

    backend: Literal["vader", "hf"] = "vader"
    """`vader`: sentiment from the VADER lexicon (CPU, no weights); `hf`: a Hugging Face
    sequence-classification checkpoint (toxicity or any label)."""
    name: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")
    """Prefix of this classifier's score keys; default `vader`, or `toxicity` for `hf`."""
    vader: VaderClassifierConfig = Field(default_factory=VaderClassifierConfig)
    """Options of the `vader` backend."""
    hf: HFClassifierConfig = Field(default_factory=HFClassifierConfig)
    """Options of the `hf` backend."""

    _backend_options = model_validator(mode="after")(backend_has_model)

    @property
    def effective_name(self) -> str:
        return self.name or {"vader": "vader", "hf": "toxicity"}[self.backend]
