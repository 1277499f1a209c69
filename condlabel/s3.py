"""The S3 client every s3:// path goes through: s3fs with bounded waits on an unreachable
endpoint, its failures as `StorageError`, and the conditional writes the writer lease needs.

botocore retries every failed request `storage.retries` times with a backoff of up to 20 s; for
throttling that is right, for an endpoint that refuses connections it is minutes of waiting
per request. A hook on botocore's retry decision stops after `CONNECT_RETRIES` such failures,
and the error names the endpoint and how long it was tried.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import botocore.exceptions as boto
from fsspec.asyn import sync, sync_wrapper
from fsspec.exceptions import FSTimeoutError
from s3fs import S3FileSystem

from condlabel.config.secrets import strip_userinfo
from condlabel.storage_errors import ConditionFailed, StorageError

# The endpoint cannot be reached, or stopped answering mid-request.
UNREACHABLE = (
    boto.EndpointConnectionError,
    boto.ConnectTimeoutError,
    boto.ConnectionClosedError,
    boto.ReadTimeoutError,
    FSTimeoutError,
    asyncio.TimeoutError,
)
CREDENTIALS = (boto.NoCredentialsError, boto.PartialCredentialsError, boto.ProfileNotFound)
# Fixed, not a setting: 4 attempts ride out a blip, and a dead endpoint fails within about
# 4 x `storage.CONNECT_TIMEOUT_S`. Read at each retry decision, so a test can patch it.
CONNECT_RETRIES = 3
# What S3 answers when a conditional write loses (412), or races another one (409).
_CONDITION_CODES = ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey")


class BoundedS3FileSystem(S3FileSystem):
    """s3fs that gives up on an unreachable endpoint after `CONNECT_RETRIES` retries and
    raises `StorageError` (exit 3) naming the endpoint, the time spent and the cause."""

    # s3fs's own retry layer (for truncated reads) sits on top of botocore's: keep it short.
    retries = 2

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._hooked: object | None = None

    @property
    def endpoint(self) -> str:
        return strip_userinfo(
            self.client_kwargs.get("endpoint_url") or self.endpoint_url or "the AWS endpoint"
        )

    async def set_session(self, refresh: bool = False, kwargs: dict | None = None) -> Any:
        client = await super().set_session(refresh, kwargs or {})
        if client is not self._hooked:
            client.meta.events.register("needs-retry.s3", self._stop_retrying_unreachable)
            self._hooked = client
        return client

    def _stop_retrying_unreachable(
        self, attempts: int, caught_exception: BaseException | None = None, **_: Any
    ) -> None:
        # Raising here ends botocore's retry loop with the connection error itself.
        if isinstance(caught_exception, UNREACHABLE) and attempts > CONNECT_RETRIES:
            raise caught_exception

    async def _call_s3(self, method: str, *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        try:
            return await super()._call_s3(method, *args, **kwargs)
        except UNREACHABLE as exc:
            seconds = time.monotonic() - started
            raise StorageError(
                f"S3 endpoint {self.endpoint} unreachable: gave up after {seconds:.1f} s and "
                f"{CONNECT_RETRIES} retries ({type(exc).__name__}: {strip_userinfo(str(exc))}); "
                "check that the server is up and that storage.endpoint_url (or AWS_ENDPOINT_URL) "
                "names it"
            ) from exc
        except CREDENTIALS as exc:
            raise StorageError(
                f"S3 credentials for {self.endpoint}: {type(exc).__name__}: {exc}. Set both "
                "storage.access_key_id and storage.secret_access_key, or fix the AWS chain "
                "(AWS_ACCESS_KEY_ID with AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance role)"
            ) from exc

    # s3fs binds its blocking `call_s3` to its own `_call_s3`: bind it to the one above.
    call_s3 = sync_wrapper(_call_s3)


# --------------------------------------------------------------------------- conditional writes


def _condition_failed(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):  # s3fs's translation of a failed If-None-Match
        return True
    cause = exc if isinstance(exc, boto.ClientError) else exc.__cause__
    if isinstance(cause, boto.ClientError):
        return cause.response.get("Error", {}).get("Code") in _CONDITION_CODES
    return isinstance(exc, FileNotFoundError)


def get_with_etag(fs: S3FileSystem, path: str) -> tuple[bytes, str] | None:
    """An object's bytes and ETag from one GET (so they belong together); None if absent."""

    async def get() -> tuple[bytes, str]:
        bucket, key, _ = fs.split_path(path)
        response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
        async with response["Body"] as body:
            return await body.read(), response["ETag"]

    try:
        return sync(fs.loop, get)
    except FileNotFoundError:
        return None


def put(fs: S3FileSystem, path: str, data: bytes, etag: str | None) -> str:
    """PUT `data` only if the object is absent (`etag` None: If-None-Match *) or still has
    `etag` (If-Match); returns the new ETag, or raises `ConditionFailed`."""
    bucket, key, _ = fs.split_path(path)
    condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
    try:
        response = fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, **condition)
    except OSError as exc:
        if _condition_failed(exc):
            raise ConditionFailed(str(exc)) from exc
        raise
    return response["ETag"]


def delete(fs: S3FileSystem, path: str, etag: str) -> None:
    """DELETE the object only if it still has `etag`; raises `ConditionFailed` otherwise."""
    bucket, key, _ = fs.split_path(path)
    try:
        fs.call_s3("delete_object", Bucket=bucket, Key=key, IfMatch=etag)
    except OSError as exc:
        if _condition_failed(exc):
            raise ConditionFailed(str(exc)) from exc
        raise
