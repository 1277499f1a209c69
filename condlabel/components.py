"""What a registry entry of a component kind (labelers, classifiers) says about a backend
besides how to build it: the optional packages it imports (`Extra`), the model settings the
preflight checks (`Weights`), and the entry-point lookup through which third-party packages add
backends. The registries themselves are `condlabel.labelers.BACKENDS` and
`condlabel.classifiers.CLASSIFIERS`; `condlabel.preflight` and the run manifest read them.

A third-party package registers a backend in its own metadata, e.g. in pyproject.toml:

    [project.entry-points."condlabel.labelers"]
    echo = "condlabel_echo:labeler"       # a condlabel.labelers.Backend

    [project.entry-points."condlabel.classifiers"]
    word = "condlabel_echo:classifier"    # a condlabel.classifiers.ClassifierBackend

and is configured as a built-in one: `labeler: {backend: echo, echo: {...}}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

LABELER_GROUP = "condlabel.labelers"
CLASSIFIER_GROUP = "condlabel.classifiers"


@dataclass(frozen=True)
class Extra:
    """Packages a component imports, and the line that installs them."""

    modules: tuple[str, ...]
    install: str


@dataclass(frozen=True)
class Weights:
    """A model (or adapter) setting to check: its key, where it is, and what it must hold."""

    key: str
    uri: str | None
    adapter: bool = False
    ct2: bool = False
    """A CTranslate2 model directory (its own `model.bin`, not a pickle)."""


def plugin_names(group: str) -> list[str]:
    """Backend names third-party packages declare in `group` (nothing is imported)."""
    return sorted({ep.name for ep in entry_points(group=group)})


def load_plugin(group: str, name: str) -> Any | None:
    """The object the entry point `name` of `group` names (its package is imported), or None."""
    for ep in entry_points(group=group, name=name):
        return ep.load()
    return None
