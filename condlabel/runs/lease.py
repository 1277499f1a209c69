"""One writer per output prefix: the lease object `_lease.json`.

A run creates the lease only if there is none (S3 `If-None-Match: *`), renews it only if it is
still the object the run wrote (`If-Match: <etag>`), and deletes it the same way; on a local
disk the same compare-and-swap is built from `link` and `rename`. So two runs never both believe
they hold it, and renewal never overwrites another run's lease. A run that finds its lease
taken over (it was paused past the TTL, or the lease was broken) stops with `RunRefused`
(exit 4) at its next `ensure_held()`, which the writer calls before each write.

A lease left by a killed run is taken over at once when its holder is provably dead: on the
same machine and process namespace, its pid is gone or is another process now; or, on any
machine of the Ray cluster this run is connected to, the holder's Ray job has ended (a named
actor the holder created is gone). Otherwise it is taken over when it expires, `lease_ttl_s`
after its last renewal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import socket
import threading
import time
import uuid
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import fsspec

from condlabel.config import StorageConfig
from condlabel.runs.holder import (
    holder_is_dead,
    holder_job_ended,
    host_id,
    process_start,
    ray_marker,
)
from condlabel.schema import LEASE_NAME
from condlabel.storage import is_local, resolve, staged_beside, write_bytes_atomic
from condlabel.storage_errors import ConditionFailed, StorageError

log = logging.getLogger("condlabel")


class RunRefused(RuntimeError):
    """The run must not proceed (another writer holds the prefix, or labelers would mix)."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- where it is kept


class LeaseStore(Protocol):
    """Compare-and-swap on one object; `tag` is what `read` returned (None: absent)."""

    def read(self) -> tuple[bytes, str] | None: ...
    def write(self, data: bytes, tag: str | None) -> str: ...
    def delete(self, tag: str) -> None: ...


