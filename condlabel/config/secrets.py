"""Keeping secrets out of logs, manifests and error messages.

A secret is any `SecretStr` field, found by walking the config models (so a secret added to a
model is covered without a list to update). Secrets are read as the raw text given, never as
YAML numbers or booleans (`12345678901234567890` stays a string), replaced by `REDACTED` in
`redacted()` dumps, and never echoed by a `ConfigError`. Credentials inside a URL
(`http://user:pass@host`) are removed from every string a dump or a message carries.
"""

from __future__ import annotations

import functools
import re
import types
from typing import Annotated, Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr

REDACTED = "**redacted**"
ANY = "*"  # a list index or a dict key in a secret path

SecretPath = tuple[str, ...]

# scheme://userinfo@ — the userinfo part is what must go (RFC 3986: no `/`, `?`, `#`, `@`).
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@]+@")
_YAML_STR = "tag:yaml.org,2002:str"


@functools.cache
def secret_paths(model: type[BaseModel]) -> frozenset[SecretPath]:
    """Every path (`("storage", "secret_access_key")`) to a `SecretStr` field of `model`."""
    return frozenset(_walk(model, ()))


def _walk(annotation: Any, prefix: SecretPath) -> list[SecretPath]:
    if annotation is SecretStr:
        return [prefix]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [
            path
            for name, field in annotation.model_fields.items()
            for path in _walk(field.annotation, (*prefix, name))
        ]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _walk(args[0], prefix)
    if origin in (Union, types.UnionType):
        return [path for arg in args for path in _walk(arg, prefix)]
    if origin in (list, tuple, set, frozenset):
        return [path for arg in args if arg is not Ellipsis for path in _walk(arg, (*prefix, ANY))]
    if origin is dict and len(args) == 2:
        return _walk(args[1], (*prefix, ANY))
    return []


def _matches(path: SecretPath, loc: tuple[Any, ...]) -> bool:
    return all(p in (ANY, str(part)) for p, part in zip(path, loc, strict=False))


def is_secret(paths: frozenset[SecretPath], loc: tuple[Any, ...]) -> bool:
    """`loc` is exactly a secret field."""
    return any(len(path) == len(loc) and _matches(path, loc) for path in paths)


def touches_secret(paths: frozenset[SecretPath], loc: tuple[Any, ...]) -> bool:
    """`loc` is a secret, lies inside one, or is a section that holds one: its value may carry
    a secret."""
    return any(_matches(path, loc) for path in paths)


def strip_userinfo(text: str) -> str:
    """Every `scheme://user:pass@host` in `text` -> `scheme://host`."""
    return _USERINFO.sub(r"\g<scheme>", text)


def has_userinfo(text: str) -> bool:
    return _USERINFO.search(text) is not None


def redact(data: Any, paths: frozenset[SecretPath], loc: SecretPath = ()) -> Any:
    """A copy of dumped config data with each set secret replaced by `REDACTED` and
    credentials removed from every URL."""
    if loc and is_secret(paths, loc):
        return None if data is None else REDACTED
    if isinstance(data, dict):
        return {key: redact(value, paths, (*loc, str(key))) for key, value in data.items()}
    if isinstance(data, list):
        return [redact(value, paths, (*loc, ANY)) for value in data]
    return strip_userinfo(data) if isinstance(data, str) else data


# A config is a few hundred values; YAML aliases (`*name`) can make a few lines stand for
# billions, which validation would walk value by value.
MAX_EXPANDED_VALUES = 100_000


class TooManyValues(yaml.YAMLError):
    """A document whose aliases expand it beyond `MAX_EXPANDED_VALUES` (a message without any
    of its text)."""


def expanded_size(node: yaml.Node, sizes: dict[int, int] | None = None) -> int:
    """Values `node` stands for once every alias is expanded, counted once per distinct node
    (an alias is the same node object), so counting a bomb costs its lines, not its size."""
    sizes = {} if sizes is None else sizes
    if id(node) in sizes:
        return sizes[id(node)]
    sizes[id(node)] = 0  # a recursive alias counts as nothing more (YAML refuses it anyway)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_size(item, sizes) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(expanded_size(k, sizes) + expanded_size(v, sizes) for k, v in node.value)
    else:
        size = 1
    sizes[id(node)] = min(size, MAX_EXPANDED_VALUES + 1)
    return sizes[id(node)]


def load_yaml(text: str, paths: frozenset[SecretPath], at: SecretPath = ()) -> Any:
    """`yaml.safe_load(text)`, except that a scalar at a secret path stays the text written
    (`at`: where the document sits in the config, for a `--set section={...}` value); a
    document that its aliases expand past `MAX_EXPANDED_VALUES` values is refused
    (`TooManyValues`) before anything walks it."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    if expanded_size(node) > MAX_EXPANDED_VALUES:
        raise TooManyValues(
            f"its aliases (*name) expand it to more than {MAX_EXPANDED_VALUES:,} values; "
            "a configuration holds a few hundred"
        )
    _mark_secret_scalars(node, paths, at)
    return yaml.SafeLoader("").construct_document(node)


def _mark_secret_scalars(node: yaml.Node, paths: frozenset[SecretPath], loc: SecretPath) -> None:
    if isinstance(node, yaml.ScalarNode):
        if is_secret(paths, loc):
            node.tag = _YAML_STR
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _mark_secret_scalars(item, paths, (*loc, ANY))
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and touches_secret(paths, (*loc, key.value)):
                _mark_secret_scalars(value, paths, (*loc, key.value))
