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


def commit_dir(tmp: Path, final: Path, overwrite: bool, root: Path | None = None, keep_replaced: bool = True) -> None:
    """Move a fully written ``tmp`` folder to ``final``; an old ``final`` is swapped out, then kept for its readers
    (with ``root`` and ``keep_replaced``: see :func:`_retire`; ``store.recovery`` prunes it) or removed.

    With ``root`` the renames happen under the root lock, so a recovery never sees a half-done swap in progress;
    a swap interrupted by a crash is rolled back by ``store.recovery.recover_root`` (the old sample returns), and
    the sample is marked pending (``store.pending``) until a catalog version names it."""
    from hestdata.errors import StoreError
    from hestdata.store.failpoints import failpoint
    from hestdata.store.layout import LOCK, SAMPLE_SUFFIX
    from hestdata.store.pending import mark_pending

    with root_lock(root, LOCK) if root is not None else contextlib.nullcontext():
        if final.exists() and not overwrite:
            raise StoreError(f"{final}: already exists (pass overwrite=True / --overwrite to replace it)")
        if root is not None and final.name.endswith(SAMPLE_SUFFIX):
            mark_pending(root, final.name[: -len(SAMPLE_SUFFIX)])  # recovery publishes it after a crash
        if final.exists():
            trash = final.with_name(f".trash-{final.name}-{uuid.uuid4().hex[:8]}")
            os.replace(final, trash)
            failpoint("overwrite-swap")
            os.replace(tmp, final)
            if root is None or not keep_replaced or not _retire(trash, final):
                shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)


def _retire(old: Path, final: Path) -> bool:
    """Keep a replaced sample version for the readers that opened it (``samples/.old-<id>-<digest>.zarr``, see
    ``layout.retired_name``) for ``layout.keep_retired_s()``; False when it is not kept (then it is removed)."""
    import hashlib  # not store.manifest.file_sha256: manifest imports this module (the layer check forbids the cycle)

    from hestdata.store.layout import SAMPLE_MANIFEST, SAMPLE_SUFFIX, keep_retired_s, retired_name

    manifest = old / SAMPLE_MANIFEST
    if keep_retired_s() <= 0 or not manifest.is_file() or not final.name.endswith(SAMPLE_SUFFIX):
        return False
    target = final.with_name(retired_name(final.name[: -len(SAMPLE_SUFFIX)],
                                          hashlib.sha256(manifest.read_bytes()).hexdigest()))
    if target.exists():
        return False  # that very version is kept already
    os.replace(old, target)
    os.utime(target)  # its retirement time: what the retention counts from
    return True


def prune_retired(root: Path, now: float | None = None) -> list[str]:
    """Remove replaced sample versions kept longer than ``layout.keep_retired_s()``; returns their names."""
    import time

    from hestdata.store.layout import RETIRED_PREFIX, SAMPLES, keep_retired_s

    folder = root / SAMPLES
    if not folder.is_dir():
        return []
    limit = (time.time() if now is None else now) - keep_retired_s()
    gone = []
    for p in sorted(folder.glob(f"{RETIRED_PREFIX}*")):
        try:
            old = p.stat().st_mtime <= limit
        except FileNotFoundError:
            continue
        if old:
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
    return gone


@contextlib.contextmanager
def held_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created) for the block; the file is removed afterwards."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def is_locked(lock: Path) -> bool:
    """True if a live process holds ``flock`` on ``lock`` (a missing file is not locked)."""
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def lock_of(folder: Path) -> Path:
    """The lock file that marks ``folder`` as in use (a sibling, so renaming the folder keeps it held)."""
    return folder.with_name(folder.name + ".lock")
