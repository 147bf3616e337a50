"""Manifest and catalog entries are untrusted input: every path is checked before anything is written."""

from __future__ import annotations

import re
from pathlib import Path

from hestdata.errors import IntegrityError
from hestdata.ids import SAMPLE_ID_PATTERN

_ID = re.compile(SAMPLE_ID_PATTERN)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_DRIVE = re.compile(r"^[A-Za-z]:")


def check_relpath(rel: str, where: str) -> str:
    """Return ``rel`` if it is a safe relative POSIX path (no absolute, drive, backslash, '..', '.' parts)."""
    if not isinstance(rel, str) or not rel or "\\" in rel or "\x00" in rel:
        raise IntegrityError(f"{where}: unsafe path {rel!r}")
    # string tests, not pathlib: a sample's manifest has hundreds of entries and each is checked on every read
    if rel[0] == "/" or _DRIVE.match(rel) or any(part in ("..", ".", "") for part in rel.split("/")):
        raise IntegrityError(f"{where}: unsafe path {rel!r} (absolute or escaping the root)")
    return rel


def check_sample_id(sid: str, where: str) -> str:
    if not isinstance(sid, str) or not _ID.match(sid):
        raise IntegrityError(f"{where}: invalid sample id {sid!r}")
    return sid


def check_entry(rel: str, entry: object, where: str) -> tuple[int, str]:
    """``(size, sha256)`` of a manifest entry, validated."""
    if not isinstance(entry, dict):
        raise IntegrityError(f"{where}: manifest entry for {rel!r} is not an object")
    size, sha = entry.get("size"), entry.get("sha256")
    if not isinstance(size, int) or size < 0 or not isinstance(sha, str) or not _HEX64.match(sha):
        raise IntegrityError(f"{where}: manifest entry for {rel!r} has an invalid size or sha256")
    return size, sha


def inside(dest: Path, rel: str) -> Path:
    """``dest/rel``, verified to resolve inside ``dest`` (defence in depth after ``check_relpath``)."""
    target = (dest / rel).resolve()
    root = dest.resolve()
    if target != root and root not in target.parents:
        raise IntegrityError(f"{rel!r} resolves outside {dest}")
    return target
