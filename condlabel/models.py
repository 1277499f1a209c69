"""Models, one way: fetch (a locked, node-wide cache), load, merge, device and dtype.

A model or adapter source is a local directory, an object-storage prefix (`s3://`) or a hub id:
- local directories (and `file://`) are used in place;
- an object-storage prefix is downloaded once per node into a cache keyed by the URI and the
  listing (name, size, ETag/mtime), so a re-exported model at the same URI is fetched again and
  an unchanged one is not; a file lock per URI makes concurrent actors wait for the one that
  downloads instead of fetching it again, and no object key may write outside its cache entry;
- a hub id is left to `from_pretrained` (clusters that reach a hub); adapters from a hub are
  fetched without their pickled weight files.
`upload_directory` is the way back (a merged or trained model exported to s3://).

Weights are read from safetensors: models with `use_safetensors=True`; adapters from
`adapter_model.safetensors`, or from an `adapter_model.bin` read with torch's restricted
unpickler (tensors only) and converted once to safetensors in the cache (`adapter_bin`).
Nothing here unpickles anything but tensors.

torch/transformers/peft are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condlabel.adapter_bin import (
    ADAPTER_PICKLED,
    ADAPTER_WEIGHTS,
    AdapterWeightsError,
    converted_adapter,
)
from condlabel.model_export import COMPLETE_MARKER, check_output_free, upload_directory
from condlabel.storage import StorageError, resolve, split_uri

if TYPE_CHECKING:
    from condlabel.config import StorageConfig

log = logging.getLogger("condlabel")

MERGE_INFO = "condlabel_merge.json"
HF_INSTALL_HINT = "pip install 'condlabel[hf]'"
_LOCK_TIMEOUT_S = 6 * 3600  # a 40 GB model over a slow link; the holder's death frees the lock
_DTYPES = ("float32", "bfloat16", "float16")
CT2_FLOAT16 = ("float16", "int8_float16")
"""CTranslate2 compute types that run activations in float16."""


# --------------------------------------------------------------------------- fetch


def cache_root() -> Path:
    return Path(os.environ.get("CONDLABEL_CACHE", Path.home() / ".cache" / "condlabel")) / "models"


def is_remote(uri: str) -> bool:
    return "://" in uri and split_uri(uri)[0] != "file"


def fetch_model(
    uri: str, storage: StorageConfig | None = None, cache_dir: str | Path | None = None
) -> str:
    """A local directory or hub id that `from_pretrained` can open.

    Local paths (and file://) are returned as they are; anything else that is not an existing
    directory nor a remote URI is taken as a hub id. Remote prefixes are downloaded into the
    node's cache under an exclusive file lock: the first process downloads (into a temporary
    directory renamed into place when complete), the others wait on the lock and then find the
    complete copy. The lock is an OS file lock, so it is released if its holder dies.
    """
    if not is_remote(uri):
        _, path = split_uri(uri)
        if uri.startswith("file://") or os.path.isdir(path):
            if not os.path.isdir(path):
                raise StorageError(f"model {uri}: no such directory")
            return path
        return uri  # a hub id such as "gpt2" or "unitary/toxic-bert"
    from filelock import FileLock, Timeout

    root = Path(cache_dir) if cache_dir else cache_root()
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    lock = FileLock(str(locks / f"{key}.lock"), timeout=_LOCK_TIMEOUT_S)
    try:
        with lock:
            return _download(uri, storage, root)
    except Timeout as exc:
        raise RuntimeError(
            f"model {uri}: waited {_LOCK_TIMEOUT_S} s for another process downloading it into "
            f"{root} (lock {lock.lock_file}); remove a stale cache entry there and retry"
        ) from exc


def _download(uri: str, storage: StorageConfig | None, cache: Path) -> str:
    """Download the files under `uri` into `cache/<version>` (once); returns that directory."""
    fs, root = resolve(uri, storage)
    root = root.rstrip("/")
    try:
        listing = fs.find(root, detail=True)
    except (OSError, PermissionError) as exc:
        raise StorageError(f"model {uri}: cannot be listed ({type(exc).__name__}: {exc})") from exc
    # Each key's own spelling under the prefix (relpath would normalise `a/../b` into another key).
    files = {
        p[len(root) + 1 :] if p.startswith(root + "/") else posixpath.relpath(p, root): info
        for p, info in listing.items()
        if info.get("type", "file") == "file" and not posixpath.basename(p).startswith(".")
    }
    if not files:
        raise StorageError(f"model {uri}: no files under this prefix")
    for rel in files:
        _inside(Path("/cache-entry"), rel, uri, root)  # refuse before anything is written
    version = hashlib.sha256(uri.encode())
    for rel in sorted(files):
        info = files[rel]
        stamp = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
        version.update(f"\0{rel}\0{info.get('size')}\0{stamp}".encode())
    target = cache / version.hexdigest()[:24]
    if (target / COMPLETE_MARKER).exists():
        return str(target)
    cache.mkdir(parents=True, exist_ok=True)
    # Download beside the target and rename: concurrent actors on one node never see half a model.
    tmp = Path(tempfile.mkdtemp(prefix=".partial-", dir=cache))
    try:
        for rel in sorted(files):
            dest = _inside(tmp, rel, uri, root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(posixpath.join(root, rel), str(dest))
        (tmp / COMPLETE_MARKER).write_text(uri)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / COMPLETE_MARKER).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def _inside(directory: Path, rel: str, uri: str, root: str) -> Path:
    """`directory / rel`, refused when an object key (`..` segments, an absolute path) would
    take it out of `directory`: a listing must never write files elsewhere on the node."""
    dest = Path(os.path.normpath(directory / rel))
    if not dest.is_relative_to(directory) or dest == directory:
        raise StorageError(
            f"model {uri}: object key {posixpath.join(root, rel)!r} resolves outside the "
            "download directory; refusing to download this model (rename or remove that object)"
        )
    return dest


# --------------------------------------------------------------------------- device and dtype


def pick_device(device: str = "auto") -> str:
    """`auto` -> `cuda` when this process sees a GPU (a Ray actor sees the one it reserved)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device `cuda` requested but no GPU is visible to this process")
    return device


