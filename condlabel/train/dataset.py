"""Reading the tagged shards for training: the rows of each document's current version, the
columns the prefix needs, and the order of each pass (`data.shuffle`). Ray Data at the edge:
`read_training_rows` is the one read of the training data.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from condlabel.config import ConfigError, StorageConfig
from condlabel.config.train import TrainDataConfig
from condlabel.prefix import RAW_TAGS
from condlabel.readback import shard_schema
from condlabel.train.data import (
    DATA_COLUMNS,
    VERSION_COLUMNS,
    keep_rows,
    latest_row_keys_by_output,
    version_keys,
)

log = logging.getLogger("condlabel")

MATERIALIZE_MAX_ROWS = 200_000
"""Training data of up to this many rows is read from storage once, into Ray's object store
(spilled to local disk when it does not fit), and every pass iterates it there; larger data is
streamed from storage again on every pass, as a crawl-sized corpus must be. Re-reading a small
dataset costs more than it trains: each pass starts Ray Data's read tasks and actors anew."""


def shuffle_files(data: TrainDataConfig, seed: int) -> Any:
    """The `shuffle` argument of Ray Data's read for `data.shuffle`: a seeded file order, new
    on each execution of the read (each pass over streamed data); None keeps the file order."""
    if not data.shuffle:
        return None
    from ray.data import FileShuffleConfig

    return FileShuffleConfig(seed=seed, reseed_after_execution=True)


def is_materialized(dataset: Any) -> bool:
    from ray.data.dataset import MaterializedDataset

    return isinstance(dataset, MaterializedDataset)


def read_training_rows(
    files: list[str],
    storage: StorageConfig,
    extra_columns: tuple = (),
    materialize_max_rows: int = 0,
    outputs: list[list[str]] | None = None,
    file_shuffle: Any = None,
):
    """The training rows as a Ray dataset: the latest version of each document only, as
    `condlabel.readback.read_tagged` reads them (a document whose text changed keeps its old
    rows in the output; training on them would repeat superseded text). `outputs`: `files`
    grouped by output (`training_outputs`), each with its own versions; default: one output.

    The versions are decided on the driver from the key columns alone; the rows are filtered
    as Ray Data reads them. Up to `materialize_max_rows` rows are read once and kept in the
    object store (`MATERIALIZE_MAX_ROWS`). `file_shuffle`: Ray Data's read `shuffle`
    (`shuffle_files`).
    """
    rows, count = _training_dataset(files, storage, extra_columns, outputs or [files], file_shuffle)
    if 0 < count <= materialize_max_rows:
        log.info("reading the %d training rows once, into the object store", count)
        return rows.materialize()
    return rows


def _training_dataset(
    files: list[str],
    storage: StorageConfig,
    extra_columns: tuple,
    outputs: list[list[str]],
    file_shuffle: Any = None,
):
    """(the training rows as a lazy Ray dataset, their number)."""
    import pyarrow.dataset as pads
    import ray.data

    paths, data_fs = arrow_storage(files, storage)
    keys = pads.dataset(paths, format="parquet", filesystem=data_fs)
    # Every shard's columns: a kept field may be missing from the first (another keep list).
    schema = shard_schema(keys)  # one footer read per shard, for the checks and the versions
    names = schema.names
    missing = [c for c in extra_columns if c != RAW_TAGS and c not in names]
    if missing:  # a kept input field the template shows: no silent empty prefix
        raise ConfigError(
            [
                f"data.format.prefix_template: shows the kept input field {name!r}, a column "
                "the training data does not have; keep it at conversion (input.keep_fields)"
                for name in missing
            ]
        )
    columns = DATA_COLUMNS + [c for c in extra_columns if c in names]
    if not set(VERSION_COLUMNS) <= set(names):
        log.warning("the training data has no %s columns: every row is used", VERSION_COLUMNS)
        kept = None
    else:
        kept = latest_row_keys_by_output(
            [
                version_keys(
                    pads.dataset(
                        arrow_storage(output, storage)[0], format="parquet", filesystem=data_fs
                    ),
                    schema=schema,
                )
                for output in outputs
                if output
            ]
        )
    read = partial(ray.data.read_parquet, paths, filesystem=data_fs, shuffle=file_shuffle)
    if kept is None:
        rows = read().select_columns(columns)
        return rows, keys.count_rows()
    log.info("training on the latest versions: %d of %d rows", len(kept), keys.count_rows())
    # select_columns, not read_parquet(columns=...) (deprecated in Ray 2.60): the projection
    # still reaches the parquet scan
    rows = read().select_columns(columns + VERSION_COLUMNS)
    keep = partial(keep_rows, kept=kept, columns=columns)
    return rows.map_batches(keep, batch_format="pyarrow"), len(kept)


def arrow_storage(uris: list[str], storage: StorageConfig):
    """(paths, pyarrow filesystem or None) for Ray Data and Ray Train, all on one scheme.

    Remote storage goes through the fsspec filesystem every other command uses (s3fs, with all
    of `storage:`), wrapped for pyarrow. It also writes small objects with one PUT, where
    pyarrow's own S3 client completes an empty multipart upload for Ray Train's marker file,
    which some S3 servers reject. Local paths need no wrapper.
    """
    from condlabel.storage import filesystem, split_uri

    split = [split_uri(uri) for uri in uris]
    scheme = split[0][0]
    paths = [path for _, path in split]
    if scheme == "file":
        return paths, None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return paths, PyFileSystem(FSSpecHandler(filesystem(scheme, storage)))


# --------------------------------------------------------------------------- on each worker
