"""condlabel: corpora -> chunks -> labeler actor pool -> tagged parquet for conditional pretraining."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `condlabel.read_tagged` without importing pyarrow at `import condlabel` time.
    if name == "read_tagged":
        from condlabel.readback import read_tagged

        return read_tagged
    raise AttributeError(f"module 'condlabel' has no attribute {name!r}")


__all__ = ["__version__", "read_tagged"]
