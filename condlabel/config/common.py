"""What every config kind shares: the strict base model, `ConfigError`, storage and prefix
settings, the Ray connection and generation field groups, template checks and the redacted dump
(which values are secret: `secrets.py`)."""

from __future__ import annotations

import string
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)

from condlabel.components import plugin_names
from condlabel.config.secrets import redact, secret_paths, strip_userinfo

PREFIX_FIELDS = ("synopsis", "tags", "control_tokens")
# Metadata template fields: `{meta.NAME}` (a kept input field) and `{url_domain}`.
META_FIELD = "meta."
URL_DOMAIN_FIELD = "url_domain"
DEFAULT_PREFIX_TEMPLATE = "{control_tokens}Synopsis: {synopsis} Tags: [{tags}]\n"


class ConfigError(ValueError):
    """A configuration problem; `problems` lists every one, each as "key: message"."""

    def __init__(self, problems: list[str], source: str | None = None):
        # A value quoted in a problem may be a URL with credentials: never print those; nor a
        # problem of megabytes (a value expanded from YAML anchors, say).
        self.problems = [_capped(strip_userinfo(problem)) for problem in problems]
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{len(problems)} configuration problem(s){where}:\n{lines}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its problems (not its message) when it crosses a process, e.g. from a
        # Ray task to the driver.
        return type(self), (self.problems, self.source)


# The longest problem a ConfigError keeps; what it quotes beyond this is cut.
MAX_PROBLEM_CHARS = 1000


def _capped(problem: str) -> str:
    if len(problem) <= MAX_PROBLEM_CHARS:
        return problem
    return f"{problem[: MAX_PROBLEM_CHARS - 40]}... ({len(problem):,} characters, cut)"


class StrictModel(BaseModel):
    """Unknown keys fail; attribute docstrings become field descriptions (the `--help` text);
    NaN and infinities are refused in every float field (`nan` would compare false with any
    threshold and silently change what a setting does)."""

    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        use_attribute_docstrings=True,
        allow_inf_nan=False,
    )


def template_fields(template: str) -> list[str]:
    """The `{field}` names of a str.format template, in order; ValueError if it does not parse."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ValueError(f"not a valid template ({exc})") from exc


class PluginBackend(StrictModel):
    """A component's backend choice that may name a backend a third-party package registers
    (entry-point group `GROUP`): its settings sit under the key named like it, as a built-in
    backend's do, and are kept as plain data (`plugin_options`) for the plugin's own config
    class, which the preflight and the plugin's builder apply."""

    GROUP: ClassVar[str] = ""
    BUILT_IN: ClassVar[tuple[str, ...]] = ()
    _plugin_options: dict[str, Any] | None = PrivateAttr(None)

    @property
    def plugin_options(self) -> dict[str, Any] | None:
        """The section of a plugin backend (None: none given)."""
        return self._plugin_options

    @model_validator(mode="wrap")
    @classmethod
    def _plugin_section(cls, data: Any, handler: Any) -> Any:
        options = None
        if isinstance(data, dict):
            name = data.get("backend")
            if isinstance(name, str) and name not in cls.model_fields and name in data:
                options = data[name]
                data = {k: v for k, v in data.items() if k != name}
                if not isinstance(options, dict):
                    raise ValueError(f"{name}: expected a mapping of the backend's settings")
        model = handler(data)
        if options is not None:
            model._plugin_options = options
        return model

    @field_validator("backend", check_fields=False)
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value in cls.BUILT_IN:
            return value
        plugins = plugin_names(cls.GROUP)
        if value not in plugins:
            valid = ", ".join([*cls.BUILT_IN, *plugins])
            raise ValueError(
                f"unknown backend {value!r}; valid: {valid} (a plugin registers more through "
                f"the entry-point group {cls.GROUP})"
            )
        return value


def backend_has_model(config: Any) -> Any:
    """`after` validator of a backend choice: a backend that loads weights needs its `model`."""
    options = getattr(config, config.backend, None)
    if options is not None and hasattr(options, "model") and not options.model:
        raise ValueError(
            f"{config.backend}.model: required for backend `{config.backend}` "
            "(local dir, s3:// or hub id)"
        )
    return config


class StorageConfig(StrictModel):
    endpoint_url: str | None = None
    """S3 endpoint (with scheme, e.g. http://127.0.0.1:9000); default: AWS_ENDPOINT_URL or AWS."""
    region: str | None = None
    """S3 region; default: the AWS chain (AWS_REGION, profile)."""
    profile: str | None = None
    """AWS profile name; default: the AWS chain."""
    anon: bool = False
    """Access public buckets without credentials."""
    access_key_id: SecretStr | None = None
    """Prefer the AWS chain (env, profile, instance role). Set with `secret_access_key`: the two
    are used as a pair, never completed from the environment. Never logged or written to
    manifests."""
    secret_access_key: SecretStr | None = None
    """Prefer the AWS chain. Set with `access_key_id`. Never logged or written to manifests."""
    retries: int = Field(10, ge=0)
    """Retries of a failed S3 request (throttling, 5xx; botocore's adaptive retry mode, with
    exponential backoff up to 20 s between attempts). An endpoint that cannot be reached is
    retried 3 times only, then the command fails with exit 3 naming it."""


