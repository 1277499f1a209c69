"""The shared prefix module: its import direction, and how a template renders labels and kept
input fields."""

from __future__ import annotations

import ast
from pathlib import Path

import condlabel.prefix

# The prefix is a concept of the output contract: conversion, training and evaluation import
# it, so it may import only what sits below them.
ALLOWED = ("condlabel.config", "condlabel.schema", "condlabel.tags")


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("condlabel")}


def test_prefix_imports_only_config_schema_and_tags():
    found = _imports(Path(condlabel.prefix.__file__))
    assert found
    assert [n for n in found if not n.startswith(ALLOWED)] == []


def test_training_and_evaluation_take_the_prefix_from_the_shared_module():
    root = Path(condlabel.prefix.__file__).parent
    for path in sorted((root / "train").glob("*.py")):
        assert not [n for n in _imports(path) if n.startswith("condlabel.convert")], path
    for path in sorted((root / "distill").glob("*.py")):
        assert "condlabel.convert.format" not in _imports(path), path
