"""Settings of a tag-adherence evaluation (`condlabel eval`): the conditionals, generation, and
the classifiers and labeler that judge the generations."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from condlabel.config.classifiers import ClassifierConfig
from condlabel.config.common import (
    DEFAULT_PREFIX_TEMPLATE,
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
    prefix_template_fields,
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
    prefix_template: str = DEFAULT_PREFIX_TEMPLATE
    """Prefix template of `prefix: template` (use the one the model was trained with, its
    `data.format.prefix_template`)."""
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    """Generation settings (part of the result: they change the scores)."""
    classifiers: list[ClassifierConfig] = Field(
        default_factory=lambda: [ClassifierConfig(backend="vader")]
    )
    """Classifiers that relabel the generations (judge control-token conditionals)."""
    labeler_config: str | None = None
    """Labeler that relabels the generations (judges tag conditionals): a labeler config file
    (YAML holding what a conversion's `labeler:` section holds, at its top level, e.g.
    `backend: keyphrase`). A relative path is looked up beside the config file that names it,
    then in the working directory. Null: none."""
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

    _labeler: LabelerConfig | None = PrivateAttr(None)

    @property
    def labeler(self) -> LabelerConfig | None:
        """The judging labeler, read from `labeler_config` by the config loader."""
        if self.labeler_config and self._labeler is None:
            raise ValueError(
                "labeler_config: not loaded; load the config with "
                "condlabel.config.load_eval_config (or load_config)"
            )
        return self._labeler

    def attach_labeler(self, labeler: LabelerConfig) -> None:
        self._labeler = labeler

    @property
    def format(self) -> FormatConfig:
        """The prefix format conditionals are rendered with."""
        return FormatConfig(prefix_template=self.prefix_template)

    _template = field_validator("prefix_template")(prefix_template_fields)

    @model_validator(mode="after")
    def _judges(self) -> EvalConfig:
        problems = []
        if any(c.tags for c in self.conditionals) and not self.labeler_config:
            problems.append(
                "labeler_config: tag conditionals need a labeler to relabel generations"
            )
        if any(c.control_tokens for c in self.conditionals) and not self.classifiers:
            problems.append("classifiers: control-token conditionals need at least one classifier")
        if not self.conditionals:
            problems.append("conditionals: give at least one conditional")
        shown = set(template_fields(self.prefix_template))
        for i, c in enumerate(self.conditionals):
            unshown = sorted(set(c.meta) - shown)
            if unshown and self.prefix == "template":
                problems.append(
                    f"conditionals[{i}].meta: {unshown} not in prefix_template "
                    "(use the template the model was trained with)"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self
