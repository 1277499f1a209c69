"""condlabel: corpora -> chunks -> labeler actor pool -> tagged parquet for conditional pretraining."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    import pyarrow as pa


def read_tagged(uri: str, columns: list[str] | None = None, filter: Any = None, storage: Any = None) -> pa.Table:  # noqa: A002
    """Read a condlabel output prefix into a pyarrow Table (see `condlabel.readback.read_tagged`)."""
    from condlabel.readback import read_tagged as _read

    return _read(uri, columns=columns, filter=filter, storage=storage)


__all__ = ["__version__", "read_tagged"]
