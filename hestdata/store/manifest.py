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


# -- store format 2: one manifest per sample ----------------------------------------------------------------
SAMPLE_MANIFEST_FORMAT = "hestdata-sample-manifest"


def scan_sample(folder: Path, workers: int | None = None) -> dict[str, tuple[int, str]]:
    """``{path inside the sample: (size, sha256)}`` for every file of a sample folder except its manifest
    (dot-named paths are never part of a sample). Files are hashed on a thread pool (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    rels = [p.relative_to(folder).as_posix() for p in files]
    keep = [(p, r) for p, r in zip(files, rels, strict=True)
            if r != L.SAMPLE_MANIFEST and not any(part.startswith(".") for part in r.split("/"))]
    if not keep:
        return {}
    with ThreadPoolExecutor(max(1, min(len(keep), workers or 4))) as pool:
        shas = list(pool.map(lambda pr: file_sha256(pr[0]), keep))
    return {r: (p.stat().st_size, sha) for (p, r), sha in zip(keep, shas, strict=True)}


def sample_manifest_bytes(sample_id: str, files: dict[str, tuple[int, str]]) -> bytes:
    """The canonical bytes of a sample manifest (sorted, compact): its sha256 is the sample's digest."""
    doc = {"format": SAMPLE_MANIFEST_FORMAT, "format_version": L.FORMAT_VERSION, "id": sample_id,
           "files": {k: [int(files[k][0]), str(files[k][1])] for k in sorted(files)}}
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode()


def parse_sample_manifest(data: bytes, where: str, sample_id: str | None = None) -> dict[str, tuple[int, str]]:
    """The files of a sample manifest, checked: JSON of the right format, safe relative paths, sizes and sha256
    well formed, and (when given) the sample id it names."""
    from hestdata.errors import IntegrityError
    from hestdata.store.safety import check_entry, check_relpath

    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where}: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != SAMPLE_MANIFEST_FORMAT or not isinstance(doc.get("files"), dict):
        raise IntegrityError(f"{where}: not a hestdata sample manifest")
    if sample_id is not None and doc.get("id") != sample_id:
        raise IntegrityError(f"{where}: manifest of sample {doc.get('id')!r}, expected {sample_id!r}")
    out = {}
    for rel, e in doc["files"].items():
        entry = {"size": e[0], "sha256": e[1]} if isinstance(e, list) and len(e) == 2 else e
        out[check_relpath(rel, where)] = check_entry(rel, entry, where)
    return out


def write_sample_manifest(folder: Path, sample_id: str, workers: int | None = None) -> tuple[str, int, int]:
    """Hash a sample folder and write its ``manifest.json`` atomically; returns (digest, n_files, n_bytes), the
    figures of its catalog row (the manifest itself counted)."""
    import hashlib

    files = scan_sample(folder, workers)
    data = sample_manifest_bytes(sample_id, files)
    atomic_write_bytes(folder / L.SAMPLE_MANIFEST, data)
    return hashlib.sha256(data).hexdigest(), len(files) + 1, sum(s for s, _ in files.values()) + len(data)
