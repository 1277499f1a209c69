"""Generative models for labeling: where the weights come from, loading, and LoRA merging.

A model or adapter source is a local directory, an `s3://` prefix or a hub id:
- an object-storage prefix is downloaded once per node into a local cache shared by that node's
  actors (`condlabel.model_files` keys the cache by URI and listing; a file lock per URI here
  makes concurrent actors wait for the one that downloads instead of fetching it again);
- a hub id is left to `from_pretrained` (clusters that reach a hub); adapters from a hub are
  fetched without their pickled weight files.

Weights are read from safetensors only: models with `use_safetensors=True`, adapters only when
`adapter_model.safetensors` is present. Nothing here unpickles a file.

torch/transformers/peft are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from condlabel.config import StorageConfig
from condlabel.model_files import cache_root, is_remote, local_model_path, upload_directory

log = logging.getLogger("condlabel")

ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGE_INFO = "condlabel_merge.json"
HF_INSTALL_HINT = "pip install 'condlabel[hf]'"
_LOCK_TIMEOUT_S = 6 * 3600  # a 40 GB model over a slow link; the holder's death frees the lock


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


def resolve_source(
    uri: str, storage: StorageConfig | None = None, cache_dir: str | Path | None = None
) -> str:
    """A local directory or hub id that `from_pretrained` can open.

    `s3://` (any remote) prefixes are downloaded into the node's cache under an exclusive file
    lock: the first actor downloads (into a temporary directory renamed into place when
    complete), the others wait on the lock and then find the complete copy. The lock is an OS
    file lock, so it is released if its holder dies.
    """
    if not is_remote(uri):
        return local_model_path(uri, storage, cache_dir)
    from filelock import FileLock, Timeout

    root = Path(cache_dir) if cache_dir else cache_root()
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(uri.rstrip("/").encode()).hexdigest()[:24]
    lock = FileLock(str(locks / f"{key}.lock"), timeout=_LOCK_TIMEOUT_S)
    try:
        with lock:
            return local_model_path(uri, storage, root)
    except Timeout as exc:
        raise RuntimeError(
            f"model {uri}: waited {_LOCK_TIMEOUT_S} s for another process downloading it into "
            f"{root} (lock {lock.lock_file}); remove a stale cache entry there and retry"
        ) from exc


def _adapter_dir(uri: str, revision: str | None, storage, cache_dir) -> str:
    """Local directory of a peft adapter that holds its weights as safetensors."""
    path = resolve_source(uri, storage, cache_dir)
    if not os.path.isdir(path):  # a hub id: fetch everything but pickled weights
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            path, revision=revision, ignore_patterns=["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt"]
        )
    if not os.path.isfile(os.path.join(path, ADAPTER_WEIGHTS)):
        found = sorted(p.name for p in Path(path).iterdir()) if os.path.isdir(path) else []
        raise FileNotFoundError(
            f"adapter {uri}: no {ADAPTER_WEIGHTS} (found: {', '.join(found) or 'nothing'}). "
            "condlabel loads weights from safetensors only and never unpickles a .bin file: "
            "convert the adapter once on a trusted machine (load it with peft and "
            "`save_pretrained(dir, safe_serialization=True)`) and point `adapter` at the result."
        )
    return path


def _has_tokenizer(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name))
        for name in ("tokenizer.json", "tokenizer_config.json", "spiece.model")
    )


@dataclass
class LoadedModel:
    model: Any
    """The torch module in eval mode (merged when an adapter was given and merged)."""
    tokenizer: Any
    seq2seq: bool
    device: str
    dtype: Any


def load_model(
    model: str,
    adapter: str | None = None,
    *,
    revision: str | None = None,
    adapter_revision: str | None = None,
    architecture: str = "auto",
    device: str = "auto",
    dtype: str = "auto",
    merge_adapter: bool = True,
    storage: StorageConfig | None = None,
    cache_dir: str | Path | None = None,
) -> LoadedModel:
    """Load a seq2seq or causal LM (and its tokenizer), merge a LoRA adapter into it.

    `device="auto"` takes the GPU this process sees (a Ray actor sees the one it reserved),
    else the CPU; `dtype="auto"` is bfloat16 on GPU and float32 on CPU.
    """
    _require_hf()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from condlabel.model_files import pick_device, pick_dtype

    device = pick_device(device)
    torch_dtype = pick_dtype(dtype, device)
    model_path = resolve_source(model, storage, cache_dir)
    adapter_path = _adapter_dir(adapter, adapter_revision, storage, cache_dir) if adapter else None

    config = AutoConfig.from_pretrained(model_path, revision=revision)
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
        if merge_adapter:
            net = net.merge_and_unload()
    net.eval()
    token_source = adapter_path if adapter_path and _has_tokenizer(adapter_path) else model_path
    tokenizer = AutoTokenizer.from_pretrained(
        token_source, revision=None if token_source == adapter_path else revision
    )
    log.info(
        "loaded %s%s (%s, %s on %s)",
        model,
        f" + {adapter}" + (" merged" if merge_adapter else " unmerged") if adapter else "",
        "seq2seq" if seq2seq else "causal",
        str(torch_dtype).removeprefix("torch."),
        device,
    )
    return LoadedModel(net, tokenizer, seq2seq, device, torch_dtype)


def merge_model(
    base: str,
    adapter: str,
    output_uri: str,
    *,
    revision: str | None = None,
    adapter_revision: str | None = None,
    dtype: str = "auto",
    storage: StorageConfig | None = None,
    cache_dir: str | Path | None = None,
) -> str:
    """Merge a LoRA adapter into its base model and write model + tokenizer (safetensors) to
    `output_uri` (local directory or s3:// prefix); returns `output_uri`.

    The merge runs on the CPU in float32, so it is exact whatever the saved dtype; it needs
    about 4 bytes of RAM per parameter. `dtype="auto"` saves in the base checkpoint's dtype.
    Every actor of a cluster then loads the merged weights (`labeler.hf.model: <output_uri>`).
    """
    import torch
    from transformers import AutoConfig

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
    if dtype == "auto":
        stored = getattr(
            AutoConfig.from_pretrained(resolve_source(base, storage, cache_dir), revision=revision),
            "dtype",
            None,
        )
        if isinstance(stored, str):
            stored = getattr(torch, stored, None)
        save_dtype = stored if isinstance(stored, torch.dtype) else torch.float32
    else:
        save_dtype = {
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }[dtype]
    net = loaded.model.to(save_dtype)
    with tempfile.TemporaryDirectory(prefix="condlabel-merge-") as tmp:
        net.save_pretrained(tmp, safe_serialization=True)
        loaded.tokenizer.save_pretrained(tmp)
        info = {
            "base": base,
            "revision": revision,
            "adapter": adapter,
            "adapter_revision": adapter_revision,
            "dtype": str(save_dtype).removeprefix("torch."),
        }
        Path(tmp, MERGE_INFO).write_text(json.dumps(info, indent=2) + "\n")
        pickled = [p.name for p in Path(tmp).iterdir() if p.suffix in (".bin", ".pt", ".pth")]
        if pickled:  # pragma: no cover - save_pretrained writes safetensors
            raise RuntimeError(f"merge produced pickled files {pickled}; refusing to upload")
        upload_directory(tmp, output_uri, storage)
    log.info("merged %s + %s -> %s (%s)", base, adapter, output_uri, info["dtype"])
    return output_uri
