"""The storage exceptions, in a module of their own so the S3 client (`s3.py`), `storage.py` and
the writer lease share them without importing each other."""


class StorageError(RuntimeError):
    """An input or output location is missing, empty, unreadable or unwritable, or its endpoint
    cannot be reached (exit 3)."""


class InputNotFound(StorageError):
    """An input names nothing: no input given, a path that does not exist, a glob matching no
    file, a directory without a file to read. A usage error (exit 2), not a storage fault."""


class NotAnOutput(StorageError):
    """A path given as condlabel output holds something else (an input folder, a foreign
    parquet file): a usage error (exit 2), saying what was found."""


class ConditionFailed(Exception):
    """A conditional write or delete found the object changed since it was read (or gone, or
    already there)."""