class _S3Store:
    """Conditional requests: the server compares the ETag (If-Match / If-None-Match)."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        from condlabel import s3  # s3fs: loaded only for s3:// outputs

        self.s3, self.fs, self.path = s3, fs, path

    def read(self) -> tuple[bytes, str] | None:
        return self.s3.get_with_etag(self.fs, self.path)

    def write(self, data: bytes, tag: str | None) -> str:
        return self.s3.put(self.fs, self.path, data, tag)

    def delete(self, tag: str) -> None:
        self.s3.delete(self.fs, self.path, tag)


class _ComparingStore:
    """Read, compare the content hash, then write: atomic only under a lock (`_LocalStore`);
    on other filesystems (gs://, ...) a best effort with a short race window."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str):
        self.fs, self.path = fs, path

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return data, hashlib.md5(data).hexdigest()

    def _check(self, tag: str | None) -> None:
        current = self.read()
        if (current and current[1]) != tag:
            raise ConditionFailed(f"{self.path} changed since it was read")

    def write(self, data: bytes, tag: str | None) -> str:
        self._check(tag)
        write_bytes_atomic(self.fs, self.path, data)
        return hashlib.md5(data).hexdigest()

    def delete(self, tag: str) -> None:
        self._check(tag)
        self.fs.rm(self.path)


# How long a read waits for a renewal's swap to end (it lasts a rename and a link).
SWAP_WAITS, SWAP_WAIT_S = 50, 0.01
# A `.taken-*` file this old (by its ctime, which the rename that made it set) was left by a
# process stopped mid-swap: reads neither wait for it nor keep it.
STALE_SWAP_S = 30.0


class _LocalStore(_ComparingStore):
    """Compare-and-swap with the atomic steps a local disk has, and no lock (a stopped process
    holding a lock would block every other run): `link` creates a name only if it is absent;
    `rename` takes the current lease out of place for exactly one taker, who then checks it is
    the one expected and links the new one in (or puts it back)."""

    def _link(self, source: str) -> None:
        try:
            os.link(source, self.path)
        except FileExistsError as exc:
            raise ConditionFailed(f"{self.path} was created by another run") from exc

    def _take(self, tag: str) -> str:
        """Move the lease out of place if it is the one with `tag`; its new name is returned."""
        taken = f"{posixpath.dirname(self.path)}/.taken-{uuid.uuid4().hex}-{LEASE_NAME}"
        try:
            os.rename(self.path, taken)
        except FileNotFoundError as exc:
            raise ConditionFailed(f"{self.path} is gone") from exc
        try:
            with open(taken, "rb") as f:
                if hashlib.md5(f.read()).hexdigest() == tag:
                    return taken
        except FileNotFoundError as exc:  # this process was stopped past STALE_SWAP_S
            raise ConditionFailed(f"{self.path} was removed during a swap") from exc
        with suppress(FileExistsError):  # not ours: put it back, unless a newer one is there
            os.link(taken, self.path)
        with suppress(FileNotFoundError):
            os.unlink(taken)
        raise ConditionFailed(f"{self.path} changed since it was read")

    def read(self) -> tuple[bytes, str] | None:
        """The lease, or None if there is none. A renewal takes the lease out of place for a
        moment (`_take`, then `_link`): an absent lease with a `.taken-*` file beside it is a
        swap in progress, not a removal, so it is read again until the swap ends. (Seen in
        CI: a write task's check landed in that moment and stopped a healthy run.)"""
        for _ in range(SWAP_WAITS):
            found = super().read()
            if found is not None or not self._swapping():
                break
            time.sleep(SWAP_WAIT_S)
        else:
            return None  # a `.taken-*` left by a process stopped mid-swap: the lease is gone
        # A swap may have ended between the two looks: one more read settles it.
        return found if found is not None else super().read()

    def _swapping(self) -> bool:
        """A swap is in progress: a recent `.taken-*` lies beside the lease. Stale ones (their
        swap was never finished) are removed, so they cost no later read its wait."""
        directory = posixpath.dirname(self.path)
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            return False
        swapping = False
        for name in names:
            if not (name.startswith(".taken-") and name.endswith(LEASE_NAME)):
                continue
            path = posixpath.join(directory, name)
            try:
                age = time.time() - os.stat(path).st_ctime
            except FileNotFoundError:
                continue  # its swap just ended
            if age < STALE_SWAP_S:
                swapping = True
            else:
                with suppress(FileNotFoundError):
                    os.unlink(path)
                log.warning("removed %s, left by a lease renewal that never finished", path)
        return swapping

    def write(self, data: bytes, tag: str | None) -> str:
        staged = staged_beside(self.path, data)
        try:
            taken = self._take(tag) if tag is not None else None
            try:
                self._link(staged)
            finally:
                if taken:
                    with suppress(FileNotFoundError):
                        os.unlink(taken)
        finally:
            os.unlink(staged)
        return hashlib.md5(data).hexdigest()

    def delete(self, tag: str) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self._take(tag))


def lease_store(output_uri: str, storage: StorageConfig | None) -> tuple[LeaseStore, str]:
    """The store of an output prefix's lease, and the lease's URI."""
    fs, root = resolve(output_uri, storage)
    path = posixpath.join(root, LEASE_NAME)
    uri = output_uri.rstrip("/") + "/" + LEASE_NAME
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "s3" in protocols:
        return _S3Store(fs, path), uri
    if is_local(fs):
        return _LocalStore(fs, path), uri
    return _ComparingStore(fs, path), uri


def _parse(found: tuple[bytes, str] | None) -> dict[str, Any] | None:
    if found is None:
        return None
    try:
        held = json.loads(found[0])
    except (ValueError, UnicodeDecodeError):
        held = None
    if not isinstance(held, dict):
        return {"run_id": "<unreadable lease>", "expires_at": 0}
    return held


def read_lease(output_uri: str, storage: StorageConfig | None = None) -> dict[str, Any] | None:
    """The lease of an output prefix as its holder wrote it; None if there is none."""
    store, _ = lease_store(output_uri, storage)
    return _parse(store.read())


