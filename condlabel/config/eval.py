"""Settings of a tag-adherence evaluation (`condlabel eval`): the conditionals, generation, and
the classifiers and labeler that judge the generations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from condlabel.config.classifiers import ClassifierConfig
from condlabel.config.common import (
    META_FIELD,
    URL_DOMAIN_FIELD,
    FormatConfig,
    GenerationFields,
    MaxNewTokens,
    RunConfig,
    StorageConfig,
    StrictModel,
    Temperature,
    TopK,
    TopP,
    template_fields,
)
from condlabel.config.labelers import LabelerConfig

DEFAULT_OPPOSITES = {
    "<|pos|>": "<|neg|>",
    "<|neg|>": "<|pos|>",
    "<|toxic|>": "<|nontoxic|>",
    "<|nontoxic|>": "<|toxic|>",
}


class ConditionalConfig(StrictModel):
    name: str | None = None
    """Row name in the report; default: the prefix itself."""
    control_tokens: list[str] = Field(default_factory=list)
    """Control tokens to condition on, e.g. [<|pos|>]; judged by the classifiers."""
    tags: list[str] = Field(default_factory=list)
    """Tags to condition on; judged by the labeler (a generation whose tags share fewer than
    `min_tag_overlap` of them is misaligned)."""
    synopsis: str | None = None
    """Synopsis to condition on (part of the prompt; not judged)."""
    meta: dict[str, str] = Field(default_factory=dict)
    """Metadata to condition on, by template field: `{url_domain: en.wikipedia.org}`,
    `{meta.section: games}` (part of the prompt, rendered as training renders a row's kept
    input fields; not judged). Each must be a field of `format.prefix_template`."""

    @field_validator("meta")
    @classmethod
    def _metadata_fields(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k in value if k != URL_DOMAIN_FIELD and not k.startswith(META_FIELD)]
        if bad:
            raise ValueError(f"{bad}: metadata fields are `url_domain` and `meta.NAME`")
        return value


class GenerationSettings(GenerationFields):
    """Sampling of the generations under evaluation (defaults: broader than the labelers')."""

    max_new_tokens: MaxNewTokens = 48
    temperature: Temperature = 1.0
    top_p: TopP = 0.9
    top_k: TopK = 0
    no_repeat_ngram_size: int = Field(0, ge=0)
    """Forbid repeating n-grams of this size; 0 disables it."""
    guidance_scale: float = Field(1.0, ge=1.0)
    """Classifier-free guidance (Sanchez et al. 2023, transformers' `guidance_scale`): each
    next-token distribution is pushed away from the unconditioned one (the same prompt without
    the prefix, the mode `data.untagged_fraction` trains) by this factor. 1.0: plain sampling,
    one forward pass per token; above 1 each token costs a second pass. The baseline is always
    sampled without guidance."""
    guidance_against: Literal["unconditioned", "opposite"] = "unconditioned"
    """The branch guidance pushes away from. `unconditioned`: the same prompt without the
    prefix (classifier-free guidance). `opposite`: the prefix with each control token replaced
    by its opposite (`opposites`; a negative prompt), e.g. `<|pos|>` pushed away from
    `<|neg|>`, so each token's guidance also uses what the model learned of the other. A
    conditional with no control token that has an opposite is guided against unconditioned."""
    num_samples: int = Field(32, ge=1)
    """Generations per conditional and prompt (and for the unconditioned baseline)."""
    batch_size: int = Field(16, ge=1)
    """Generations per forward pass."""


class EvalConfig(RunConfig):
    """Configuration of a tag-adherence evaluation (`condlabel eval`)."""

    model: str | None = None
    """Trained model (the export of `condlabel train`): local dir, s3:// prefix or hub id."""
    conditionals: list[ConditionalConfig] = Field(
        default_factory=lambda: [
            ConditionalConfig(control_tokens=["<|pos|>"]),
            ConditionalConfig(control_tokens=["<|neg|>"]),
        ]
    )
    """Conditionals to generate under; each gets a misalignment score."""
    prompts: list[str] = Field(default_factory=lambda: [""])
    """Text put after the prefix to start each generation ("" = the model starts from the prefix)."""
    prefix: Literal["template", "control_tokens"] = "template"
    """How a conditional is rendered: exactly as training renders a row with those labels (the
    same function, after the same EOS). Use the model's `data.prefix`; a conditional with tags or
    a synopsis uses `format.prefix_template`, one with control tokens only renders just the
    tokens. A tags-only conditional (no synopsis) renders the template with an empty synopsis,
    which training shows only for rows without one (see `data.synopsis_drop_probability`)."""
    format: FormatConfig = Field(default_factory=FormatConfig)
    """Prefix template (use the one the model was trained with)."""
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    """Generation settings (part of the result: they change the scores)."""
    classifiers: list[ClassifierConfig] = Field(
        default_factory=lambda: [ClassifierConfig(backend="vader")]
    )
    """Classifiers that relabel the generations (judge control-token conditionals)."""
    labeler: LabelerConfig | None = None
    """Labeler that relabels the generations (judges tag conditionals); null: none."""
    opposites: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_OPPOSITES))
    """Control token -> the token that contradicts it (a generation conditioned on the key and
    classified as the value is misaligned)."""
    min_tag_overlap: int = Field(1, ge=1)
    """Conditioned tags a generation's relabeled tags must share to count as aligned."""
    baseline: bool = True
    """Also generate unconditioned and score those generations against every conditional."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device of generation and classification; `auto`: GPU if visible."""
    output: str | None = None
    """Where the JSON report is written (local or s3://); null: printed only."""
    storage: StorageConfig = Field(default_factory=StorageConfig)
    """S3 endpoint, profile and credentials for every s3:// path."""

    @model_validator(mode="after")
    def _judges(self) -> EvalConfig:
        problems = []
        if any(c.tags for c in self.conditionals) and self.labeler is None:
            problems.append("labeler: tag conditionals need a labeler to relabel generations")
        if any(c.control_tokens for c in self.conditionals) and not self.classifiers:
            problems.append("classifiers: control-token conditionals need at least one classifier")
        if not self.conditionals:
            problems.append("conditionals: give at least one conditional")
        shown = set(template_fields(self.format.prefix_template))
        for i, cond in enumerate(self.conditionals):
            unshown = sorted(set(cond.meta) - shown)
            if unshown and self.prefix == "template":
                problems.append(
                    f"conditionals[{i}].meta: {unshown} not in format.prefix_template "
                    "(use the template the model was trained with)"
                )
        for i, c in enumerate(self.classifiers):
            if c.backend == "vader" and c.vader.mode == "split_neutral":
                problems.append(
                    f"classifiers[{i}].vader.mode: split_neutral decides a neutral text by a "
                    "hash, which labels training text but cannot judge a generation; use "
                    "three_way (a neutral generation is never misaligned) or binary"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self
