"""``hestdata push ROOT URL``: publish a local format-2 root to any fsspec destination.

The remote catalog (three requests) is compared with the local one: a sample whose digest (its manifest's sha256)
is the remote's is unchanged and costs nothing more. For a changed sample the remote manifest says which of its
files are already there; the others are uploaded, then the sample's ``manifest.json``. Then the catalog files of
the local version that the remote lacks, the root's own files, the version document and, last, the root pointer:
a reader, who starts from the pointer, sees the previous version or the new one, and one that started before
detects a sample replaced under it (its manifest no longer matches the catalog row it pinned). While samples are
being replaced, a marker (``hestdata-push.json``) says so: a download that meets a half-replaced sample waits for
the pointer to move and resumes against the new version instead of failing.

Symbolic links are never followed: every file to upload is checked before the first byte is sent.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hestdata.errors import HestdataError, IntegrityError, StoreError
from hestdata.io import progress, retry
from hestdata.io.fs import ProcessLocalFS, join, split_url
from hestdata.remote.download import push_marker
from hestdata.store import layout as L
from hestdata.store.manifest import file_sha256
from hestdata.store.remotes import resolve_remote


@dataclass
class PushReport:
    uploaded: list[str] = field(default_factory=list)
    unchanged: int = 0  # files already on the remote (unchanged samples count all their files)
    bytes_uploaded: int = 0
    samples_changed: list[str] = field(default_factory=list)


def _remote_ok(fs: Any, local: bool, path: str, entry: tuple[int, str]) -> bool:
    """Does the remote object at ``path`` hold exactly the entry's bytes (size, then sha256)?"""
    import hashlib

    size, sha = entry
    try:
        if local:
            p = Path(path)
            if not p.is_file() or p.is_symlink() or p.stat().st_size != size:
                return False
            return file_sha256(p) == sha
        if int(fs.info(path).get("size", -1)) != size:
            return False
        h = hashlib.sha256()
        with fs.open(path, "rb", block_size=8 << 20) as fh:
            while b := fh.read(8 << 20):
                h.update(b)
        return h.hexdigest() == sha
    except (FileNotFoundError, OSError):
        return False


def _remote_root(url: str, opts: dict[str, Any]) -> Any:
    """The remote root as it is now (None when there is none yet, or it is not in format 2)."""
    from hestdata.store.root import Root

    try:
        r = Root.open(url, opts)
    except HestdataError:
        return None
    return r if r.format_version == 2 and r.version else None


def _link_inside(root: Path, src: Path) -> Path | None:
    return next((p for p in [src, *src.parents] if p != root and root in p.parents and p.is_symlink()), None)


def push(root: str | os.PathLike[str], url: str, *, storage_options: dict[str, Any] | None = None,
         workers: int = 8, verify: bool = True, verify_remote: bool = False) -> PushReport:
    """Upload the local root ``root`` to ``url``; ``verify`` re-hashes each file to upload against its manifest.

    ``verify_remote`` trusts neither the remote catalog nor the remote manifests: every remote object of every
    sample is checked (size and sha256) and any missing, truncated or altered one is uploaded again (a repair)."""
    from hestdata.store.root import Root

    r = Path(root)
    local = Root.open(r)
    if local.format_version != 2 or not local.version:
        raise StoreError(f"{r}: not a published format-2 root" + (f" (run `hestdata upgrade {r}` first)"
                                                                  if local.format_version == 1 else ""))
    target, opts = resolve_remote(url, storage_options)
    protocol, base = split_url(target)
    handle = ProcessLocalFS(protocol, opts)
    fs = None if handle.is_local else handle.get()
    remote = _remote_root(target, opts)
    report = PushReport()
    todo, manifests = _plan_samples(r, local, None if verify_remote else remote, fs, handle.is_local, base,
                                    verify_remote, report)
    catalog = _catalog_files(local, remote, fs, handle.is_local, base)
    everything = todo + manifests + catalog
    for rel, _ in everything:  # nothing is sent before every file has been checked
        link = _link_inside(r, r / rel)
        if link is not None:
            raise IntegrityError(f"{link}: is a symbolic link inside the root; push never follows links")

    def upload(item: tuple[str, tuple[int, str]]) -> int:
        rel, (size, sha) = item
        src = r / rel
        if not src.is_file() or src.stat().st_size != size:
            raise IntegrityError(f"{src}: missing or size differs from its manifest; run 'hestdata validate {r}'")
        if verify and file_sha256(src) != sha:
            raise IntegrityError(f"{src}: sha256 differs from its manifest; run 'hestdata validate {r}'")
        _put(fs, handle.is_local, str(src), join(base, rel), target, rel)
        return size

    def upload_all(items: list[tuple[str, tuple[int, str]]], what: str) -> None:
        with (progress.bar(f"push {what}", sum(e[0] for _, e in items), bytes_=True) as advance,
              ThreadPoolExecutor(max_workers=max(1, workers)) as pool):
            for (rel, _), n in zip(items, pool.map(upload, items), strict=True):
                report.uploaded.append(rel)
                report.bytes_uploaded += n
                advance(n)

    replacing = remote is not None and bool(report.samples_changed)
    if replacing:  # downloads that meet a half-replaced sample wait for the pointer instead of failing
        _put_bytes(fs, handle.is_local, _marker(local), join(base, L.PUSH_MARKER))
    upload_all(todo, "data")  # data files
    upload_all(manifests, "manifests")  # then each changed sample's manifest
    upload_all(catalog, "catalog")  # then the catalog version and the root's files
    if remote is None or remote.pointer != local.pointer:
        pointer = (r / L.ROOT_POINTER).read_bytes()  # last: the commit
        _put_bytes(fs, handle.is_local, pointer, join(base, L.ROOT_POINTER))
        report.uploaded.append(L.ROOT_POINTER)
        report.bytes_uploaded += len(pointer)
    if replacing or (remote is not None and push_marker(remote) is not None):
        _remove(fs, handle.is_local, join(base, L.PUSH_MARKER))  # also a marker an interrupted push left
    return report


