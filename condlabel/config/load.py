"""Loading configs: a YAML file plus `--set key=value` overrides -> a validated model, every
problem reported at once (`ConfigError`); `keys_help` turns a model into `--help` text."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from condlabel.config.common import ConfigError, StorageConfig, StrictModel
from condlabel.config.convert import ConvertConfig
from condlabel.config.eval import EvalConfig
from condlabel.config.train import TrainConfig

# Config kinds by command; `condlabel config --kind K` validates and prints any of them, and one
# test validates every shipped YAML through it.
CONFIG_MODELS: dict[str, type[StrictModel]] = {
    "convert": ConvertConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
}


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


def build_config(model: type[StrictModel], data: dict[str, Any], source: str | None = None) -> Any:
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


def load_config(
    kind: str, path: str | Path | None = None, overrides: list[str] | None = None
) -> Any:
    if kind not in CONFIG_MODELS:
        raise ConfigError(
            [f"--kind: unknown config kind {kind!r}; valid: {', '.join(CONFIG_MODELS)}"]
        )
    data = apply_overrides(load_mapping(path), list(overrides or []))
    return build_config(CONFIG_MODELS[kind], data, source=str(path) if path else None)


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
    data = {"storage": load_mapping(path).get("storage") or {}}
    try:
        storage = build_config(_StorageSection, apply_overrides(data, storage_keys), source).storage
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
