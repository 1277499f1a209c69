"""Connecting to Ray, one way for every command: a given address, else RAY_ADDRESS (as under
`ray job submit`), else a new embedded local Ray that lives as long as the command.

An embedded Ray listens on the loopback interface only (127.0.0.1): a run on a laptop has no
reason to be reachable from the network. A Ray joined by address is left as its operator set it.

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
        with loopback_only():
            ray.init(
                address="local",
                num_cpus=num_cpus or (os.cpu_count() or 1) + 1,
                dashboard_host="127.0.0.1",
                **kwargs,
            )
    return True


# Ray's switch for a single-machine Ray (its default on macOS and Windows): the node's address
# is 127.0.0.1 and its servers (GCS, raylet, workers, agents) bind to it instead of `*`.
# `ray.init(_node_ip_address="127.0.0.1")` does not do it: Ray turns a loopback address into
# the machine's network address.
_SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@contextmanager
def loopback_only() -> Iterator[None]:
    """Around starting an embedded Ray: every process it starts listens on 127.0.0.1 only.

    Restored afterwards, so a later `ray.init(address=...)` in this process (joining a real
    cluster) reports its network address again.
    """
    from ray._private import ray_constants  # read at each node start, so set it here too

    saved_env, saved_flag = os.environ.get(_SINGLE_MACHINE_ENV), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_SINGLE_MACHINE_ENV] = "0"  # for the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # for this one, which imported Ray already
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop(_SINGLE_MACHINE_ENV, None)
        else:
            os.environ[_SINGLE_MACHINE_ENV] = saved_env


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
    the whole run (`condlabel.runs.progress`).
    """
    if _verbose:
        return
    import ray.data  # configures the `ray.data` logger on import

    for handler in logging.getLogger("ray.data").handlers:
        if handler.name == "console":
            handler.setLevel(logging.ERROR)
    if sys.stdout.isatty():
        ray.data.DataContext.get_current().enable_progress_bars = False
