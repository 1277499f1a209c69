"""URIs -> fsspec filesystems (local, file://, s3:// through s3fs), listing and atomic writes.

Credentials and endpoints come from the standard AWS chain (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
profiles, instance roles); `StorageConfig` may override them (explicit keys only as a pair).
s3:// goes through `s3.BoundedS3FileSystem`: an unreachable endpoint is a `StorageError` within
seconds, not minutes of retries. Nothing here logs a secret.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import fsspec

from condlabel.config import ConfigError, StorageConfig
from condlabel.config.secrets import strip_userinfo
from condlabel.storage_errors import InputNotFound, StorageError

_GLOB_CHARS = set("*?[")
# Fixed, not settings: a connection to a live endpoint opens in well under a second, and 60 s
# covers the slowest S3 answer seen; an unreachable one is bounded by `s3.CONNECT_RETRIES`.
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0


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


def literal_root(uri: str) -> tuple[str, str]:
    """(scheme, path) of the part of an input URI before its first glob character."""
    scheme, path = split_uri(uri)
    cut = min((path.index(c) for c in _GLOB_CHARS if c in path), default=None)
    if cut is not None:
        path = posixpath.dirname(path[:cut])
    return scheme, path.rstrip("/") or "/"


def join_uri(scheme: str, path: str) -> str:
    return path if scheme == "file" else f"{scheme}://{path}"


def s3_options(storage: StorageConfig | None) -> dict[str, Any]:
    """s3fs keyword arguments; only what the config overrides, the AWS chain does the rest."""
    storage = storage or StorageConfig()
    opts: dict[str, Any] = {"use_listings_cache": False, "skip_instance_cache": False}
    client_kwargs: dict[str, Any] = {}
    endpoint = _endpoint(storage)
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
    if storage.access_key_id is not None and storage.secret_access_key is not None:
        # As a pair, botocore uses them alone: the environment's chain is not consulted.
        opts["key"] = storage.access_key_id.get_secret_value()
        opts["secret"] = storage.secret_access_key.get_secret_value()
    # Transient errors (throttling, 5xx, connection resets) are retried by botocore itself;
    # an unreachable endpoint only `s3.CONNECT_RETRIES` times (`BoundedS3FileSystem`).
    opts["config_kwargs"] = {
        "retries": {"max_attempts": storage.retries + 1, "mode": "adaptive"},
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": READ_TIMEOUT_S,
    }
    return opts


def _endpoint(storage: StorageConfig) -> str | None:
    return (
        storage.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
    )


def filesystem(scheme: str, storage: StorageConfig | None = None) -> fsspec.AbstractFileSystem:
    """The fsspec filesystem for a scheme (`s3`, `file`, `gs`, ...)."""
    if scheme == "s3":
        _check_key_pair(storage or StorageConfig())
        from condlabel.s3 import BoundedS3FileSystem  # s3fs loads in ~0.7 s: only when used

        return BoundedS3FileSystem(**s3_options(storage))
    return fsspec.filesystem(scheme)


def _check_key_pair(storage: StorageConfig) -> None:
    # One explicit key would be completed from the environment's chain, or fail there with
    # botocore's PartialCredentialsError: refuse it before any request, naming the missing key.
    if (storage.access_key_id is None) == (storage.secret_access_key is None):
        return
    given, missing = ("access_key_id", "secret_access_key")
    if storage.access_key_id is None:
        given, missing = missing, given
    raise ConfigError(
        [
            f"storage.{missing}: required with storage.{given} (explicit S3 keys are a pair); "
            f"set both, or neither and let the AWS chain find credentials"
        ]
    )


def resolve(
    uri: str, storage: StorageConfig | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    scheme, path = split_uri(uri)
    return filesystem(scheme, storage), path


def is_hidden(path: str, root: str) -> bool:
    """A name starting with `_` or `.` below `root`: bookkeeping, never data or input."""
    rel = posixpath.relpath(path, root) if path.startswith(root) else posixpath.basename(path)
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


@dataclass(frozen=True)
class InputFile:
    uri: str
    size: int
    version: str = ""
    """ETag (object stores) or mtime (local files) from the listing; "" when neither is known."""
    key: str = ""
    """The file's identity across runs: its path relative to the input it was found under (a
    directory, or a glob's fixed part; a file named alone: its name), so a moved prefix is
    recognised. "" when unknown (the full URI is used)."""

    @property
    def identity(self) -> str:
        return self.key or self.uri


def _file_version(info: dict[str, Any]) -> str:
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return "etag:" + str(etag).strip('"')
    mtime = info.get("mtime") or info.get("LastModified")
    return f"mtime:{mtime}" if mtime is not None else ""


def expand_inputs(
    uris: Iterable[str], storage: StorageConfig | None = None, suffixes: tuple[str, ...] = ()
) -> list[InputFile]:
    """Each URI may be a file, a directory/prefix (walked recursively) or a glob (a path that
    exists as written is never a glob, even with `[`, `*` or `?` in its name).

    Bookkeeping paths (names starting with `_` or `.`) are skipped under directories. A URI that
    does not exist or matches nothing raises `InputNotFound` naming it. Result is sorted and
    unique.
    """
    found: dict[str, InputFile] = {}
    for uri in uris:
        scheme, path = split_uri(uri)
        fs = filesystem(scheme, storage)
        matches: dict[str, dict[str, Any]] = {}
        try:
            # A name such as `brack[1].jsonl` is taken literally when it exists as it is.
            if any(c in path for c in _GLOB_CHARS) and not fs.exists(path):
                matches = fs.glob(path, detail=True)
                if not matches:
                    raise InputNotFound(f"input {uri}: the glob matches no files")
            elif fs.isdir(path):
                matches = {
                    p: info
                    for p, info in fs.find(path, detail=True).items()
                    if not is_hidden(p, path.rstrip("/"))
                }
                if suffixes:
                    matches = {p: i for p, i in matches.items() if p.endswith(suffixes)}
                if not matches:
                    wanted = f" with a suffix in {list(suffixes)}" if suffixes else ""
                    raise InputNotFound(f"input {uri}: the directory holds no files{wanted}")
            elif fs.isfile(path):
                matches = {path: fs.info(path)}
            else:
                raise InputNotFound(f"input {uri}: no such file or directory")
        except StorageError:
            raise
        except (PermissionError, OSError) as exc:
            raise StorageError(
                f"input {uri}: cannot be listed ({type(exc).__name__}: {exc})"
            ) from exc
        root = _literal_dir(path) if not fs.isdir(path) else path.rstrip("/")
        for p, info in matches.items():
            if info.get("type", "file") != "file":
                continue
            full = join_uri(scheme, p)  # fsspec strips the scheme
            key = (
                posixpath.relpath(p, root)
                if root and p.startswith(root + "/")
                else posixpath.basename(p)
            )
            found[full] = InputFile(full, int(info.get("size") or 0), _file_version(info), key)
    return [found[k] for k in sorted(found)]


def _literal_dir(path: str) -> str:
    """The directory part of a file path or glob before its first glob character."""
    cut = min((path.find(c) for c in _GLOB_CHARS if c in path), default=-1)
    literal = path if cut < 0 else path[:cut]
    return posixpath.dirname(literal).rstrip("/")


def describe_endpoint(uri: str, storage: StorageConfig | None = None) -> str:
    """Where an s3:// URI is served from, for error messages (without any `user:pass@`)."""
    if split_uri(uri)[0] != "s3":
        return ""
    endpoint = (
        s3_options(storage).get("client_kwargs", {}).get("endpoint_url", "AWS default endpoint")
    )
    return f" (endpoint {strip_userinfo(endpoint)})"