T5_FAMILY = ("t5", "mt5", "umt5", "longt5", "switch_transformers")
"""Model types whose activations overflow float16 (T5, flan-t5, UL2/flan-ul2, ...): their
feed-forward outputs exceed float16's range (CTranslate2 issue #1074; the reason T5 checkpoints
were trained in bfloat16)."""


def is_t5_family(config: Any) -> bool:
    """Whether a transformers config is a T5-family model (UL2 and flan-ul2 say `t5`)."""
    return str(getattr(config, "model_type", "")).lower() in T5_FAMILY


def refuse_t5_float16(key: str, value: str, model: str) -> None:
    """The refusal of float16 for a T5-family model, naming the setting that chose it."""
    from condlabel.config import ConfigError

    raise ConfigError(
        [
            f"{key}: {value} is refused for {model}, a T5-family model: its activations "
            "overflow float16 (inf/NaN labels). Use bfloat16 on a GPU that supports it, "
            "float32, or int8 weights with bfloat16/float32 compute (ct2: int8, "
            "int8_bfloat16, int8_float32)"
        ]
    )


def pick_dtype(
    dtype: str, device: str, *, t5_family: bool = False, bf16_supported: bool | None = None
):
    """The torch dtype: a named one as it is; `auto` -> float32 on the CPU; on a GPU bfloat16
    where it supports it (`torch.cuda.is_bf16_supported()`, asked unless `bf16_supported` says),
    else float16 — except for T5-family models (`t5_family`), which overflow in float16 and
    stay in float32 there."""
    import torch

    if dtype == "auto":
        if not device.startswith("cuda"):
            return torch.float32
        if bf16_supported is None:
            bf16_supported = bool(torch.cuda.is_bf16_supported())
        if bf16_supported:
            return torch.bfloat16
        return torch.float32 if t5_family else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected auto or one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


# --------------------------------------------------------------------------- load and merge


def _require_hf() -> None:
    try:
        import peft  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:  # pragma: no cover - the dev environment has them
        raise ImportError(
            f"the hf labeler needs torch, transformers and peft: {HF_INSTALL_HINT} "
            f"(install the torch build for your hardware first) [{exc}]"
        ) from exc


