"""Adapters published as `adapter_model.bin` (peft before safetensors), read safely, converted once.

The reference adapter (`rallio67/condlabeler-alpha`, early 2023) ships its weights as a torch
pickle. Such a file is read with torch's restricted unpickler (`torch.load(weights_only=True)`):
tensors and plain containers only. Any other object (a class, a function such as `os.system`)
is refused with `AdapterWeightsError` before it is built; full pickle loading is never used.
The tensors are written to `adapter_model.safetensors` in a directory of the node's model cache,
beside copies of the adapter's other files (config, tokenizer), keyed by the contents of all of them (a changed `adapter_config.json` is another
adapter); the loaders then read safetensors as for any other adapter. A file lock per content
makes concurrent actors convert once.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_PICKLED = "adapter_model.bin"
CONVERTED_MARKER = ".condlabel-converted"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


class AdapterWeightsError(FileNotFoundError):
    """No adapter weights condlabel will load: neither safetensors nor a `.bin` of plain
    tensors. (A FileNotFoundError: callers treat it as "no usable weights there".)"""


def load_restricted(path: str | Path, what: str) -> dict:
    """The tensors of a torch pickle, read with the restricted unpickler; anything but a flat
    mapping of names to tensors is refused with `AdapterWeightsError` naming `what`."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - UnpicklingError, RuntimeError (bad zip), EOFError
        raise AdapterWeightsError(
            f"{what}: {Path(path).name} refused by torch's restricted loader "
            f"({_reason(exc)}). condlabel loads adapter weights from safetensors only, or from a "
            ".bin that holds plain tensors (converted once to safetensors); it never unpickles "
            "objects or code. If you trust this file, convert it yourself on an isolated machine "
            "(peft `save_pretrained(dir, safe_serialization=True)`) and point `adapter` there."
        ) from None  # torch's own message advises loading the file unrestricted
    bad = [
        f"{key!r}: {type(value).__name__}"
        for key, value in (state.items() if isinstance(state, dict) else [])
        if not isinstance(key, str) or type(value) is not torch.Tensor
    ]
    if not isinstance(state, dict) or bad or not state:
        shape = ", ".join(bad[:3]) if bad else type(state).__name__
        raise AdapterWeightsError(
            f"{what}: {Path(path).name} is not a mapping of parameter names to tensors "
            f"(found {shape}); refusing it"
        )
    return state


_ADVICE = ("weights_only", "re-running", "trusted source", "trust the source", "alternatively")
_NOISE = ("check the documentation", "please file")


def _reason(exc: Exception) -> str:
    """What torch's restricted loader refused, without its advice: re-running with
    `weights_only=False` or allowlisting the class is exactly what must not be done here."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    useful = []
    for line in text.splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error: ")
        lowered = line.lower()
        if not line or any(word in lowered for word in _ADVICE + _NOISE):
            continue
        # "... was not an allowed global by default. Please use add_safe_globals(...)": keep
        # what was found, drop how to let it through.
        useful.append(re.split(r"\.\s+Please use", line)[0].rstrip("."))
    return f"{type(exc).__name__}: {useful[0] if useful else 'unreadable'}"


def converted_adapter(path: str | Path, cache: Path, what: str) -> str:
    """A directory holding the adapter at `path` with its `.bin` weights as safetensors:
    converted once per content under `cache/converted/`, then reused."""
    from filelock import FileLock

    source = Path(path)
    pickled = source / ADAPTER_PICKLED
    root = cache / "converted"
    target = root / _content_key(source)
    (root / ".locks").mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".locks" / f"{target.name}.lock")):
        if (target / CONVERTED_MARKER).exists():
            return str(target)
        state = load_restricted(pickled, what)
        _write_converted(source, state, target)
    return str(target)


def _defining_files(source: Path) -> list[Path]:
    """The files that make the adapter what it is: its `.bin` weights and every file copied
    beside the converted weights (adapter_config.json, tokenizer files, ...)."""
    return sorted(
        item
        for item in source.iterdir()
        if item.is_file()
        and not item.name.startswith(".")  # markers of the model cache, not the adapter
        and (item.name == ADAPTER_PICKLED or item.suffix not in _PICKLE_SUFFIXES)
    )


def _content_key(source: Path) -> str:
    """A cache key from the names and contents of every defining file: an adapter whose
    config changed (its `lora_alpha`, its target modules) is another adapter, even with the
    same weights."""
    digest = hashlib.sha256()
    for item in _defining_files(source):
        digest.update(f"\0{item.name}\0{item.stat().st_size}\0".encode())
        with open(item, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:24]


def _write_converted(source: Path, state: dict, target: Path) -> None:
    """Other files copied, weights as safetensors; built beside `target` and renamed into it."""
    from safetensors.torch import save_file

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=target.parent))
    try:
        for item in _defining_files(source):
            if item.name != ADAPTER_PICKLED:
                shutil.copy2(item, tmp / item.name)
        # save_file refuses tensors that share storage (tied or sliced views): own copies.
        tensors = {key: value.detach().clone().contiguous() for key, value in state.items()}
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format": "pt"})
        (tmp / CONVERTED_MARKER).write_text(str(source))
        if target.exists():
            shutil.rmtree(target)
        tmp.replace(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
