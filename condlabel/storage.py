"""URIs -> fsspec filesystems (local, file://, s3:// through s3fs), listing and atomic writes.

Credentials and endpoints come from the standard AWS chain (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
profiles, instance roles); `StorageConfig` may override them. Nothing here logs a secret.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec

from condlabel.config import StorageConfig

_GLOB_CHARS = set("*?[")


class StorageError(RuntimeError):
    """An input or output location is missing, empty, unreadable or unwritable."""


def split_uri(uri: str) -> tuple[str, str]:
    """'s3://b/k' -> ('s3', 'b/k'); 'file:///x' and '/x' -> ('file', '/x')."""
    if "://" in uri:
        scheme, rest = uri.split("://", 1)
        scheme = scheme.lower()
        if scheme in ("s3a", "s3n"):
            scheme = "s3"
        if scheme == "file":
            return "file", os.path.abspath(rest or "/")
        return scheme, rest
    return "file", os.path.abspath(os.path.expanduser(uri))


def join_uri(scheme: str, path: str) -> str:
    return path if scheme == "file" else f"{scheme}://{path}"


def s3_options(storage: StorageConfig | None) -> dict[str, Any]:
    """s3fs keyword arguments; only what the config overrides, the AWS chain does the rest."""
    storage = storage or StorageConfig()
    opts: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": False}
    client_kwargs: dict[str, Any] = {}
    endpoint = (
        storage.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if storage.region:
        client_kwargs["region_name"] = storage.region
    if client_kwargs:
        opts["client_kwargs"] = client_kwargs
    if storage.profile:
        opts["profile"] = storage.profile
    if storage.anon:
        opts["anon"] = True
    if storage.access_key_id is not None:
        opts["key"] = storage.access_key_id.get_secret_value()
    if storage.secret_access_key is not None:
        opts["secret"] = storage.secret_access_key.get_secret_value()
    # Transient errors (throttling, 5xx, connection resets) are retried by botocore itself.
    opts["config_kwargs"] = {
        "retries": {"max_attempts": storage.retries + 1, "mode": "adaptive"},
        "connect_timeout": 10,
        "read_timeout": 60,
    }
    return opts


def filesystem(scheme: str, storage: StorageConfig | None = None) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for a scheme (`s3`, `file`, `gs`, ...)."""
    if scheme == "s3":
        return fsspec.filesystem("s3", **s3_options(storage))
    return fsspec.filesystem(scheme)


def resolve(
    uri: str, storage: StorageConfig | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    scheme, path = split_uri(uri)
    return filesystem(scheme, storage), path


def _is_hidden(path: str, root: str) -> bool:
    rel = posixpath.relpath(path, root) if path.startswith(root) else posixpath.basename(path)
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


@dataclass(frozen=True)
class InputFile:
    uri: str
    size: int


def expand_inputs(
    uris: Iterable[str], storage: StorageConfig | None = None, suffixes: tuple[str, ...] = ()
) -> list[InputFile]:
    """Each URI may be a file, a directory/prefix (walked recursively) or a glob.

    Bookkeeping paths (names starting with `_` or `.`) are skipped under directories. A URI that
    does not exist or matches nothing raises `StorageError` naming it. Result is sorted and unique.
    """
    found: dict[str, InputFile] = {}
    for uri in uris:
        scheme, path = split_uri(uri)
        fs = filesystem(scheme, storage)
        matches: dict[str, dict[str, Any]] = {}
        try:
            if any(c in path for c in _GLOB_CHARS):
                matches = fs.glob(path, detail=True)
                if not matches:
                    raise StorageError(f"input {uri}: the glob matches no files")
            elif fs.isdir(path):
                matches = {
                    p: info
                    for p, info in fs.find(path, detail=True).items()
                    if not _is_hidden(p, path.rstrip("/"))
                }
                if suffixes:
                    matches = {p: i for p, i in matches.items() if p.endswith(suffixes)}
                if not matches:
                    wanted = f" with a suffix in {list(suffixes)}" if suffixes else ""
                    raise StorageError(f"input {uri}: the directory holds no files{wanted}")
            elif fs.isfile(path):
                matches = {path: fs.info(path)}
            else:
                raise StorageError(f"input {uri}: no such file or directory")
        except StorageError:
            raise
        except (PermissionError, OSError) as exc:
            raise StorageError(
                f"input {uri}: cannot be listed ({type(exc).__name__}: {exc})"
            ) from exc
        for p, info in matches.items():
            if info.get("type", "file") != "file":
                continue
            full = join_uri(scheme, p)  # fsspec strips the scheme
            found[full] = InputFile(full, int(info.get("size") or 0))
    return [found[k] for k in sorted(found)]


def describe_endpoint(uri: str, storage: StorageConfig | None = None) -> str:
    """Where an s3:// URI is served from, for error messages (endpoints are not secrets)."""
    if split_uri(uri)[0] != "s3":
        return ""
    endpoint = (
        s3_options(storage).get("client_kwargs", {}).get("endpoint_url", "AWS default endpoint")
    )
    return f" (endpoint {endpoint})"


def ensure_writable(uri: str, storage: StorageConfig | None = None) -> None:
    """Create the output prefix if needed and prove we can write and delete there."""
    fs, path = resolve(uri, storage)
    probe = posixpath.join(path, f"_write_probe_{uuid.uuid4().hex}")
    try:
        if is_local(fs):
            fs.makedirs(path, exist_ok=True)
        with fs.open(probe, "wb") as f:
            f.write(b"ok")
        fs.rm(probe)
    except FileNotFoundError as exc:
        where = describe_endpoint(uri, storage)
        if not is_local(fs):
            raise StorageError(
                f"output {uri}: bucket {path.split('/', 1)[0]!r} does not exist{where}"
            ) from exc
        raise StorageError(f"output {uri}: not writable ({exc})") from exc
    except Exception as exc:
        where = describe_endpoint(uri, storage)
        raise StorageError(
            f"output {uri}: not writable{where}: {type(exc).__name__}: {exc}"
        ) from exc


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write so that `path` is complete or absent.

    S3 PUTs are atomic by themselves; on local disks write a hidden temporary file beside the
    target, fsync it and rename (rename is atomic within one filesystem).
    """
    if is_local(fs):
        directory = posixpath.dirname(path)
        os.makedirs(directory, exist_ok=True)
        tmp = posixpath.join(directory, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return
    fs.pipe_file(path, data)


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols
