"""Atomic file/folder replacement and a cross-process lock for a root's shared files."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary sibling, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def root_lock(root: Path, name: str) -> Iterator[None]:
    """Exclusive advisory lock (``flock``) on ``root/name`` for the duration of the block."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / name, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def commit_dir(tmp: Path, final: Path, overwrite: bool) -> None:
    """Move a fully written ``tmp`` folder to ``final``; an old ``final`` is swapped out, then removed."""
    from hestdata.errors import StoreError

    if final.exists():
        if not overwrite:
            raise StoreError(f"{final}: already exists (pass overwrite=True / --overwrite to replace it)")
        trash = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex[:8]}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
