"""Loading configs: a YAML file plus `--set key=value` overrides -> a validated model, every
problem reported at once (`ConfigError`); `keys_help` turns a model into `--help` text.

Secret fields (`secrets.py`) keep the text given in the file or after `--set key=`, and an
error message never shows their value, nor a value holding a URL with credentials."""

from __future__ import annotations

import difflib
import textwrap
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from condlabel.config.common import ConfigError, StorageConfig, StrictModel
from condlabel.config.convert import ConvertConfig
from condlabel.config.distill import DistillConfig
from condlabel.config.eval import EvalConfig
from condlabel.config.labelers import LabelerConfig
from condlabel.config.removed import removed_key_problems
from condlabel.config.secrets import (
    SecretPath,
    TooManyValues,
    has_userinfo,
    is_secret,
    load_yaml,
    secret_paths,
    touches_secret,
)
from condlabel.config.train import TrainConfig

Secrets = frozenset[SecretPath]
NO_SECRETS: Secrets = frozenset()

# Config kinds by command; `condlabel config --kind K` validates and prints any of them, and one
# test validates every shipped YAML through it. `labeler`: the file a cascade's teacher
# (`cascade.teacher_config`) or an evaluation's judge (`labeler_config`) is read from.
CONFIG_MODELS: dict[str, type[StrictModel]] = {
    "convert": ConvertConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "distill": DistillConfig,
    "labeler": LabelerConfig,
}


KeyPath = tuple[str, ...]


def _format_errors(
    exc: ValidationError,
    model: type[BaseModel],
    overridden: frozenset[KeyPath] = frozenset(),
    source: str | None = None,
    skip: list[str] | None = None,
) -> tuple[list[str], bool]:
    """(problems, whether all come from the file): each names its key, says where it came from
    when a `--set` gave it, and an unknown key suggests the closest known one."""
    secrets = secret_paths(model)
    problems, all_from_file = [], True
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        key = ".".join(loc) or "<root>"
        if any(key == s or key.startswith(s + ".") for s in skip or []):
            continue  # reported as a removed key
        by_set = any(p[: len(loc)] == loc or loc[: len(p)] == p for p in overridden)
        all_from_file &= not by_set
        if err["type"] == "extra_forbidden":
            where = " given with --set" if by_set else (f" in {source}" if source else "")
            guess = closest_key(model, key)
            hint = f"; did you mean {guess}?" if guess else ""
            problems.append(f"{key}: unknown key{where}{hint}")
        else:
            where = " (given with --set)" if by_set and source else ""
            problems.append(f"{key}: {err['msg']}{_shown_input(err, secrets)}{where}")
    return problems, all_from_file


