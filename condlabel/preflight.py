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

from pydantic import BaseModel, ValidationError

from condlabel.classifiers import classifier_backend
from condlabel.components import Extra, Weights
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
from condlabel.labelers import backend
from condlabel.labelers.ct2 import CT2_WEIGHTS
from condlabel.models import ADAPTER_PICKLED, ADAPTER_WEIGHTS, HF_INSTALL_HINT, is_remote
from condlabel.storage import StorageError, resolve, split_uri

MODEL_WEIGHTS = "model.safetensors"
SHARDED_WEIGHTS_INDEX = "model.safetensors.index.json"


TRAIN = Extra(("torch", "transformers", "peft", "ray"), "pip install 'condlabel[train]'")
# What the merge command builds (`condlabel merge`): the hf labeler's and the ct2 backend's.
HF_LABELER = Extra(("torch", "transformers", "peft"), HF_INSTALL_HINT)
CT2 = Extra(("ctranslate2", "transformers"), CT2_INSTALL_HINT)
HF_CLASSIFIER = Extra(("torch", "transformers"), HF_INSTALL_HINT)


def preflight(cfg: ConvertConfig | TrainConfig | EvalConfig) -> None:
    """Raise `ConfigError` listing every component that could not be built (see the module),
    and the tag vocabulary's problem when the config names one that cannot be used."""
    problems: list[str] = []
    extras, models, plugin_problems = _components(cfg)
    steps = (
        lambda: check(extras, models, storage=cfg.storage, problems=plugin_problems),
        lambda: _vocabulary(cfg),
    )
    for step in steps:
        try:
            step()
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError(problems)


def _vocabulary(cfg: ConvertConfig | TrainConfig | EvalConfig) -> None:
    """Read the tag vocabulary (cached for the run), so a file that cannot be used stops the
    run before Ray starts or anything is written."""
    from condlabel.tags.vocabulary import load_vocabulary

    if isinstance(cfg, ConvertConfig):
        uri, key = cfg.format.tag_vocabulary, "format.tag_vocabulary"
    elif isinstance(cfg, TrainConfig):
        uri, key = cfg.data.format.tag_vocabulary, "data.format.tag_vocabulary"
    else:
        return
    if uri:
        load_vocabulary(uri, cfg.storage, key)


def check(
    extras: list[tuple[str, Extra]],
    models: list[Weights],
    storage: StorageConfig | None = None,
    problems: list[str] | None = None,
) -> None:
    """Raise `ConfigError` listing every missing extra, every model without its weights, and
    the `problems` found before."""
    problems = list(problems or [])
    problems += [p for key, extra in extras for p in extra_problems(key, extra)]
    problems += [p for weights in models for p in weights_problems(weights, storage)]
    if problems:
        raise ConfigError(problems)


def _components(
    cfg: ConvertConfig | TrainConfig | EvalConfig,
) -> tuple[list[tuple[str, Extra]], list[Weights], list[str]]:
    """(key, extra) and model settings of what the run would build (from the registries of
    labelers and classifiers), and the problems of plugins' sections."""
    extras: list[tuple[str, Extra]] = []
    models: list[Weights] = []
    problems: list[str] = []
    if isinstance(cfg, TrainConfig):
        extras.append(("model.path", TRAIN))
        models.append(Weights("model.path", cfg.model.path))
        return extras, models, problems
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
        problems += _labeler(cfg.labeler, at, extras, models)
    if isinstance(cfg, ConvertConfig) and cfg.cascade.enabled:
        # the teacher's actors start after the student's: a teacher that cannot load would
        # fail the run only once chunks are routed to it
        at = f"cascade.teacher_config ({cfg.cascade.teacher_config}): "
        problems += _labeler(cfg.cascade.teacher, at, extras, models)
    for i, classifier in enumerate(cfg.classifiers):
        entry = classifier_backend(classifier.backend)
        at = f"classifiers.{i}."
        if entry.extra:
            extras.append((f"{at}backend", entry.extra))
        models += list(entry.weights(classifier, at))
        problems += _plugin_problems(entry.config, classifier, at)
    return extras, models, problems


def _labeler(
    labeler: LabelerConfig, at: str, extras: list[tuple[str, Extra]], models: list[Weights]
) -> list[str]:
    """Add a labeler's extra and weights (from its registry entry); its section's problems."""
    entry = backend(labeler.backend)
    if entry.extra:
        extras.append((f"{at}backend", entry.extra))
    models += list(entry.weights(labeler, at))
    return _plugin_problems(entry.config, labeler, at)


def _plugin_problems(
    config: type | None, cfg: LabelerConfig | ClassifierConfig, at: str
) -> list[str]:
    """A plugin backend's section checked with its own config class (a built-in backend's
    section was checked when the config loaded)."""
    if config is None or cfg.plugin_options is None or not issubclass(config, BaseModel):
        return []
    try:
        config.model_validate(cfg.plugin_options)
    except ValidationError as exc:
        where = f"{at}{cfg.backend}."
        return [
            f"{where}{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        ]
    return []


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