class RunConfig(StrictModel):
    """A command's whole configuration; it holds a `storage` section."""

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret replaced and credentials removed from
        every URL (e.g. `storage.endpoint_url`); safe for logs and manifests."""
        return redact(self.model_dump(mode="json"), secret_paths(type(self)))


def prefix_template_fields(value: str) -> str:
    """A prefix template: only the fields a prefix knows (metadata ones included)."""
    unknown = sorted(
        {
            n
            for n in template_fields(value)
            if n not in (*PREFIX_FIELDS, URL_DOMAIN_FIELD)
            and not (n.startswith(META_FIELD) and n[len(META_FIELD) :].strip())
        }
    )
    if unknown:
        allowed = ", ".join("{" + f + "}" for f in (*PREFIX_FIELDS, URL_DOMAIN_FIELD))
        raise ValueError(f"unknown field(s) {unknown}; allowed: {allowed}, {{meta.NAME}}")
    return value


class FormatConfig(StrictModel):
    prefix_template: str = DEFAULT_PREFIX_TEMPLATE
    """Prefix put before each chunk's text; fields: {synopsis}, {tags} (comma-joined),
    {control_tokens} (concatenated), {meta.NAME} (the kept input field NAME, `input.keep_fields`)
    and {url_domain} (the host of the URL field, lowercased, without `www.`). A line whose
    fields are all empty is left out; a row whose labeler output did not parse (or that has no
    synopsis and no tags) gets its control tokens and its metadata lines only."""
    tag_vocabulary: str | None = None
    """Tag vocabulary file (`condlabel vocab build`; local path or s3://) applied when the prefix
    is rendered, at conversion and at training time: `tags` holds canonical tags, the labeler's
    own stay in `raw_tags`; its fingerprint goes into the run manifest and the training
    provenance. Unset: tags as the labeler wrote them."""
    tag_oov: Literal["keep", "map", "drop"] = "keep"
    """A tag the vocabulary does not know (not a variant, nor a case/spacing/punctuation form of
    one): `keep` it as written, `map` it to the most similar canonical tag (rapidfuzz ratio of
    the folded forms at least `tag_oov_similarity`, else dropped; needs the vocab extra), or
    `drop` it."""
    tag_oov_similarity: float = Field(85.0, ge=0, le=100)
    """Least similarity (0-100) for `tag_oov: map`."""

    _known_fields = field_validator("prefix_template")(prefix_template_fields)


class RayConnection(StrictModel):
    """Where a command's Ray runs (convert and train compute sections)."""

    address: str | None = None
    """Ray address (`auto` joins a running cluster); unset: RAY_ADDRESS if set (as under
    `ray job submit`), else a new embedded local Ray."""
    num_cpus: int | None = Field(None, ge=1)
    """Logical CPUs of an embedded local Ray (unset: the machine's cores + 1)."""


# Generation fields whose defaults differ between the labelers and `condlabel eval`: the
# constraint and description live here, each model states only its default.
MaxNewTokens = Annotated[
    int,
    Field(
        ge=1, description="Most tokens generated per chunk or sample (the reference labeler: 80)."
    ),
]
Temperature = Annotated[
    float, Field(gt=0, description="Sampling temperature (the reference labeler: 0.5).")
]
TopP = Annotated[
    float,
    Field(gt=0, le=1, description="Nucleus sampling mass (the reference labeler: 0.95)."),
]
TopK = Annotated[
    int,
    Field(
        ge=0,
        description="Sample among the k most likely tokens; 0 disables (the reference labeler: 5).",
    ),
]


class GenerationFields(StrictModel):
    """Sampling settings of the generative labelers (hf, vllm) and of `condlabel eval`; the
    defaults here are the reference labeler's. Its model card's code also passes
    `penalty_alpha=0.6`, which has no field here on purpose: it only selects contrastive search
    (with `top_k > 1` and `do_sample=False`), so under the card's sampling it has no effect."""

    max_new_tokens: MaxNewTokens = 80
    do_sample: bool = True
    """Sample (as the reference labeler) or decode greedily; both are reproducible (see `seed`)."""
    temperature: Temperature = 0.5
    top_p: TopP = 0.95
    top_k: TopK = 5
    repetition_penalty: float = Field(1.0, gt=0)
    """Above 1 discourages repetition; 1.0 disables it (the reference labeler: 1.0)."""
    seed: int = 0
    """Sampling seed. A labeler samples each chunk with its own seed, derived from this and the
    chunk's text, so a label does not depend on its batch mates; eval starts each conditional
    from it, so results are reproducible."""