def break_lease(output_uri: str, storage: StorageConfig | None = None) -> dict[str, Any] | None:
    """Remove the lease whoever holds it (`condlabel lease break URI`); returns what it held,
    None if there was none. A live holder notices at its next renewal and stops (exit 4)."""
    store, _ = lease_store(output_uri, storage)
    for _attempt in range(5):  # the holder may renew between our read and our delete
        found = store.read()
        if found is None:
            return None
        try:
            store.delete(found[1])
        except ConditionFailed:
            continue
        return _parse(found)
    raise RunRefused(f"could not break the lease of {output_uri}: it changes on every attempt")


# --------------------------------------------------------------------------- the lease


@dataclass(frozen=True)
class LeaseGuard:
    """What a write task needs to check that its run still holds the lease (picklable)."""

    output_uri: str
    run_id: str
    token: str
    storage: StorageConfig | None = None

    def ensure_held(self) -> None:
        """Raise `RunRefused` unless the lease is still this run's and unexpired (one GET)."""
        held = read_lease(self.output_uri, self.storage)
        if held is None or held.get("token") != self.token:
            by = f" by run {held.get('run_id')}" if held else " (it was removed)"
            raise RunRefused(
                f"run {self.run_id} lost its lease on {self.output_uri}{by}; stopped writing"
            )
        if float(held.get("expires_at", 0)) < time.time():
            raise RunRefused(
                f"run {self.run_id}: its lease on {self.output_uri} expired at "
                f"{held.get('expires')} (not renewed in time); stopped writing"
            )

    def confirm_written(self, uri: str) -> None:
        """After a write: if the lease was lost meanwhile (the process was stopped between
        `ensure_held` and the write), delete what was written and raise `RunRefused`. The run
        that took over saw the lease change hands, so it never relied on this object."""
        try:
            self.ensure_held()
        except RunRefused:
            fs, path = resolve(uri, self.storage)
            with suppress(FileNotFoundError):
                fs.rm_file(path)
            log.error("lease lost during a write: removed %s", uri)
            raise


