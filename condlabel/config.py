"""Typed run configuration: one YAML file -> pydantic models, strict and defaulted for a laptop.

Every field is documented where it is declared; the docstrings become `condlabel config --help`
text. Unknown keys and bad values are collected and reported together, each naming its key, before
any work starts (`ConfigError`).
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

PREFIX_FIELDS = ("synopsis", "tags", "control_tokens")
DEFAULT_PREFIX_TEMPLATE = "{control_tokens}Synopsis: {synopsis} Tags: [{tags}]\n"


class ConfigError(ValueError):
    """A configuration problem; `problems` lists every one, each as "key: message"."""

    def __init__(self, problems: list[str], source: str | None = None):
        self.problems = problems
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} configuration problem(s){where}:\n{lines}")


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True
    )


class InputConfig(_Strict):
    paths: list[str] = Field(default_factory=list)
    """Input files, directories/prefixes or globs (local path, file://, s3://). Several allowed."""
    text_field: str = "text"
    """Field (JSON key or parquet column) holding the document text."""
    id_field: str = "id"
    """Field holding the document id; documents without one get a stable id from source + position."""
    format: Literal["auto", "jsonl", "parquet"] = "auto"
    """File format; `auto` decides by extension (.jsonl, .json, .jsonl.gz, .jsonl.zst, .parquet)."""
    docs_per_batch: int = Field(256, ge=1)
    """Documents read per block handed to the chunker (memory vs. task overhead)."""


class ChunkConfig(_Strict):
    max_words: int = Field(2000, ge=1)
    """Largest chunk, in whitespace-separated words (the reference labeler reads ~2,000 words)."""
    min_words: int | None = Field(None, ge=1)
    """Smallest trailing chunk before it is merged or rebalanced; default max_words // 4."""

    @property
    def effective_min_words(self) -> int:
        return self.min_words if self.min_words is not None else max(1, self.max_words // 4)


class KeyphraseLabelerConfig(_Strict):
    num_tags: int = Field(6, ge=1, le=50)
    """Number of keyphrase tags per chunk."""
    max_ngram: int = Field(3, ge=1, le=5)
    """Longest keyphrase, in words."""
    synopsis_sentences: int = Field(2, ge=1, le=10)
    """Sentences picked for the extractive synopsis."""
    synopsis_max_words: int = Field(60, ge=5)
    """Synopsis is cut to this many words."""
    language: str = "en"
    """Stopword language for keyphrase extraction (YAKE language code)."""


class LabelerConfig(_Strict):
    backend: Literal["keyphrase"] = "keyphrase"
    """Labeler backend: `keyphrase` (CPU, no weights; the default)."""
    keyphrase: KeyphraseLabelerConfig = Field(default_factory=KeyphraseLabelerConfig)
    """Options of the `keyphrase` backend."""


class FormatConfig(_Strict):
    prefix_template: str = DEFAULT_PREFIX_TEMPLATE
    """Prefix put before each chunk's text; fields: {synopsis}, {tags} (comma-joined),
    {control_tokens} (concatenated). Rows whose labeler output did not parse get only the
    control tokens."""

    @field_validator("prefix_template")
    @classmethod
    def _known_fields(cls, value: str) -> str:
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc})") from exc
        unknown = sorted({n for n in names if n not in PREFIX_FIELDS})
        if unknown:
            raise ValueError(
                f"unknown field(s) {unknown}; allowed: {', '.join('{' + f + '}' for f in PREFIX_FIELDS)}"
            )
        return value


class OutputConfig(_Strict):
    uri: str = "./condlabel-output"
    """Output prefix (local path, file:// or s3://) that receives the tagged parquet shards."""
    rows_per_file: int = Field(512, ge=1)
    """Rows per parquet shard; smaller shards lose less work if a run is killed."""
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    """Parquet compression codec."""


class ComputeConfig(_Strict):
    address: str | None = None
    """Ray address; unset starts (or joins) a local Ray, `auto` joins a running cluster."""
    num_cpus: int | None = Field(None, ge=1)
    """Logical CPUs for an embedded local Ray (unset: Ray detects them)."""
    actors: int | None = Field(None, ge=1)
    """Labeler actors; unset sizes the pool from the cluster's resources, leaving room for readers."""
    num_cpus_per_actor: float = Field(1.0, gt=0)
    """CPUs reserved by each labeler actor."""
    num_gpus_per_actor: float = Field(0.0, ge=0)
    """GPUs reserved by each labeler actor (1 for the reference labeler on a GPU cluster)."""
    batch_size: int = Field(16, ge=1)
    """Chunks per labeler call."""
    num_cpus_per_reader: float = Field(0.5, gt=0)
    """CPUs reserved by each read+chunk task (fractional so readers are never starved)."""
    progress_interval_s: float = Field(15.0, gt=0)
    """Seconds between driver-side progress lines."""