def _marker(local: Any) -> bytes:
    """The push-in-progress marker: which version is being pushed, from where, since when."""
    import json
    import socket
    import time

    return json.dumps({"version": local.version, "host": socket.gethostname(), "pid": os.getpid(),
                       "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode()


def _remove(fs: Any, is_local: bool, path: str) -> None:
    if is_local:
        Path(path).unlink(missing_ok=True)
        return
    try:
        retry.with_retries(lambda: fs.rm_file(path))
    except FileNotFoundError:
        pass


def _changed_ids(local: Any, remote: Any) -> tuple[list[str], int]:
    """Ids whose catalog row (the digest of the sample's manifest) differs from the remote's, and the files of
    the others: one join of two catalogs, no per-sample work."""
    import polars as pl

    cat = local.catalog.select("id", "sha256", pl.col("n_files").fill_null(0))
    if remote is None:
        return cat["id"].to_list(), 0
    same = cat.join(remote.catalog.select("id", "sha256"), on=["id", "sha256"], how="semi")
    changed = cat.join(same.select("id"), on="id", how="anti").sort("id")
    return changed["id"].to_list(), int(same["n_files"].sum())


def _plan_samples(r: Path, local: Any, remote: Any, fs: Any, is_local: bool, base: str, verify_remote: bool,
                  report: PushReport) -> tuple[list[tuple[str, tuple[int, str]]], list[tuple[str, tuple[int, str]]]]:
    """The sample files to upload, and the manifests of the changed samples (uploaded after their files)."""
    import hashlib

    todo: list[tuple[str, tuple[int, str]]] = []  # (root-relative path, (size, sha256))
    manifests: list[tuple[str, tuple[int, str]]] = []
    changed, report.unchanged = _changed_ids(local, remote)  # unchanged samples: nothing of them is read
    for sid in changed:
        sample = local.sample(sid)
        prefix = L.sample_relpath(sid)
        files = sample.manifest()
        have: dict[str, tuple[int, str]] = {}
        if remote is not None and sid in remote:
            try:
                have = remote.sample(sid).manifest()
            except HestdataError:
                have = {}  # damaged or missing remote manifest: upload everything
        for rel, e in sorted(files.items()):
            full = f"{prefix}/{rel}"
            if (have.get(rel) == e and not verify_remote) or \
                    (verify_remote and _remote_ok(fs, is_local, join(base, full), e)):
                report.unchanged += 1
            else:
                todo.append((full, e))
        mdata = (r / prefix / L.SAMPLE_MANIFEST).read_bytes()
        m_entry = (len(mdata), hashlib.sha256(mdata).hexdigest())
        if verify_remote and _remote_ok(fs, is_local, join(base, prefix, L.SAMPLE_MANIFEST), m_entry):
            report.unchanged += 1
        else:
            manifests.append((f"{prefix}/{L.SAMPLE_MANIFEST}", m_entry))
            report.samples_changed.append(sid)
    return todo, manifests


def _catalog_files(local: Any, remote: Any, fs: Any, is_local: bool, base: str) -> list[tuple[str, tuple[int, str]]]:
    """The local catalog version's files (base, tail, version document) and the root's own files that the
    remote does not hold already."""
    import hashlib

    p = local.pointer
    remote_parts = {e["path"]: e["sha256"] for e in (remote.pointer["catalog"].get(k) for k in ("base", "tail"))
                    if e} if remote is not None else {}
    out = []
    for part in ("base", "tail"):
        e = p["catalog"].get(part)
        if e and remote_parts.get(e["path"]) != e["sha256"] \
                and not _remote_ok(fs, is_local, join(base, e["path"]), (e["size"], e["sha256"])):
            out.append((e["path"], (int(e["size"]), str(e["sha256"]))))
    doc_rel = f"{L.CATALOG_DIR}/v{p['version']:08d}.json"
    data = (local.path / doc_rel).read_bytes()
    if remote is None or remote.pointer != p:
        out.append((doc_rel, (len(data), hashlib.sha256(data).hexdigest())))
    have = remote.root_files() if remote is not None else {}
    out += [(rel, e) for rel, e in sorted(local.root_files().items()) if have.get(rel) != e]
    return out


def _put(fs: Any, is_local: bool, src: str, dst: str, target: str, rel: str) -> None:
    if is_local:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        tmp = dst + ".part"
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while b := fin.read(8 << 20):
                fout.write(b)
        os.replace(tmp, dst)
        return
    try:
        retry.with_retries(lambda: fs.put_file(src, dst))  # a whole-object PUT: safe to send again
    except FileNotFoundError as exc:
        raise StoreError(f"{target}: cannot write {rel} ({exc}); does the bucket exist?") from exc


def _put_bytes(fs: Any, is_local: bool, data: bytes, dst: str) -> None:
    if is_local:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        tmp = dst + ".part"
        Path(tmp).write_bytes(data)
        os.replace(tmp, dst)
        return
    retry.with_retries(lambda: fs.pipe_file(dst, data))
