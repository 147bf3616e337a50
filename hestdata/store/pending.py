"""Samples committed but not yet published: one empty marker file per id in ``<root>/.pending/``.

A writer marks the id (under the root lock) before it renames the sample into place; publication clears the
mark after the catalog version naming the sample is committed. A crash in between leaves the mark, and the next
writer's recovery publishes exactly those ids — no scan of the root, whatever it holds.
"""

from __future__ import annotations

import os
from pathlib import Path

PENDING = ".pending"


def mark_pending(root: Path, sample_id: str) -> None:
    """Record that ``sample_id`` is about to change (fsynced, so the mark outlives a crash)."""
    d = root / PENDING
    d.mkdir(exist_ok=True)
    fd = os.open(d / sample_id, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def pending_ids(root: Path) -> list[str]:
    """Ids marked and not yet published."""
    d = root / PENDING
    return sorted(p.name for p in d.iterdir() if not p.name.startswith(".")) if d.is_dir() else []


def clear_pending(root: Path, sample_ids: list[str]) -> None:
    d = root / PENDING
    for sid in sample_ids:
        (d / sid).unlink(missing_ok=True)
