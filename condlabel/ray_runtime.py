"""Connecting to Ray, one way for every command: a given address, else RAY_ADDRESS (as under
`ray job submit`), else a new embedded local Ray that lives as long as the command."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to Ray or start an embedded one; True when this call did (and so owns it)."""
    import ray

    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
    else:
        # One logical CPU more than the cores: labeler actors and train workers take whole
        # CPUs, and the light read/write tasks need a share left over, or a small machine stalls.
        ray.init(address="local", num_cpus=num_cpus or (os.cpu_count() or 1) + 1)
    return True


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[None]:
    """Ray for the duration of a block; an embedded Ray started here is shut down after it."""
    import ray

    started = connect(address, num_cpus)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


_verbose = False


def set_verbose(verbose: bool) -> None:
    """`condlabel -v`: Ray's own logs and progress output go to the console too."""
    global _verbose
    _verbose = verbose


def is_verbose() -> bool:
    return _verbose
