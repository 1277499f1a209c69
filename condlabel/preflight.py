"""Checks before any Ray start or work: each configured component can be built here.

`preflight(cfg)` takes a convert, train or eval config and checks, for the labeler (and the
cascade's teacher when the cascade is on), every classifier and the model to train or
evaluate (`check` does the same for `condlabel merge`):
- the optional packages the component imports are installed (by spec, without importing
  them): a missing one is named with its `pip install 'condlabel[extra]'` line;
- a model or adapter in a local directory is there and holds safetensors weights (checkpoints
  with pickled weights only are refused, as the loaders refuse them);
- a model or adapter under an object-storage prefix (`s3://`) is listed, never downloaded, and
  checked the same way.
Hub ids are left to `from_pretrained`: whether a hub is reachable is known only there.

Every problem is collected and raised at once as a `ConfigError` (exit 2), each naming its key;
a prefix that cannot be listed raises `StorageError` (exit 3). No Ray, no model load.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from condlabel.config import (
    ClassifierConfig,
    ConfigError,
    ConvertConfig,
    EvalConfig,
    LabelerConfig,
    StorageConfig,
    TrainConfig,
)
from condlabel.ct2_convert import CT2_INSTALL_HINT
from condlabel.labelers.ct2 import CT2_WEIGHTS
from condlabel.labelers.vllm import VLLM_INSTALL_HINT
from condlabel.models import ADAPTER_PICKLED, ADAPTER_WEIGHTS, HF_INSTALL_HINT, is_remote
from condlabel.storage import StorageError, resolve, split_uri

MODEL_WEIGHTS = "model.safetensors"
SHARDED_WEIGHTS_INDEX = "model.safetensors.index.json"


@dataclass(frozen=True)
class Extra:
    """Packages a component imports, and the line that installs them."""

    modules: tuple[str, ...]
    install: str


HF_LABELER = Extra(("torch", "transformers", "peft"), HF_INSTALL_HINT)
HF_CLASSIFIER = Extra(("torch", "transformers"), HF_INSTALL_HINT)
VLLM = Extra(("vllm",), VLLM_INSTALL_HINT)
CT2 = Extra(("ctranslate2", "transformers"), CT2_INSTALL_HINT)
VADER = Extra(("vaderSentiment",), "pip install 'condlabel[classify]'")
KEYPHRASE = Extra(("yake",), "pip install condlabel")  # a core dependency: a broken install
TRAIN = Extra(("torch", "transformers", "peft", "ray"), "pip install 'condlabel[train]'")

LABELER_EXTRAS = {"keyphrase": KEYPHRASE, "hf": HF_LABELER, "vllm": VLLM, "ct2": CT2}
CLASSIFIER_EXTRAS = {"vader": VADER, "hf": HF_CLASSIFIER}


@dataclass(frozen=True)
class Weights:
    """A model (or adapter) setting to check: its key, where it is, and what it must hold."""

    key: str
    uri: str | None
    adapter: bool = False
    ct2: bool = False
    """A CTranslate2 model directory (its own `model.bin`, not a pickle)."""


def preflight(cfg: ConvertConfig | TrainConfig | EvalConfig) -> None:
    """Raise `ConfigError` listing every component that could not be built (see the module)."""
    check(*_components(cfg), storage=cfg.storage)


def check(
    extras: list[tuple[str, Extra]], models: list[Weights], storage: StorageConfig | None = None
) -> None:
    """Raise `ConfigError` listing every missing extra and every model without its weights."""
    problems = [p for key, extra in extras for p in extra_problems(key, extra)]
    problems += [p for weights in models for p in weights_problems(weights, storage)]
    if problems:
        raise ConfigError(problems)


def _components(
    cfg: ConvertConfig | TrainConfig | EvalConfig,
) -> tuple[list[tuple[str, Extra]], list[Weights]]:
    """(key, extra) and model settings of what the run would build."""
    extras: list[tuple[str, Extra]] = []
    models: list[Weights] = []
    if isinstance(cfg, TrainConfig):
        extras.append(("model.path", TRAIN))
        models.append(Weights("model.path", cfg.model.path))
        return extras, models
    if isinstance(cfg, EvalConfig):
        extras.append(("model", HF_CLASSIFIER))
        models.append(Weights("model", cfg.model))
    if cfg.labeler is not None:
        # a conversion's labeler section, or the file an evaluation's judge is read from
        at = (
            f"labeler_config ({cfg.labeler_config}): "
            if isinstance(cfg, EvalConfig)
            else "labeler."
        )
        extras += _labeler_extras(cfg.labeler, at)
        models += list(_labeler_weights(cfg.labeler, at))
    if isinstance(cfg, ConvertConfig) and cfg.cascade.enabled:
        # the teacher's actors start after the student's: a teacher that cannot load would
        # fail the run only once chunks are routed to it
        at = f"cascade.teacher_config ({cfg.cascade.teacher_config}): "
        extras += _labeler_extras(cfg.cascade.teacher, at)
        models += list(_labeler_weights(cfg.cascade.teacher, at))
    for i, classifier in enumerate(cfg.classifiers):
        extras.append((f"classifiers.{i}.backend", CLASSIFIER_EXTRAS[classifier.backend]))
        models += list(_classifier_weights(i, classifier))
    return extras, models


def _labeler_extras(labeler: LabelerConfig, at: str = "labeler.") -> list[tuple[str, Extra]]:
    extra = LABELER_EXTRAS.get(labeler.backend)
    return [(f"{at}backend", extra)] if extra else []


def _labeler_weights(labeler: LabelerConfig, at: str = "labeler.") -> Iterator[Weights]:
    """The model settings of a labeler; `at` names where it is configured (`labeler.`, or a
    labeler file and the key that names it)."""
    if labeler.backend in ("hf", "vllm"):
        options = labeler.hf if labeler.backend == "hf" else labeler.vllm
        yield Weights(f"{at}model", labeler.model)
        yield Weights(f"{at}{labeler.backend}.adapter", options.adapter, adapter=True)
    if labeler.backend == "ct2":
        yield Weights(f"{at}model", labeler.model, ct2=True)


def _classifier_weights(index: int, classifier: ClassifierConfig) -> Iterator[Weights]:
    if classifier.backend == "hf":
        yield Weights(f"classifiers.{index}.hf.model", classifier.hf.model)


def extra_problems(key: str, extra: Extra) -> list[str]:
    """`[]`, or one problem naming the missing packages and the install line."""
    missing = [name for name in extra.modules if not importable(name)]
    if not missing:
        return []
    return [f"{key}: needs {', '.join(missing)}, which is not installed: {extra.install}"]


def importable(module: str) -> bool:
    """Whether `import module` would find it, without importing it (torch takes seconds)."""
    if module in sys.modules:
        return sys.modules[module] is not None  # None: an import known to fail
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def weights_problems(weights: Weights, storage: StorageConfig | None = None) -> list[str]:
    """`[]`, or what is wrong with a local or object-storage model directory."""
    if not weights.uri:
        return []  # unset: the config's own validation says when one is required
    wanted = ADAPTER_WEIGHTS if weights.adapter else MODEL_WEIGHTS
    if is_remote(weights.uri):
        where, names = weights.uri, _listed_names(weights, storage)
        if names is None:
            return [f"{weights.key}: no files under {where}"]
    else:
        where = split_uri(weights.uri)[1]
        if not _looks_local(weights.uri):
            return []  # a hub id
        if not os.path.isdir(where):
            return [f"{weights.key}: no such directory: {where}"]
        names = set(os.listdir(where))
    if weights.ct2:
        if CT2_WEIGHTS in names:
            return []
        return [
            f"{weights.key}: no {CT2_WEIGHTS} in {where}: not a CTranslate2 model; write one "
            "with `condlabel merge --format ct2`"
        ]
    if _has_weights(names, weights.adapter):
        return []
    pickled = sorted(n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt")))
    found = f" (found: {', '.join(pickled)})" if pickled else ""
    return [
        f"{weights.key}: no {wanted} in {where}{found}; pickle-only checkpoints are refused: "
        "save the model once with `save_pretrained(dir, safe_serialization=True)` on a "
        "trusted machine"
    ]


def _has_weights(names: set[str], adapter: bool) -> bool:
    if adapter:  # a peft .bin is read with the restricted unpickler, converted once
        return ADAPTER_WEIGHTS in names or ADAPTER_PICKLED in names
    return SHARDED_WEIGHTS_INDEX in names or any(n.endswith(".safetensors") for n in names)


def _looks_local(uri: str) -> bool:
    """A path rather than a hub id (`org/name`): file://, absolute, ~ or ./, or existing."""
    if uri.startswith(("file://", "/", "~", "./", "../", ".\\")) or os.path.isabs(uri):
        return True
    return os.path.exists(os.path.expanduser(uri))


def _listed_names(weights: Weights, storage: StorageConfig | None) -> set[str] | None:
    """Names of the files right under a remote prefix (None: nothing there)."""
    fs, root = resolve(str(weights.uri), storage)
    root = root.rstrip("/")
    try:
        listing = fs.ls(root, detail=True)
    except FileNotFoundError:
        return None
    except Exception as exc:  # unreachable endpoint, denied, throttled: a storage problem
        raise StorageError(
            f"{weights.key}: {weights.uri} cannot be listed ({type(exc).__name__}: {exc})"
        ) from exc
    names = {posixpath.basename(i["name"].rstrip("/")) for i in listing if i.get("type") == "file"}
    return names or None