def known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of `model`: sections and leaves (through optional sections too)."""
    keys = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        for kind in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(kind, type) and issubclass(kind, BaseModel):
                keys += known_keys(kind, key + ".")
                break
    return keys


def closest_key(model: type[BaseModel], key: str) -> str | None:
    """The known key most like an unknown one (a typo: `chunking.max_word`), if one is close."""
    found = difflib.get_close_matches(key, known_keys(model), n=1, cutoff=0.8)
    return found[0] if found else None


# The most of a value an error message quotes.
_MAX_SHOWN = 120


def _shown_input(err: Any, secrets: Secrets) -> str:
    """` (got VALUE)` for an error message, or nothing when the value may carry a secret; a
    container is described, not quoted (expanded YAML anchors can make it megabytes), and a
    long value is cut."""
    got = err.get("input")
    if isinstance(got, dict) or touches_secret(secrets, tuple(err["loc"])):
        return ""
    if isinstance(got, (list, tuple, set, frozenset)):
        return f" (got a {type(got).__name__} of {len(got):,} items)"
    if isinstance(got, int) and not isinstance(got, bool) and got.bit_length() > 200:
        return f" (got an integer of ~{int(got.bit_length() * 0.30103):,} digits)"
    shown = repr(got)
    if has_userinfo(shown):
        return " (got a URL with credentials, not shown)"
    if len(shown) > _MAX_SHOWN:
        shown = f"{shown[:_MAX_SHOWN]}... ({len(shown):,} characters)"
    return f" (got {shown})"


def parse_override(item: str, secrets: Secrets = NO_SECRETS) -> tuple[list[str], Any]:
    """`a.b=c` -> (["a", "b"], value parsed as YAML, so `3`, `true`, `[x, y]` get their types);
    a secret key (one of `secrets`) keeps the text after `=` as it is."""
    if "=" not in item:
        raise ConfigError([f"{item}: an override must look like key.sub=value"])
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"{key or '<empty>'}=...: empty key in override"])
    path = key.split(".")
    if is_secret(secrets, tuple(path)):
        return path, raw
    try:
        value = load_yaml(raw, secrets, tuple(path)) if raw.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):
        value = raw  # not YAML (or an integer of thousands of digits): checked as text
    return path, value


def apply_overrides(
    data: dict[str, Any], overrides: list[str], secrets: Secrets = NO_SECRETS
) -> dict[str, Any]:
    problems = []
    for item in overrides:
        try:
            path, value = parse_override(item, secrets)
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


def load_mapping(path: str | Path | None, secrets: Secrets = NO_SECRETS) -> dict[str, Any]:
    if path is None:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError([f"--config: no such file: {p}"])
    try:
        data = load_yaml(p.read_text(), secrets) or {}
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {_yaml_problem(exc)}"], source=str(p)) from None
    except (ValueError, RecursionError) as exc:  # an integer of thousands of digits, say
        problem = f"not usable YAML: {type(exc).__name__}: {str(exc)[:200]}"
        raise ConfigError([problem], source=str(p)) from None
    if not isinstance(data, dict):
        raise ConfigError([f"<root>: expected a mapping, got {type(data).__name__}"], source=str(p))
    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's snippet of the line (it may hold a secret)."""
    if isinstance(exc, TooManyValues):
        return str(exc)
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    mark = exc.problem_mark or exc.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    return f"{exc.problem or exc.context or 'syntax error'}{where}"


def build_config(
    model: type[StrictModel],
    data: dict[str, Any],
    source: str | None = None,
    overrides: list[str] | None = None,
    kind: str | None = None,
) -> Any:
    """Validate; every problem names its key and, when `overrides` (the `--set` items) gave
    it, says so rather than blaming the file `source`; a removed key names what replaces it
    (the keys removed from `kind`, by default the kind of `model`)."""
    if kind is None:
        kind = next((k for k, m in CONFIG_MODELS.items() if m is model), "")
    removed = removed_key_problems(kind, data)
    skip = [problem.split(": ", 1)[0] for problem in removed]
    try:
        built = model.model_validate(data)
    except ValidationError as exc:
        paths = frozenset(_override_path(item) for item in overrides or [])
        problems, from_file = _format_errors(exc, model, paths, source, skip)
        from_file = from_file and not (removed and paths)
        raise ConfigError(removed + problems, source=source if from_file else None) from None
    if removed:
        raise ConfigError(removed, source=source)
    _attach_files(built, source)
    return built


def _override_path(item: str) -> KeyPath:
    return tuple(part.strip() for part in item.split("=", 1)[0].strip().split("."))


def _attach_files(built: Any, source: str | None) -> None:
    """Read the labeler files a config names (a cascade's teacher, an evaluation's judge)."""
    if isinstance(built, ConvertConfig) and built.cascade.teacher_config:
        key = "cascade.teacher_config"
        built.cascade.attach_teacher(load_labeler_file(built.cascade.teacher_config, source, key))
    if isinstance(built, EvalConfig) and built.labeler_config:
        built.attach_labeler(load_labeler_file(built.labeler_config, source, "labeler_config"))


