"""A run's input files before any work: checked against the output, stripped of bookkeeping and
of condlabel's own shards, and grouped into read tasks by size. No Ray here.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import posixpath
import re
from collections import Counter

from condlabel.config import ConfigError, ConvertConfig, StorageConfig
from condlabel.convert.reading import SUPPORTED_SUFFIXES, detect_format
from condlabel.schema import LEASE_NAME, MANIFEST_DIR
from condlabel.storage import InputFile, expand_inputs, filesystem, literal_root, split_uri
from condlabel.storage_errors import InputNotFound

log = logging.getLogger("condlabel")

_GLOB = re.compile(r"[*?\[]")
# What `write_shard` names its files: a shard of a condlabel output, never a corpus file.
_SHARD_NAME = re.compile(r"part-(s[0-9]+-)?[0-9a-f]{20}\.parquet")  # `s<seq>-` since runs have one
# Small inputs are still spread over this many read tasks, so several readers work at once.
_MIN_READ_TASKS = 8


def _contains(outer: str, inner: str) -> bool:
    return outer == inner or inner.startswith(outer.rstrip("/") + "/")


def plan_inputs(cfg: ConvertConfig) -> list[InputFile]:
    """Expand and check inputs; fail before any work when something is missing, or when a file
    named as an input is of a kind condlabel does not read. Files of such kinds found under a
    directory or by a glob are skipped (one warning), never read nor recorded."""
    if not cfg.input.paths:
        raise InputNotFound("no input given: pass --input URI (or set input.paths in the config)")
    auto = cfg.input.format == "auto"
    if auto:
        _refuse_unsupported_named(cfg.input.paths, cfg.storage)
    files = expand_inputs(cfg.input.paths, cfg.storage)
    if auto:
        files = _supported(files, cfg.input.paths)
    usable = usable_inputs(files, cfg.input.paths, cfg.storage)
    if not usable:
        raise InputNotFound(
            f"input {', '.join(cfg.input.paths)}: only bookkeeping files and condlabel output "
            "shards, nothing to read"
        )
    return usable


def _refuse_unsupported_named(inputs: list[str], storage: StorageConfig) -> None:
    problems = []
    for uri in inputs:
        if detect_format(uri) is not None:
            continue
        scheme, path = split_uri(uri)
        fs = filesystem(scheme, storage)
        if (not _GLOB.search(path) or fs.exists(path)) and fs.isfile(path):
            problems.append(
                f"input.paths: {uri}: not a kind of file condlabel reads ({_suffix(uri)}); "
                f"supported: {', '.join(SUPPORTED_SUFFIXES)} (or set input.format)"
            )
    if problems:
        raise ConfigError(problems)


def _supported(files: list[InputFile], inputs: list[str]) -> list[InputFile]:
    """The files of a kind condlabel reads; the others are summarised in one warning (counts
    per suffix, a few names), or, when nothing is left, named in the error."""
    kept = [f for f in files if detect_format(f.uri) is not None]
    skipped = [f.uri for f in files if detect_format(f.uri) is None]
    if not skipped:
        return kept
    counts = Counter(_suffix(uri) for uri in skipped)
    what = ", ".join(f"{n} {suffix}" for suffix, n in counts.most_common())
    names = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
    if not kept:
        raise InputNotFound(
            f"input {', '.join(inputs)}: no file of a kind condlabel reads ({what}: {names}); "
            f"supported: {', '.join(SUPPORTED_SUFFIXES)}"
        )
    log.warning(
        "input: %d file(s) of a kind condlabel does not read skipped (%s), e.g. %s; supported: %s",
        len(skipped),
        what,
        names,
        ", ".join(SUPPORTED_SUFFIXES),
    )
    return kept


_COMPRESSION = ("gz", "zst", "zstd", "bz2", "xz")


def _suffix(uri: str) -> str:
    """`.csv`, `.csv.gz`, or `(no suffix)`: how the skipped files are counted."""
    parts = posixpath.basename(uri).split(".")[1:]
    if not parts or not parts[-1]:
        return "(no suffix)"
    return "." + ".".join(
        parts[-2:] if len(parts) > 1 and parts[-1] in _COMPRESSION else parts[-1:]
    )


def check_overlap(inputs: list[str], output: str) -> None:
    """Refuse an output prefix inside an input (each run would read its own shards as new
    documents) or an input inside the output; every such pair is named."""
    problems = [
        f"output.uri: {output} overlaps input {uri}: the run would read its own output as "
        "input. Write to a prefix outside every input (and keep inputs out of the output)."
        for uri in inputs
        if _overlaps(uri, output)
    ]
    if problems:
        raise ConfigError(problems)


def _overlaps(input_uri: str, output: str) -> bool:
    scheme, root = literal_root(input_uri)
    out_scheme, out_path = split_uri(output)
    out_path = out_path.rstrip("/") or "/"
    if scheme != out_scheme:
        return False
    if _contains(out_path, root):
        return True  # the input lies inside the output
    if not _contains(root, out_path):
        return False
    pattern = split_uri(input_uri)[1]
    if not _GLOB.search(pattern) or "**" in pattern:
        return True
    # A glob matches one name per level: it reaches into the output only if it goes deeper
    # than the output and its levels match the output's path.
    levels, out_levels = pattern.strip("/").split("/"), out_path.strip("/").split("/")
    return len(levels) > len(out_levels) and all(
        fnmatch.fnmatchcase(name, level) for name, level in zip(out_levels, levels, strict=False)
    )


def _hidden_below(path: str, root: str) -> bool:
    """A name starting with `_` or `.` below `root` (the input named itself is never hidden)."""
    if path == root:
        return False
    rel = posixpath.relpath(path, root) if _contains(root, path) else posixpath.basename(path)
    return any(part.startswith(("_", ".")) for part in rel.split("/"))


def usable_inputs(
    files: list[InputFile], inputs: list[str], storage: StorageConfig | None = None
) -> list[InputFile]:
    """The files a run reads: bookkeeping (`_*`, `.*` below an input's literal root, as a glob
    may match them) and the shards of a condlabel output (a directory beside a `_manifest/` or
    `_lease.json`) are skipped, each with a warning naming it."""
    roots = [literal_root(uri)[1] for uri in inputs]
    checked: dict[str, bool] = {}
    kept = []
    for f in files:
        scheme, path = split_uri(f.uri)
        directory = posixpath.dirname(path)
        if any(_contains(root, path) and _hidden_below(path, root) for root in roots):
            log.warning("input %s skipped: bookkeeping (a name starting with _ or .)", f.uri)
        elif _SHARD_NAME.fullmatch(posixpath.basename(path)) and checked.setdefault(
            directory, _is_output_prefix(scheme, directory, storage)
        ):
            log.warning("input %s skipped: a shard of a condlabel output", f.uri)
        else:
            kept.append(f)
    return kept


def _is_output_prefix(scheme: str, directory: str, storage: StorageConfig | None) -> bool:
    fs = filesystem(scheme, storage)
    return fs.exists(posixpath.join(directory, MANIFEST_DIR)) or fs.exists(
        posixpath.join(directory, LEASE_NAME)
    )


BYTES_PER_READ_TASK = 64 * 2**20
"""Input bytes one read task reads: consecutive small files are grouped up to this size (a
larger file is a task of its own), so many small files do not cost a Ray task each; each file
keeps its own stats and rejects. Measured in bench/small_files.py."""


def read_tasks(files: list[InputFile], bytes_per_task: int | None = None) -> list[list[InputFile]]:
    """Consecutive files grouped into read tasks of up to `bytes_per_task` bytes (a larger file
    is a task of its own), so a corpus of many small files does not pay a Ray task per file.
    A small input is still spread over a few tasks, for parallel readers."""
    total = sum(f.size for f in files)
    if bytes_per_task is None:  # read at call time, so a test or bench may set the constant
        bytes_per_task = BYTES_PER_READ_TASK
    budget = max(1, min(bytes_per_task, math.ceil(total / _MIN_READ_TASKS)))
    groups: list[list[InputFile]] = []
    size = 0
    for f in files:
        if not groups or size + f.size > budget:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += f.size
    return groups