def ensure_writable(uri: str, storage: StorageConfig | None = None, create: bool = True) -> None:
    """Create the output prefix if needed and prove we can write and delete there. Without
    `create` (a dry run) nothing is written: a local prefix must be a directory, or creatable
    under its nearest existing parent, by this user; an object store's bucket must exist."""
    fs, path = resolve(uri, storage)
    if not create:
        _check_writable_untouched(fs, uri, path, storage)
        return
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


def _check_writable_untouched(
    fs: fsspec.AbstractFileSystem, uri: str, path: str, storage: StorageConfig | None
) -> None:
    if is_local(fs):
        existing = path
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            what = "not a directory" if not os.path.isdir(existing) else "no write permission"
            raise StorageError(f"output {uri}: not writable ({existing}: {what})")
        return
    bucket = path.split("/", 1)[0]
    try:
        found = fs.exists(bucket)
    except Exception as exc:
        where = describe_endpoint(uri, storage)
        raise StorageError(
            f"output {uri}: not reachable{where}: {type(exc).__name__}: {exc}"
        ) from exc
    if not found:
        where = describe_endpoint(uri, storage)
        raise StorageError(f"output {uri}: bucket {bucket!r} does not exist{where}")


def write_bytes_atomic(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Write so that `path` is complete or absent.

    S3 PUTs are atomic by themselves; on local disks write a hidden temporary file beside the
    target, fsync it and rename (rename is atomic within one filesystem).
    """
    if is_local(fs):
        os.replace(staged_beside(path, data), path)
        return
    fs.pipe_file(path, data)


def staged_beside(path: str, data: bytes) -> str:
    """A local file of `data`, fsynced, under a hidden temporary name beside `path` (so a
    rename or link puts it in place atomically); returns its name."""
    directory = posixpath.dirname(path)
    os.makedirs(directory, exist_ok=True)
    staged = posixpath.join(directory, f".tmp-{uuid.uuid4().hex}-{posixpath.basename(path)}")
    with open(staged, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return staged


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols
