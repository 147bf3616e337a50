"""URL → fsspec filesystem, safely per process.

fsspec caches filesystem instances; after a fork (DataLoader workers) an instance created in the parent may
hold sockets, event loops or file handles that must not be shared. ``ProcessLocalFS`` re-creates the
filesystem in each process on first use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


def split_url(source: str | os.PathLike[str]) -> tuple[str, str]:
    """``(protocol, path)`` of a local path or URL; local paths come back absolute with protocol ``file``."""
    s = os.fspath(source)
    if "://" not in s:
        return "file", os.path.abspath(s)
    protocol, rest = s.split("://", 1)
    if protocol == "file":
        return "file", os.path.abspath(rest)
    if protocol in ("http", "https"):  # fsspec's HTTP filesystem takes whole URLs as paths
        return protocol, s.rstrip("/")
    return protocol, rest.rstrip("/")


def to_url(protocol: str, path: str) -> str:
    """Inverse of :func:`split_url`."""
    return path if "://" in path else f"{protocol}://{path}"


def join(base: str, *parts: str) -> str:
    """Join path components with '/' (fsspec paths are POSIX-like everywhere)."""
    out = base.rstrip("/")
    for p in parts:
        out = f"{out}/{p.strip('/')}"
    return out


_AIO_SESSION: Any = None


def fsspec_options(protocol: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """``storage_options`` for a new fsspec filesystem of this process. For S3, one botocore session per
    process tree: a new session loads botocore's service models again (0.35-0.5 s, measured), and every
    DataLoader worker would pay that before its first request; a session holds no connection, so a forked
    worker reuses its parent's, models already loaded, and opens its own client from it (0.1 s)."""
    global _AIO_SESSION
    opts = dict(storage_options or {})
    if protocol in ("s3", "s3a") and "session" not in opts:
        try:
            from aiobotocore.session import get_session
        except ImportError:  # s3fs without aiobotocore: let it make its own
            return opts
        if _AIO_SESSION is None:
            _AIO_SESSION = get_session()
        opts["session"] = _AIO_SESSION
    return opts


@dataclass
class ProcessLocalFS:
    """A picklable handle that yields an fsspec filesystem owned by the current process.

    ``block_cache_dir`` wraps remote filesystems in fsspec's block cache (byte ranges kept on local disk).
    """

    protocol: str
    storage_options: dict[str, Any] = field(default_factory=dict)
    block_cache_dir: str | None = None
    _pid: int = field(default=-1, repr=False, compare=False)
    _fs: Any = field(default=None, repr=False, compare=False)

    def get(self) -> Any:
        if self._fs is None or self._pid != os.getpid():
            import fsspec

            opts = fsspec_options(self.protocol, self.storage_options)
            if self.protocol != "file":
                opts.setdefault("skip_instance_cache", True)
            if self.protocol in ("s3", "s3a"):  # whole-file reads: one GET, not a HEAD for the size first
                opts.setdefault("max_concurrency", 1)
            fs = fsspec.filesystem(self.protocol, **opts)
            if self.block_cache_dir and self.protocol != "file":
                from fsspec.implementations.cached import CachingFileSystem

                fs = CachingFileSystem(fs=fs, cache_storage=self.block_cache_dir, skip_instance_cache=True)
            self._fs, self._pid = fs, os.getpid()
        return self._fs

    def __getstate__(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "storage_options": self.storage_options,
                "block_cache_dir": self.block_cache_dir, "_pid": -1, "_fs": None}

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"
