"""Retry with capped exponential backoff for transient network errors (download, streaming, push).

Transient: a reset or refused connection, a timeout, HTTP 5xx, 429 and S3 throttling (``SlowDown``,
``Throttling``, ``RequestTimeout``). Never retried: a missing object (404: ``FileNotFoundError``), permissions
and other 4xx, and every integrity error (a checksum mismatch is data, not the network). fsspec backends retry
some of these themselves (s3fs does); this layer covers the rest (plain HTTP, a request that fails after its
backend gave up) and caps the total so a dead remote fails in seconds, not hours.
"""

from __future__ import annotations

import errno
import os
import random
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

ATTEMPTS = int(os.environ.get("HESTDATA_RETRIES", "5"))  # tries in all (1 = no retry)
BASE_DELAY_S = float(os.environ.get("HESTDATA_RETRY_DELAY_S", "0.25"))  # the first wait; each doubles it
MAX_DELAY_S = 8.0
_TRANSIENT_ERRNO = {errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EPIPE,
                    errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETRESET}
_THROTTLE_WORDS = ("SlowDown", "Throttl", "RequestTimeout", "TooManyRequests", "ServiceUnavailable",
                   "InternalError")


def _status(exc: BaseException) -> int | None:
    for attr in ("status", "status_code", "code"):
        v = getattr(exc, attr, None)
        if isinstance(v, int) and 100 <= v < 600:
            return v
    resp = getattr(exc, "response", None)
    if isinstance(resp, dict):  # botocore ClientError
        v = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return int(v) if isinstance(v, int) else None
    return None


def is_transient(exc: BaseException) -> bool:
    """Is ``exc`` (or the exception it was raised from) a network failure worth another try?"""
    seen = 0
    e: BaseException | None = exc
    while e is not None and seen < 8:
        # hestdata's own errors (integrity, store, input: hestdata.errors, a layer above io) are never transient
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)) or \
                type(e).__module__.startswith("hestdata."):
            return False
        status = _status(e)
        if status is not None:
            return status >= 500 or status in (408, 429)
        if isinstance(e, (ConnectionError, TimeoutError)):
            return True
        if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNO:
            return True
        name = type(e).__name__
        if name in ("ClientConnectionError", "ServerDisconnectedError", "ClientPayloadError", "ClientOSError",
                    "ServerTimeoutError", "ConnectTimeoutError", "ReadTimeoutError", "EndpointConnectionError"):
            return True
        text = str(e)
        if any(w in text for w in _THROTTLE_WORDS):
            return True
        e = e.__cause__ or e.__context__
        seen += 1
    return False


def backoff_s(attempt: int, rng: random.Random | None = None) -> float:
    """Delay before try ``attempt + 1`` (attempt counts from 1): full jitter under a capped doubling."""
    cap = min(MAX_DELAY_S, BASE_DELAY_S * 2 ** (attempt - 1))
    return (rng or random).uniform(cap / 2, cap)


def with_retries(fn: Callable[[], T], *, attempts: int | None = None, sleep: Callable[[float], None] = time.sleep,
                 on_retry: Callable[[int, BaseException], None] | None = None) -> T:
    """``fn()``, tried again after a transient error up to ``attempts`` tries in all; other errors at once."""
    n = max(1, ATTEMPTS if attempts is None else attempts)
    for attempt in range(1, n + 1):
        try:
            return fn()
        except Exception as exc:
            if attempt == n or not is_transient(exc):
                raise
            if on_retry is not None:
                on_retry(attempt, exc)
            sleep(backoff_s(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


def cat_file(fs: object, path: str, start: int | None = None, end: int | None = None) -> bytes:
    """``fs.cat_file(path, start, end)`` with retries on transient errors (the remote read every reader uses)."""
    return with_retries(lambda: fs.cat_file(path, start=start, end=end))  # type: ignore[attr-defined]