def fetch_adapter(
    uri: str,
    revision: str | None = None,
    storage: StorageConfig | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """Local directory of a peft adapter that holds its weights as safetensors.

    An adapter published as `adapter_model.bin` only (peft before safetensors, as the reference
    adapter) is read with torch's restricted unpickler and converted once into the cache
    (`condlabel.adapter_bin`); anything in it but tensors is refused."""
    path = fetch_model(uri, storage, cache_dir)
    if not os.path.isdir(path):  # a hub id: fetch everything but pickled weights
        path = _hub_adapter(path, revision)
    if os.path.isfile(os.path.join(path, ADAPTER_WEIGHTS)):
        return path
    if os.path.isfile(os.path.join(path, ADAPTER_PICKLED)):
        root = Path(cache_dir) if cache_dir else cache_root()
        converted = converted_adapter(path, root, f"adapter {uri}")
        log.info(
            "adapter %s: %s converted to %s in %s", uri, ADAPTER_PICKLED, ADAPTER_WEIGHTS, converted
        )
        return converted
    found = sorted(p.name for p in Path(path).iterdir()) if os.path.isdir(path) else []
    raise AdapterWeightsError(
        f"adapter {uri}: no {ADAPTER_WEIGHTS} nor {ADAPTER_PICKLED} (found: "
        f"{', '.join(found) or 'nothing'}). condlabel loads weights from safetensors only (a "
        f"peft {ADAPTER_PICKLED} of plain tensors is converted once) and never unpickles other "
        "files: convert the adapter once on a trusted machine (load it with peft and "
        "`save_pretrained(dir, safe_serialization=True)`) and point `adapter` at the result."
    )


def _hub_adapter(repo: str, revision: str | None) -> str:
    """A hub adapter's snapshot without pickled files; its `adapter_model.bin` is added only
    when it has no safetensors (it is then read with the restricted unpickler)."""
    from huggingface_hub import hf_hub_download, snapshot_download

    path = snapshot_download(
        repo, revision=revision, ignore_patterns=["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt"]
    )
    if not os.path.isfile(os.path.join(path, ADAPTER_WEIGHTS)):
        hf_hub_download(repo, ADAPTER_PICKLED, revision=revision)
    return path


def tokenizer_source(model_path: str, adapter_path: str | None) -> str:
    """Where the tokenizer comes from: the adapter's directory when it saved one (an adapter
    trained with added tokens), else the model's."""
    if adapter_path and any(
        os.path.isfile(os.path.join(adapter_path, name))
        for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model")
    ):
        return adapter_path
    return model_path


def load_tokenizer(model_path: str, adapter_path: str | None, revision: str | None = None):
    """The tokenizer of a model (+ adapter); the revision applies to the model's own only."""
    from transformers import AutoTokenizer

    source = tokenizer_source(model_path, adapter_path)
    return AutoTokenizer.from_pretrained(
        source, revision=None if source == adapter_path else revision
    )


@dataclass
class LoadedModel:
    model: Any
    """The torch module (from `load_model`: in eval mode, merged when an adapter was merged)."""
    tokenizer: Any
    seq2seq: bool = False
    """An encoder-decoder (T5/UL2) rather than a causal LM."""
    device: str = "cpu"
    dtype: Any = None
    """The torch dtype of the weights."""


def load_model(
    model: str,
    adapter: str | None = None,
    *,
    revision: str | None = None,
    adapter_revision: str | None = None,
    architecture: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    storage: StorageConfig | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load a seq2seq or causal LM (and its tokenizer), merge a LoRA adapter into it.

    `device="auto"` takes the GPU this process sees (a Ray actor sees the one it reserved),
    else the CPU; `dtype="auto"` is float32 on the CPU and on a GPU bfloat16 where it supports
    it (`pick_dtype`).
    """
    _require_hf()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    device = pick_device(device)
    model_path = fetch_model(model, storage, cache_dir)
    adapter_path = fetch_adapter(adapter, adapter_revision, storage, cache_dir) if adapter else None

    config = AutoConfig.from_pretrained(model_path, revision=revision)
    torch_dtype = pick_dtype(dtype, device, t5_family=is_t5_family(config))
    seq2seq = (
        bool(getattr(config, "is_encoder_decoder", False))
        if architecture == "auto"
        else architecture == "seq2seq"
    )
    model_cls = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    # Straight onto the target device: a 20B model never sits in host memory per actor.
    net = model_cls.from_pretrained(
        model_path,
        revision=revision,
        dtype=torch_dtype,
        use_safetensors=True,
        device_map={"": device},
    )
    if adapter_path:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, adapter_path, is_trainable=False)
        net = net.merge_and_unload()
    net.eval()
    tokenizer = load_tokenizer(model_path, adapter_path, revision)
    log.info(
        "loaded %s%s (%s, %s on %s)",
        model,
        f" + {adapter} merged" if adapter else "",
        "seq2seq" if seq2seq else "causal",
        str(torch_dtype).removeprefix("torch."),
        device,
    )
    return LoadedModel(net, tokenizer, seq2seq, device, torch_dtype)


def merge_model(
    base: str,
    adapter: str | None,
    output_uri: str,
    *,
    revision: str | None = None,
    adapter_revision: str | None = None,
    dtype: str = "auto",
    storage: StorageConfig | None = None,
    cache_dir: str | Path | None = None,
    format: str = "hf",
    quantization: str = "int8",
    overwrite: bool = False,
) -> str:
    """Merge a LoRA adapter into its base model and write model + tokenizer to `output_uri`
    (local directory or s3:// prefix); returns `output_uri`.

    The merge runs on the CPU in float32, so it is exact whatever the saved dtype; it needs
    about 4 bytes of RAM per parameter. `format="hf"` writes safetensors (`dtype="auto"`: the
    base checkpoint's dtype) for `labeler.model`; `format="ct2"` converts the merged model
    to CTranslate2 with its weights in `quantization` (int8, float32, ...) for
    `labeler.model` (`adapter` may then be None: a plain conversion). Every actor of a
    cluster then loads the result. An output that holds files is refused unless `overwrite`
    (and then only the files a previous export wrote are removed: `model_export`).
    """
    check_output_free(output_uri, storage, overwrite)
    model_type = _refuse_half_t5(base, revision, storage, cache_dir, format, dtype, quantization)
    loaded = load_model(
        base,
        adapter,
        revision=revision,
        adapter_revision=adapter_revision,
        device="cpu",
        dtype="float32",
        storage=storage,
        cache_dir=cache_dir,
    )
    if format == "ct2":  # the converter reads a float32 checkpoint and quantizes it itself
        save_dtype = pick_dtype("float32", "cpu")
    elif dtype == "auto":
        save_dtype = _checkpoint_dtype(fetch_model(base, storage, cache_dir), revision)
    else:
        save_dtype = pick_dtype(dtype, "cpu")
    net = loaded.model.to(save_dtype)
    info = {
        "base": base,
        "revision": revision,
        "adapter": adapter,
        "adapter_revision": adapter_revision,
        "dtype": str(save_dtype).removeprefix("torch."),
        "format": format,
        "model_type": model_type,  # the ct2 labeler refuses float16 compute for T5 models
        # EOS as the hf backend resolves it, so a converted model stops where hf stops.
        "eos_token_ids": _eos_ids(net, loaded.tokenizer, base),
    }
    with tempfile.TemporaryDirectory(prefix="condlabel-merge-") as tmp:
        out = Path(tmp, "merged")
        net.save_pretrained(out, safe_serialization=True)
        loaded.tokenizer.save_pretrained(out)
        if format == "ct2":
            from condlabel.ct2_convert import convert_to_ct2

            del net, loaded  # the converter loads the checkpoint again
            out = convert_to_ct2(out, Path(tmp, "ct2"), quantization)
            info["quantization"] = quantization
        Path(out, MERGE_INFO).write_text(json.dumps(info, indent=2) + "\n")
        pickled = [p.name for p in out.iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if format == "ct2":  # CTranslate2's model.bin is its own format, not a pickle
            pickled = [name for name in pickled if name != "model.bin"]
        if pickled:  # pragma: no cover - save_pretrained writes safetensors
            raise RuntimeError(f"merge produced pickled files {pickled}; refusing to upload")
        upload_directory(out, output_uri, storage)
    detail = f"ct2 {quantization}" if format == "ct2" else info["dtype"]
    log.info("merged %s + %s -> %s (%s)", base, adapter, output_uri, detail)
    return output_uri


def eos_token_ids(configured: Iterable[Any], tokenizer: Any, model: str) -> list[int]:
    """The EOS ids from the first source that names any: the `configured` ones in order
    (generation config, model config), then the tokenizer's. Each may be an id or a list."""
    for source in (*configured, tokenizer.eos_token_id):
        values = source if isinstance(source, list | tuple) else [source]
        ids = [int(v) for v in values if v is not None]
        if ids:
            return list(dict.fromkeys(ids))
    raise ValueError(f"model {model}: no EOS token id in its configs or tokenizer")


def _refuse_half_t5(
    base: str,
    revision: str | None,
    storage: StorageConfig | None,
    cache_dir: str | Path | None,
    format: str,
    dtype: str,
    quantization: str,
) -> str:
    """The base's model type; float16 weights or compute for a T5-family base are refused
    before anything is merged (`--dtype float16`, `--quantization float16/int8_float16`)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(fetch_model(base, storage, cache_dir), revision=revision)
    if is_t5_family(config):
        if format == "hf" and dtype == "float16":
            refuse_t5_float16("--dtype", dtype, base)
        if format == "ct2" and quantization in CT2_FLOAT16:
            refuse_t5_float16("--quantization", quantization, base)
    return str(getattr(config, "model_type", ""))


def _eos_ids(net, tokenizer, model: str) -> list[int]:
    generation = getattr(net, "generation_config", None)
    configured = (getattr(generation, "eos_token_id", None), net.config.eos_token_id)
    return eos_token_ids(configured, tokenizer, model)


def _checkpoint_dtype(model_path: str, revision: str | None):
    """The dtype a checkpoint was saved in (its config's), float32 when it does not say."""
    import torch
    from transformers import AutoConfig

    stored = getattr(AutoConfig.from_pretrained(model_path, revision=revision), "dtype", None)
    if isinstance(stored, str):
        stored = getattr(torch, stored, None)
    return stored if isinstance(stored, torch.dtype) else torch.float32
