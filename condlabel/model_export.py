"""Writing a model directory to a local folder or an object-storage prefix, never destroying
what condlabel did not write.

`upload_directory` copies a directory's files under a URI and writes a marker last,
`.condlabel-complete`, that lists the files it wrote: a reader tells a complete export from an
interrupted one, and the next export into the same place knows which files are its own. An export
into a place that already holds files replaces the files of the same name and removes only
the files the previous export listed and this one does not write (a sharded checkpoint's old
shards); any other file stays. `check_output_free` is the refusal a command runs before any
work: a folder or prefix that holds files is not written unless the user said `--overwrite`.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from condlabel.storage import is_local, resolve

if TYPE_CHECKING:
    from condlabel.config import StorageConfig

COMPLETE_MARKER = ".condlabel-complete"


def existing_files(uri: str, storage: StorageConfig | None = None) -> list[str]:
    """Paths (relative to `uri`) of the files already under `uri`; [] when nothing is there."""
    fs, root = resolve(uri, storage)
    root = root.rstrip("/")
    try:
        if not fs.isdir(root):
            return [os.path.basename(root)] if fs.exists(root) else []
        found = fs.find(root)
    except FileNotFoundError:
        return []
    return sorted(p[len(root) + 1 :] if p.startswith(root + "/") else p for p in found)


def check_output_free(
    uri: str, storage: StorageConfig | None, overwrite: bool, flag: str = "--output"
) -> None:
    """Refuse (`ConfigError` naming `flag`) to write into a folder or prefix that holds files,
    unless `overwrite`; a file in place of the folder is refused always."""
    from condlabel.config import ConfigError

    fs, root = resolve(uri, storage)
    if fs.exists(root.rstrip("/")) and not fs.isdir(root.rstrip("/")):
        raise ConfigError([f"{flag} {uri}: is a file; give a folder (empty, or a previous export)"])
    found = existing_files(uri, storage)
    if found and not overwrite:
        shown = ", ".join(found[:5]) + (f" and {len(found) - 5} more" if len(found) > 5 else "")
        raise ConfigError(
            [
                f"{flag} {uri}: not empty ({len(found)} file(s): {shown}); choose an empty "
                "folder, or pass --overwrite to write over it (files of the same name are "
                "replaced; files condlabel did not write there are kept)"
            ]
        )


def _previous_files(fs, root: str) -> list[str]:
    """The files the previous export into `root` listed in its marker ([] when there is none,
    or when it was written before markers listed their files)."""
    marker = posixpath.join(root, COMPLETE_MARKER)
    try:
        record = json.loads(fs.cat_file(marker))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return []
    files = record.get("files") if isinstance(record, dict) else None
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def upload_directory(local_dir: str | Path, uri: str, storage: StorageConfig | None = None) -> str:
    """Copy every file of `local_dir` under `uri` (local or remote); returns `uri`.

    Files are written one by one (each S3 PUT is atomic; a local file is written beside its
    name and renamed), the previous export's marker is removed first and the new marker is
    written last, so a reader can tell a complete export from one that was interrupted. Files
    under `uri` that no condlabel export wrote are never removed.
    """
    fs, root = resolve(uri, storage)
    root = root.rstrip("/")
    local_dir = Path(local_dir)
    files = sorted(
        p.relative_to(local_dir).as_posix()
        for p in local_dir.rglob("*")
        if p.is_file() and p.name != COMPLETE_MARKER
    )
    record = json.dumps({"uri": uri, "files": files}, indent=1)
    if is_local(fs) and not os.path.exists(root):
        # A new folder: built beside it and renamed, so it appears complete or not at all.
        staging = f"{root}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(local_dir, staging)
        Path(staging, COMPLETE_MARKER).write_text(record)
        os.replace(staging, root)
        return uri
    previous = _previous_files(fs, root)
    marker = posixpath.join(root, COMPLETE_MARKER)
    if fs.exists(marker):
        fs.rm_file(marker)
    for rel in files:
        _put(fs, local_dir / rel, posixpath.join(root, rel), local=is_local(fs))
    for rel in sorted(set(previous) - set(files)):
        stale = posixpath.join(root, rel)
        if posixpath.normpath(stale).startswith(root + "/") and fs.exists(stale):
            fs.rm_file(stale)
    fs.pipe_file(marker, record.encode())
    return uri


def _put(fs, source: Path, dest: str, local: bool) -> None:
    if not local:
        fs.put_file(str(source), dest)
        return
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    tmp = f"{dest}.tmp-{uuid.uuid4().hex[:8]}"
    shutil.copy2(source, tmp)
    os.replace(tmp, dest)
