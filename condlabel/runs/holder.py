"""Who holds a lease, and whether it provably died: its process on this machine, or its Ray
job on the cluster this process is connected to (`condlabel.runs.lease` decides)."""

from __future__ import annotations

import os
import socket
from contextlib import suppress
from typing import Any


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def host_id() -> str:
    """This machine and process namespace: pids mean the same process only within one.
    (Containers may share a hostname; they do not share a boot id and pid namespace.)"""
    namespace = ""
    with suppress(OSError):
        namespace = os.readlink("/proc/self/ns/pid")
    boot = _read_text("/proc/sys/kernel/random/boot_id") or ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot), to tell it from a later process that
    reuses its pid; None where /proc is not available, or for a zombie."""
    stat = _read_text(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    return None if fields[0] == "Z" else fields[19]


def holder_is_dead(held: dict[str, Any]) -> bool:
    """True only when the holder provably died: same machine and pid namespace, and its pid is
    gone (or a zombie, or a different process now)."""
    pid = held.get("pid")
    if held.get("host_id") != host_id() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    if not os.path.exists("/proc/self/stat"):
        return False
    return process_start(pid) != held.get("pid_started")


MARKER_NAMESPACE = "condlabel-leases"


def ray_marker(token: str) -> tuple[dict[str, str], Any] | None:
    """Tie the lease to this process's Ray job: a named actor that Ray removes when the job
    (its driver) ends; (what the lease records, the actor's handle), None when this process is
    not connected to Ray. Keep the handle: the actor is gone once no handle is left."""
    import ray

    if not ray.is_initialized():
        return None

    @ray.remote(num_cpus=0)
    class LeaseMarker:
        def alive(self) -> bool:
            return True

    name = f"lease-{token}"
    marker = LeaseMarker.options(name=name, namespace=MARKER_NAMESPACE).remote()  # type: ignore[attr-defined]
    # Wait until it runs: a lease must never name a marker that others cannot see yet.
    ray.get(marker.alive.remote(), timeout=120)
    return {"gcs_address": ray.get_runtime_context().gcs_address, "marker": name}, marker


def holder_job_ended(held: dict[str, Any]) -> bool:
    """True only when the holder's Ray job provably ended: this process is connected to the
    Ray cluster the holder ran on (or `RAY_ADDRESS` names it), and the holder's marker actor
    is gone. A holder on another machine of the cluster is covered; one outside Ray is not."""
    info = held.get("ray")
    if not isinstance(info, dict) or not info.get("marker"):
        return False
    import ray

    if not ray.is_initialized():
        if not os.environ.get("RAY_ADDRESS"):
            return False
        from condlabel.ray_runtime import connect

        connect()
    if ray.get_runtime_context().gcs_address != info.get("gcs_address"):
        return False
    try:
        ray.get_actor(info["marker"], namespace=MARKER_NAMESPACE)
    except ValueError:  # no such actor: its job ended (or the cluster restarted)
        return True
    return False
