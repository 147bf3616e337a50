"""``manifest.json``: every file under a root with its size and sha256, so copies can be verified."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from hestdata._version import __version__
from hestdata.store import layout as L
from hestdata.store.atomic import atomic_write_bytes

MANIFEST_FORMAT = "hestdata-manifest"
MANIFEST_VERSION = 1
_SKIP_NAMES = {L.MANIFEST, L.LOCK}


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def scan(root: Path, rel: str) -> dict[str, dict[str, Any]]:
    """Entries ``{relpath: {size, sha256}}`` for every file under ``root/rel`` (a file or a folder)."""
    base = root / rel
    files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
    out = {}
    for p in files:
        r = p.relative_to(root).as_posix()
        if p.name in _SKIP_NAMES or any(part.startswith(".") for part in Path(r).parts):
            continue
        out[r] = {"size": p.stat().st_size, "sha256": file_sha256(p)}
    return out


def digest(entries: dict[str, dict[str, Any]], prefix: str) -> str:
    """sha256 over the sorted ``path size sha256`` lines of the entries under ``prefix`` (a sample's digest)."""
    h = hashlib.sha256()
    for path in sorted(entries):
        if path == prefix or path.startswith(prefix + "/"):
            e = entries[path]
            h.update(f"{path}\t{e['size']}\t{e['sha256']}\n".encode())
    return h.hexdigest()


def load_manifest(root: Path) -> dict[str, Any]:
    """The manifest of ``root`` (an empty one if there is none)."""
    p = root / L.MANIFEST
    if not p.is_file():
        return {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "files": {}}
    from hestdata.errors import IntegrityError

    try:
        m = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise IntegrityError(f"{p}: invalid JSON ({exc})") from exc
    if m.get("format") != MANIFEST_FORMAT or not isinstance(m.get("files"), dict):
        raise IntegrityError(f"{p}: not a hestdata manifest")
    return m


def manifest_bytes(files: dict[str, dict[str, Any]], updated_at: str) -> bytes:
    """Manifest content (sorted, so identical content gives identical bytes)."""
    m = {"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "hestdata_version": __version__,
         "updated_at": updated_at, "files": {k: files[k] for k in sorted(files)}}
    return (json.dumps(m, indent=1) + "\n").encode()


def write_manifest(root: Path, files: dict[str, dict[str, Any]], updated_at: str) -> None:
    """Write the manifest atomically on its own (publication writes it together with the catalog)."""
    atomic_write_bytes(root / L.MANIFEST, manifest_bytes(files, updated_at))