class Lease:
    """This run's hold on an output prefix: acquired once, renewed every ttl/4 by a thread,
    checked by `ensure_held()` before each write, released at the end."""

    def __init__(
        self,
        output_uri: str,
        run_id: str,
        storage: StorageConfig | None,
        ttl_s: float,
        settle_s: float = 0.0,
    ):
        self.store, self.uri = lease_store(output_uri, storage)
        self.output_uri, self.storage = output_uri, storage
        self.run_id = run_id
        self.ttl_s = ttl_s
        self.settle_s = settle_s
        self.token = uuid.uuid4().hex  # tells this acquisition from any other, same run id or not
        self.previous: dict[str, Any] | None = None
        self.lost: str | None = None
        self.ray: dict[str, str] | None = None  # the Ray job that holds it (`attach_ray`)
        self._marker: Any = None
        self.renew_error: Exception | None = None
        self._tag: str | None = None
        self._valid_until = 0.0  # time.monotonic(): it keeps counting while the process is stopped
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> dict[str, Any] | None:
        return _parse(self.store.read())

    def _body(self) -> bytes:
        now = time.time()
        return json.dumps(
            {
                "run_id": self.run_id,
                "token": self.token,
                "host": socket.gethostname(),
                "host_id": host_id(),
                "pid": os.getpid(),
                "pid_started": process_start(os.getpid()),
                **({"ray": self.ray} if self.ray else {}),
                "renewed_at": _iso(now),
                "expires_at": now + self.ttl_s,
                "expires": _iso(now + self.ttl_s),
            }
        ).encode()

    def _write(self, tag: str | None) -> None:
        started = time.monotonic()
        self._tag = self.store.write(self._body(), tag)
        self._valid_until = started + self.ttl_s

    def acquire(self) -> None:
        found = self.store.read()
        held = _parse(found)
        if held is not None and not self._may_take_over(held):
            raise RunRefused(self._refusal(held))
        self.previous = held
        try:
            self._write(found[1] if found else None)
        except ConditionFailed as exc:
            other = self.read()
            raise RunRefused(
                f"lost the race for {self.uri} to run {other and other.get('run_id')}"
            ) from exc
        if self.settle_s:  # for stores that ignore conditional requests: read back after a while
            time.sleep(self.settle_s)
            mine = self.read()
            if not mine or mine.get("token") != self.token:
                raise RunRefused(
                    f"lost the race for {self.uri} to run {mine and mine.get('run_id')}"
                )
        self._thread = threading.Thread(
            target=self._renew_loop, name="condlabel-lease", daemon=True
        )
        self._thread.start()

    def _may_take_over(self, held: dict[str, Any]) -> bool:
        if held.get("run_id") == self.run_id or float(held.get("expires_at", 0)) <= time.time():
            return True
        if holder_is_dead(held):
            why = f"its holder, run {held.get('run_id')} (pid {held.get('pid')} on this machine), is gone"
        elif holder_job_ended(held):
            why = f"the Ray job of its holder, run {held.get('run_id')} on {held.get('host')}, has ended"
        else:
            return False
        log.warning("lease %s: %s; taking over", self.uri, why)
        return True

    def attach_ray(self) -> None:
        """Once this process is connected to Ray: record its job in the lease, so a later run
        on the same cluster can take over at once when the job ends (killed, `ray job stop`),
        from any machine."""
        marked = ray_marker(self.token)
        if marked:
            self.ray, self._marker = marked
            self.renew()

    def _refusal(self, held: dict[str, Any]) -> str:
        left = float(held.get("expires_at", 0)) - time.time()
        return (
            f"another run is writing to this output prefix: run {held.get('run_id')} on "
            f"{held.get('host')} (pid {held.get('pid')}); its lease {self.uri} expires at "
            f"{held.get('expires')} (in {left:.0f} s) unless renewed. Wait for it to finish; if "
            f"it died on another machine, rerun after that time or remove the lease with "
            f"`condlabel lease break {self.output_uri}`."
        )

    def guard(self) -> LeaseGuard:
        """The check for write tasks in other processes (Ray workers)."""
        return LeaseGuard(self.output_uri, self.run_id, self.token, self.storage)

    def renew(self) -> None:
        """Extend the lease if it is still ours; if it is not, mark it lost (never overwrite)."""
        with self._lock:
            if self.lost or self._tag is None:
                return
            try:
                self._write(self._tag)
            except ConditionFailed:
                other = self.read()
                self.lost = (
                    f"run {self.run_id} lost its lease {self.uri}"
                    + (f" to run {other.get('run_id')}" if other else " (it was removed)")
                    + "; stopped writing"
                )
                log.error("%s", self.lost)
            except Exception as exc:  # noqa: BLE001 - retried next period; ensure_held decides
                self.renew_error = exc
                log.warning("lease %s: renewal failed (%s: %s)", self.uri, type(exc).__name__, exc)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            self.renew()
            if self.lost:
                return

    def ensure_held(self) -> None:
        """Raise `RunRefused` unless this run still holds the lease; call before each write.
        Past its validity (the process was paused, or renewals failed) it renews first: that
        succeeds only if nobody took the lease meanwhile."""
        if not self.lost and time.monotonic() > self._valid_until:
            self.renew()
        if self.lost:
            raise RunRefused(self.lost)
        if time.monotonic() > self._valid_until:
            expired = f"run {self.run_id}: its lease {self.uri} expired and could not be renewed"
            if isinstance(self.renew_error, StorageError):  # storage is down: say so (exit 3)
                raise StorageError(f"{expired}: {self.renew_error}") from self.renew_error
            raise RunRefused(f"{expired} ({self.renew_error!r}); stopped writing")

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours. Never raises: it runs in a
        `finally`, where its own failure must not hide the error that ended the run."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if self._marker is not None:
            import ray

            with suppress(Exception):
                ray.kill(self._marker)
            self._marker = None
        with self._lock:
            if self._tag is None or self.lost:
                return
            try:
                self.store.delete(self._tag)
            except ConditionFailed:
                log.warning("lease %s was taken over by another run; left in place", self.uri)
            except Exception as exc:  # noqa: BLE001 - logged; it expires on its own
                log.warning(
                    "could not release lease %s (%s: %s); it expires on its own",
                    self.uri,
                    type(exc).__name__,
                    exc,
                )
            self._tag = None
