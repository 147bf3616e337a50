"""``hestdata push ROOT URL``: publish a local root to any fsspec destination.

Only files whose (size, sha256) differ from the remote manifest are uploaded; every data file goes first and
``manifest.json`` last, so a reader, who starts from the manifest, sees the previous or the new root — and a
download racing a push fails on a checksum mismatch instead of mixing versions.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hestdata.errors import IntegrityError, StoreError
from hestdata.io.fs import ProcessLocalFS, join, split_url
from hestdata.remote.config import resolve_remote
from hestdata.remote.safety import check_relpath
from hestdata.store import layout as L
from hestdata.store.manifest import file_sha256, load_manifest


@dataclass
class PushReport:
    uploaded: list[str] = field(default_factory=list)
    unchanged: int = 0
    bytes_uploaded: int = 0


def _remote_manifest(fs: Any, base: str, local: bool) -> dict[str, Any]:
    path = join(base, L.MANIFEST)
    try:
        raw = Path(path).read_bytes() if local else fs.cat_file(path)
    except FileNotFoundError:
        return {}
    try:
        return json.loads(raw).get("files", {})
    except json.JSONDecodeError:
        return {}


def _remote_ok(fs: Any, local: bool, path: str, entry: dict[str, Any]) -> bool:
    """Does the remote object at ``path`` hold exactly the manifest entry's bytes (size, then sha256)?"""
    import hashlib

    try:
        if local:
            p = Path(path)
            if not p.is_file() or p.is_symlink() or p.stat().st_size != entry["size"]:
                return False
            return file_sha256(p) == entry["sha256"]
        if int(fs.info(path).get("size", -1)) != entry["size"]:
            return False
        h = hashlib.sha256()
        with fs.open(path, "rb", block_size=8 << 20) as fh:
            while b := fh.read(8 << 20):
                h.update(b)
        return h.hexdigest() == entry["sha256"]
    except (FileNotFoundError, OSError):
        return False


def push(root: str | os.PathLike[str], url: str, *, storage_options: dict[str, Any] | None = None,
         workers: int = 8, verify: bool = True, verify_remote: bool = False) -> PushReport:
    """Upload ``root`` to ``url``; ``verify`` re-hashes each file to upload against the local manifest.

    ``verify_remote`` does not trust the remote manifest: every remote object is checked (size and sha256) and
    any missing, truncated or altered one is uploaded again (a repair). Symbolic links are never followed: a
    root whose files are links is refused."""
    r = Path(root)
    man_path = r / L.MANIFEST
    if not man_path.is_file():
        raise StoreError(f"{r}: no {L.MANIFEST}; not a hestdata root")
    files = load_manifest(r)["files"]
    target, opts = resolve_remote(url, storage_options)
    protocol, base = split_url(target)
    handle = ProcessLocalFS(protocol, opts)
    fs = None if handle.is_local else handle.get()
    remote = _remote_manifest(fs, base, handle.is_local)
    report = PushReport()
    todo = []
    for rel, entry in sorted(files.items()):
        check_relpath(rel, str(man_path))
        if remote.get(rel) == entry and (not verify_remote or _remote_ok(fs, handle.is_local, join(base, rel), entry)):
            report.unchanged += 1
            continue
        todo.append((rel, entry))

    def upload(item: tuple[str, dict[str, Any]]) -> int:
        rel, entry = item
        src = r / rel
        link = next((p for p in [src, *src.parents] if p != r and r in p.parents and p.is_symlink()), None)
        if link is not None:
            raise IntegrityError(f"{link}: is a symbolic link inside the root; push never follows links")
        if not src.is_file() or src.stat().st_size != entry["size"]:
            raise IntegrityError(f"{src}: missing or size differs from {man_path}; run 'hestdata validate {r}'")
        if verify and file_sha256(src) != entry["sha256"]:
            raise IntegrityError(f"{src}: sha256 differs from {man_path}; run 'hestdata validate {r}'")
        dst = join(base, rel)
        if handle.is_local:
            Path(dst).parent.mkdir(parents=True, exist_ok=True)
            tmp = dst + ".part"
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                while b := fin.read(8 << 20):
                    fout.write(b)
            os.replace(tmp, dst)
        else:
            try:
                fs.put_file(str(src), dst)  # type: ignore[union-attr]
            except FileNotFoundError as exc:
                raise StoreError(f"{target}: cannot write {rel} ({exc}); does the bucket exist?") from exc
        return int(entry["size"])

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for (rel, _), n in zip(todo, pool.map(upload, todo), strict=True):
            report.uploaded.append(rel)
            report.bytes_uploaded += n
    dst = join(base, L.MANIFEST)  # last
    if handle.is_local:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        tmp = dst + ".part"
        Path(tmp).write_bytes(man_path.read_bytes())
        os.replace(tmp, dst)
    else:
        fs.pipe_file(dst, man_path.read_bytes())  # type: ignore[union-attr]
    return report