class StorageConfig(_Strict):
    endpoint_url: str | None = None
    """S3 endpoint (with scheme, e.g. http://127.0.0.1:9000); default: AWS_ENDPOINT_URL or AWS."""
    region: str | None = None
    """S3 region; default: the AWS chain (AWS_REGION, profile)."""
    profile: str | None = None
    """AWS profile name; default: the AWS chain."""
    anon: bool = False
    """Access public buckets without credentials."""
    access_key_id: SecretStr | None = None
    """Prefer the AWS chain (env, profile, instance role). Never logged or written to manifests."""
    secret_access_key: SecretStr | None = None
    """Prefer the AWS chain. Never logged or written to manifests."""
    retries: int = Field(10, ge=0)
    """Retries of transient S3 errors (botocore's adaptive retry mode)."""


class ConvertConfig(_Strict):
    """Configuration of a conversion run (`condlabel convert`)."""

    input: InputConfig = Field(default_factory=InputConfig)
    chunking: ChunkConfig = Field(default_factory=ChunkConfig)
    labeler: LabelerConfig = Field(default_factory=LabelerConfig)
    format: FormatConfig = Field(default_factory=FormatConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)
    compute: ComputeConfig = Field(default_factory=ComputeConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)

    def redacted(self) -> dict[str, Any]:
        """The config as plain data with every secret replaced; safe for logs and manifests."""
        data = self.model_dump(mode="json")
        for key in ("access_key_id", "secret_access_key"):
            if data["storage"].get(key) is not None:
                data["storage"][key] = "**redacted**"
        return data


# --------------------------------------------------------------------------- loading


def _format_errors(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            problems.append(f"{key}: unknown key")
        else:
            got = err.get("input")
            shown = "" if isinstance(got, dict) else f" (got {got!r})"
            problems.append(f"{key}: {err['msg']}{shown}")
    return problems


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], value parsed as YAML, so `3`, `true`, `[x, y]` get their types)."""
    if "=" not in item:
        raise ConfigError([f"{item}: an override must look like key.sub=value"])
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"{item}: empty key in override"])
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    problems = []
    for item in overrides:
        try:
            path, value = parse_override(item)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                problems.append(f"{'.'.join(path)}: {part} is not a section")
                break
            node = child
        else:
            node[path[-1]] = value
    if problems:
        raise ConfigError(problems)
    return data


def load_mapping(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"--config: no such file: {p}"])
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(p)) from exc
    if not isinstance(data, dict):
        raise ConfigError([f"<root>: expected a mapping, got {type(data).__name__}"], source=str(p))
    return data


def build_config(model: type[_Strict], data: dict[str, Any], source: str | None = None) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc), source=source) from None


def load_convert_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    inputs: list[str] | None = None,
    output: str | None = None,
) -> ConvertConfig:
    """YAML file (optional) + `--set` overrides + `--input/--output` flags -> validated config."""
    data = load_mapping(path)
    data = apply_overrides(data, list(overrides or []))
    if inputs:
        data.setdefault("input", {})
        if isinstance(data["input"], dict):
            data["input"]["paths"] = list(inputs)
    if output:
        data.setdefault("output", {})
        if isinstance(data["output"], dict):
            data["output"]["uri"] = output
    return build_config(ConvertConfig, data, source=str(path) if path else None)


# Config kinds by command; `condlabel config --kind K` validates and prints any of them.
# Train/eval configs register here too, so one test validates every shipped YAML.
CONFIG_MODELS: dict[str, type[_Strict]] = {"convert": ConvertConfig}


def load_config(kind: str, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    if kind not in CONFIG_MODELS:
        raise ConfigError([f"--kind: unknown config kind {kind!r}; valid: {', '.join(CONFIG_MODELS)}"])
    data = apply_overrides(load_mapping(path), list(overrides or []))
    return build_config(CONFIG_MODELS[kind], data, source=str(path) if path else None)


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted key, default, description) for every leaf field, for `--help` and the README."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.extend(describe_fields(ann, key + "."))
            continue
        default = field.get_default(call_default_factory=True)
        shown = "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        rows.append((key, shown, " ".join((field.description or "").split())))
    return rows
