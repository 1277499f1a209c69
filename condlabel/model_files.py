"""Where model weights live: local directories, object-storage prefixes (s3://) or hub ids.

`from_pretrained` reads local directories and hub ids itself; an object-storage prefix is
downloaded once into a local cache keyed by the URI and the listing (name, size, ETag/mtime),
so a re-exported model at the same URI is fetched again and an unchanged one is not.
`upload_directory` is the way back (a trained model exported to s3://).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tempfile
import uuid
from pathlib import Path

from condlabel.config import StorageConfig
from condlabel.storage import StorageError, is_local, resolve, split_uri

COMPLETE_MARKER = ".condlabel-complete"


def cache_root() -> Path:
    return Path(os.environ.get("CONDLABEL_CACHE", Path.home() / ".cache" / "condlabel")) / "models"


def is_remote(uri: str) -> bool:
    return "://" in uri and split_uri(uri)[0] != "file"


def local_model_path(
    uri: str, storage: StorageConfig | None = None, cache_dir: str | Path | None = None
) -> str:
    """A path or hub id that `from_pretrained` can open.

    Local paths (and file://) are returned as absolute paths; remote prefixes are downloaded into
    the cache; anything else that is not an existing directory is taken as a hub id.
    """
    if is_remote(uri):
        return _download(uri, storage, Path(cache_dir) if cache_dir else cache_root())
    _, path = split_uri(uri)
    if uri.startswith("file://") or os.path.isdir(path):
        if not os.path.isdir(path):
            raise StorageError(f"model {uri}: no such directory")
        return path
    return uri  # a hub id such as "gpt2" or "unitary/toxic-bert"


def _download(uri: str, storage: StorageConfig | None, cache: Path) -> str:
    fs, root = resolve(uri, storage)
    root = root.rstrip("/")
    try:
        listing = fs.find(root, detail=True)
    except (OSError, PermissionError) as exc:
        raise StorageError(f"model {uri}: cannot be listed ({type(exc).__name__}: {exc})") from exc
    files = {
        posixpath.relpath(p, root): info
        for p, info in listing.items()
        if info.get("type", "file") == "file" and not posixpath.basename(p).startswith(".")
    }
    if not files:
        raise StorageError(f"model {uri}: no files under this prefix")
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
            dest = tmp / rel
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


def upload_directory(local_dir: str | Path, uri: str, storage: StorageConfig | None = None) -> str:
    """Copy every file of `local_dir` under `uri` (local or remote); returns `uri`.

    Files are written one by one (each S3 PUT is atomic); a marker file is written last, so a
    reader can tell a complete export from one that was interrupted.
    """
    fs, root = resolve(uri, storage)
    root = root.rstrip("/")
    local_dir = Path(local_dir)
    if is_local(fs):
        staging = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(local_dir, staging)
        Path(staging, COMPLETE_MARKER).write_text(uri)
        if os.path.isdir(root):
            shutil.rmtree(root)
        os.replace(staging, root)
        return uri
    for path in sorted(local_dir.rglob("*")):
        if path.is_file():
            fs.put_file(str(path), posixpath.join(root, path.relative_to(local_dir).as_posix()))
    fs.pipe_file(posixpath.join(root, COMPLETE_MARKER), uri.encode())
    return uri


def pick_device(device: str = "auto") -> str:
    """`auto` -> `cuda` when this process sees a GPU (a Ray actor sees the one it reserved)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device `cuda` requested but no GPU is visible to this process")
    return device


def pick_dtype(dtype: str, device: str):
    """`auto` -> bfloat16 on GPU, float32 on CPU."""
    import torch

    if dtype == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
