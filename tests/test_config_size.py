"""How many keys a user can set per command: each is a concept to learn and a line of --help,
so the count is held under a limit, counted the way a user meets them (a section's keys one by
one, the fields of one list item of a section such as `classifiers` once)."""

from __future__ import annotations

import types
import typing

import pytest
from pydantic import BaseModel

from condlabel.config import ConvertConfig, DistillConfig, EvalConfig, TrainConfig

LIMITS = {ConvertConfig: 120, EvalConfig: 50, TrainConfig: 60, DistillConfig: 45}


def _section(annotation: typing.Any) -> type[BaseModel] | None:
    """The model a field holds: itself, an optional one, or a list of them."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _section(args[0]) if len(args) == 1 else None
    if origin is list:
        return _section(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def settable_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        section = _section(field.annotation)
        keys += settable_keys(section, f"{prefix}{name}.") if section else [prefix + name]
    return keys


def test_the_counter_sees_nested_optional_and_listed_sections():
    class Leaf(BaseModel):
        a: int = 0
        b: int = 0

    class Root(BaseModel):
        x: int = 0
        one: Leaf = Leaf()
        maybe: Leaf | None = None
        many: list[Leaf] = []
        plain: list[int] = []

    assert settable_keys(Root) == [
        "x", "one.a", "one.b", "maybe.a", "maybe.b", "many.a", "many.b", "plain"
    ]  # fmt: skip


@pytest.mark.parametrize("model", list(LIMITS), ids=lambda m: m.__name__)
def test_settable_keys_stay_under_the_limit(model):
    count = len(settable_keys(model))
    assert count <= LIMITS[model], f"{model.__name__}: {count} settable keys"
