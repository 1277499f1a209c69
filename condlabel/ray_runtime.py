"""Connecting to Ray, one way for every command: a given address, else RAY_ADDRESS (as under
`ray job submit`), else a new embedded local Ray that lives as long as the command.

Also where Ray's console output is decided. By default Ray keeps its own logs in its log files
(the session's `logs/` directory, Ray Data's in `logs/ray-data/`) and only its errors reach the
console, so a run shows condlabel's progress and summary; `condlabel -v` (`set_verbose`) lets
Ray's INFO logs, Ray Data's progress output and the workers' output through as well.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_verbose = False


def set_verbose(verbose: bool) -> None:
    """`condlabel -v`: Ray's own logs and progress output go to the console too."""
    global _verbose
    _verbose = verbose


def is_verbose() -> bool:
    return _verbose


def connect(
    address: str | None = None, num_cpus: int | None = None, *, worker_logs: bool = True
) -> bool:
    """Connect to Ray or start an embedded one; True when this call did (and so owns it).

    `worker_logs`: forward the workers' stdout/stderr to this console (verbose forces it on).
    """
    import ray

    quiet_ray_data()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "log_to_driver": worker_logs or _verbose,
        # The driver's "ray" logger: "Started a local Ray instance", token-auth notices, ...
        "logging_level": logging.INFO if _verbose else logging.ERROR,
    }
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **kwargs)
    else:
        # One logical CPU more than the cores: labeler actors and train workers take whole
        # CPUs, and the light read/write tasks need a share left over, or a small machine stalls.
        ray.init(address="local", num_cpus=num_cpus or (os.cpu_count() or 1) + 1, **kwargs)
    return True


@contextmanager
def ray_session(
    address: str | None = None, num_cpus: int | None = None, *, worker_logs: bool = True
) -> Iterator[None]:
    """Ray for the duration of a block; an embedded Ray started here is shut down after it."""
    import ray

    started = connect(address, num_cpus, worker_logs=worker_logs)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def quiet_ray_data() -> None:
    """Unless verbose, keep Ray Data's logs and progress output off the console.

    Ray Data logs through the `ray.data` logger to a file handler (`ray-data.log`, everything)
    and a console handler; the console one is raised to ERROR. Where stdout is not a terminal,
    Ray Data reports progress as INFO log lines, which so land in its log file only; on a
    terminal it draws a tqdm bar per operator, which is turned off: condlabel draws one bar for
    the whole run (`condlabel.convert.progress`).
    """
    if _verbose:
        return
    import ray.data  # configures the `ray.data` logger on import

    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":
            handler.setLevel(logging.ERROR)
    if sys.stdout.isatty():
        ray.data.DataContext.get_current().enable_progress_bars = False