def load_labeler_file(path: str, source: str | None, key: str) -> LabelerConfig:
    """A labeler config file named by `key` of the config file `source`: a relative path is
    looked up beside `source`, then in the working directory."""
    given = Path(path)
    candidates = [given]
    if not given.is_absolute() and source:
        candidates.insert(0, Path(source).parent / given)
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        tried = ", ".join(str(c) for c in candidates)
        raise ConfigError([f"{key}: no such labeler config file: {path} (tried {tried})"], source)
    try:
        return build_config(LabelerConfig, load_mapping(found), source=str(found))
    except ConfigError as exc:
        problems = [f"{key} ({found}): {problem}" for problem in exc.problems]
        raise ConfigError(problems, source=source) from None


def load_convert_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    inputs: list[str] | None = None,
    output: str | None = None,
) -> ConvertConfig:
    """YAML file (optional) + `--set` overrides + `--input/--output` flags -> validated config."""
    secrets = secret_paths(ConvertConfig)
    data = apply_overrides(load_mapping(path, secrets), list(overrides or []), secrets)
    if inputs:
        data.setdefault("input", {})
        if isinstance(data["input"], dict):
            data["input"]["paths"] = list(inputs)
    if output:
        data.setdefault("output", {})
        if isinstance(data["output"], dict):
            data["output"]["uri"] = output
    return build_config(ConvertConfig, data, str(path) if path else None, list(overrides or []))


def load_config(
    kind: str, path: str | Path | None = None, overrides: list[str] | None = None
) -> Any:
    if kind not in CONFIG_MODELS:
        raise ConfigError(
            [f"--kind: unknown config kind {kind!r}; valid: {', '.join(CONFIG_MODELS)}"]
        )
    model = CONFIG_MODELS[kind]
    secrets = secret_paths(model)
    data = apply_overrides(load_mapping(path, secrets), list(overrides or []), secrets)
    return build_config(model, data, str(path) if path else None, list(overrides or []))


def load_train_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """YAML file (optional) + `--set` overrides -> validated training config."""
    return load_config("train", path, overrides)


def load_eval_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> EvalConfig:
    """YAML file (optional) + `--set` overrides -> validated evaluation config."""
    return load_config("eval", path, overrides)


class _StorageSection(StrictModel):
    storage: StorageConfig = Field(default_factory=StorageConfig)


def load_storage_config(
    path: str | Path | None = None, overrides: list[str] | None = None
) -> StorageConfig:
    """Only the `storage:` section of a config file of any kind, plus `--set storage.key=value`:
    for commands that just read or write objects (inspect, status, merge)."""
    overrides = list(overrides or [])
    storage_keys = [item for item in overrides if item.strip().startswith("storage.")]
    problems = [
        f"{item.split('=', 1)[0].strip()}: this command reads only the storage section; "
        "--set takes storage.* keys"
        for item in overrides
        if item not in storage_keys
    ]
    source = str(path) if path else None
    secrets = secret_paths(_StorageSection)
    data = {"storage": load_mapping(path, secrets).get("storage") or {}}
    try:
        data = apply_overrides(data, storage_keys, secrets)
        storage = build_config(_StorageSection, data, source, storage_keys, "storage").storage
    except ConfigError as exc:
        problems.extend(exc.problems)
    if problems:
        raise ConfigError(problems, source=source)
    return storage


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
        if isinstance(default, list) and any(isinstance(d, BaseModel) for d in default):
            default = [d.model_dump(mode="json", exclude_unset=True) for d in default]
        shown = (
            "null" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
        )
        shown = shown.removesuffix("\n...").removesuffix("...").strip()
        rows.append((key, shown, " ".join((field.description or "").split())))
    return rows


def keys_help(model: type[BaseModel], width: int = 100) -> str:
    """Every key of `model` with its description and default: the epilog of a command's --help."""
    rows = describe_fields(model)
    key_width = max(len(k) for k, _, _ in rows)
    lines = ["configuration keys (YAML file or --set key=value; default in brackets):"]
    for key, default, doc in rows:
        wrapped = textwrap.wrap(f"{doc} [{default}]", width - key_width - 4) or [f"[{default}]"]
        lines.append(f"  {key.ljust(key_width)}  {wrapped[0]}")
        lines.extend(f"  {' ' * key_width}  {more}" for more in wrapped[1:])
    return "\n".join(lines)
