"""``hestdata.download``: fetch a subset of a remote root — by id or catalog query, and by element — in parallel,
resumably, verified against the remote catalog version and each sample's manifest.

The remote root is opened once (``store.root.Root``: pointer, catalog — pinned); each selected sample's manifest
is fetched and checked against its catalog row. Each sample is staged in ``DEST/samples/.dl-<id>.zarr`` (a stable
name, so an interrupted download resumes there: finished files are kept, ``*.part`` files are continued from their
length), verified file by file (size, then sha256), given its manifest and renamed into ``DEST/samples/<id>.zarr``
only when complete; then one local catalog version publishes what arrived. When elements are left out, the
sample's ``zarr.json`` is rewritten so that no reader sees (or zero-fills) an element that is not there, and its
manifest records the remote original (``origin``) so that a later download still recognises the same sample.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hestdata.errors import HestdataWarning, IntegrityError, StoreError, is_disk_full
from hestdata.io import retry
from hestdata.io.fs import ProcessLocalFS, join
from hestdata.store import layout as L
from hestdata.store.catalog import ELEMENTS
from hestdata.store.recovery import recover_root
from hestdata.store.safety import check_sample_id, inside

CHUNK_BYTES = 8 * 1024 * 1024
Progress = Callable[[str, int], None]


def element_of(rel_in_sample: str) -> tuple[str, str | None]:
    """Which element a file inside a sample belongs to (``"root"`` for the root zarr.json and the manifest),
    and the patch name."""
    parts = rel_in_sample.split("/")
    if rel_in_sample in ("zarr.json", L.SAMPLE_MANIFEST):
        return "root", None
    head = parts[0]
    if head == "images":
        return "image", None
    if head == "shapes":
        return "shapes", None
    if head == "tables":  # an image collection's items are its patches' index (labels), not expression
        return ("patches", None) if len(parts) >= 2 and parts[1] == L.ITEMS_TABLE else ("expression", None)
    if head == "points":
        return "points", None
    if head == "hestdata":
        if len(parts) >= 2 and parts[1] == "tables":  # slide-level tables travel with the expression table
            return "expression", None
        if len(parts) >= 3 and parts[1] == "patches":
            return "patches", parts[2]
        return "patches", None
    return "other", None


@dataclass
class Remote:
    """A remote folder (any fsspec URL) files are read from, relative to ``base``."""

    fs: ProcessLocalFS
    base: str

    def read(self, rel: str) -> bytes:
        path = join(self.base, rel)
        try:
            if self.fs.is_local:
                return Path(path).read_bytes()
            return retry.cat_file(self.fs.get(), path)
        except FileNotFoundError:
            raise StoreError(f"{path}: not found on the remote") from None
        except OSError as exc:  # unreachable host, refused connection, timeouts
            raise StoreError(f"{path}: cannot read from the remote ({type(exc).__name__}: {exc})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while b := fh.read(CHUNK_BYTES):
            h.update(b)
    return h.hexdigest()


def _fetch(remote: Remote, rel: str, size: int, sha: str | None, target: Path, progress: Progress | None) -> None:
    """Download one file to ``target`` (resuming ``target.part``), verify size and sha256, rename into place.

    A resumed file that fails verification is fetched once more from the start (its ``.part`` may have come
    from another run, or be garbage); a second failure is an error. ``sha=None`` (a source that publishes no
    digest) verifies the size only."""
    if target.exists() and target.stat().st_size == size and (sha is None or _sha256(target) == sha):
        return
    part = target.with_name(target.name + ".part")
    if part.is_symlink():
        raise IntegrityError(f"{part}: symbolic link in the download staging folder; refusing to write")
    resumed = part.exists() and part.stat().st_size > 0
    def once() -> None:  # a transient network error retries from where the .part got to (a resumed range)
        retry.with_retries(lambda: _fetch_once(remote, rel, size, sha, target, progress))

    try:
        once()
    except IntegrityError:
        if not resumed:
            raise
        part.unlink(missing_ok=True)
        once()


def _fetch_once(remote: Remote, rel: str, size: int, sha: str | None, target: Path,
                progress: Progress | None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    src = join(remote.base, rel)
    if have < size:
        if remote.fs.is_local:
            with open(src, "rb") as fin, open(part, "ab") as fout:
                fin.seek(have)
                while b := fin.read(CHUNK_BYTES):
                    fout.write(b)
                    if progress:
                        progress(rel, len(b))
        else:
            with open(part, "ab") as fout, _open_ranged(remote.fs.get(), src, size) as fin:
                pos = have
                fin.seek(pos)
                while pos < size:
                    end = min(size, pos + CHUNK_BYTES)
                    b = fin.read(end - pos)  # bounded: never more than asked, whatever the server sends
                    if not b:
                        break
                    if len(b) > end - pos:
                        fout.truncate(have)
                        raise IntegrityError(f"{src}: the server sent {len(b)} bytes for a {end - pos}-byte range "
                                             "(no Range support?); partial file kept as it was")
                    fout.write(b)
                    pos += len(b)
                    if progress:
                        progress(rel, len(b))
    got = part.stat().st_size
    if got != size:
        part.unlink(missing_ok=True)
        raise IntegrityError(f"{src}: size {got} differs from the manifest's {size}; partial file removed")
    if sha is not None and _sha256(part) != sha:
        part.unlink()
        raise IntegrityError(f"{src}: sha256 differs from the manifest; file removed")
    os.replace(part, target)


def _open_ranged(fs: Any, path: str, size: int) -> Any:
    """A file object reading exact byte ranges (no read-ahead cache), its size taken from the manifest. fsspec's
    ranged reads stop after the requested length even when a server ignores ``Range`` and streams on (its
    ``cat_file`` would buffer the whole body: a server streaming an endless body would exhaust memory)."""
    try:
        f = fs.open(path, "rb", cache_type="none", size=size)
    except TypeError:  # filesystems whose open() takes no size
        return fs.open(path, "rb", cache_type="none")
    if getattr(f, "_details", 0) is None:
        # fsspec's buffered files (s3fs's among them) send a HEAD for ``details`` before the first range, to pin
        # the ETag; the manifest gives the size and its sha256 checks the bytes, so that request is not needed
        # (it doubled a sample download's requests: 235 -> 119 for 116 files)
        f._details = {"name": path, "size": size, "type": "file"}
    return f


def _rewrite_partial(staged: Path, missing: set[str], kept_patches: set[str] | None) -> None:
    """Drop left-out elements from the staged sample's root zarr.json (consolidated metadata and metadata)."""
    zj = staged / "zarr.json"
    doc = json.loads(zj.read_text())
    from hestdata.store.consolidated import drop, merged

    def gone(key: str) -> bool:
        el, name = element_of(key)
        if el in missing:
            return True
        return el == "patches" and kept_patches is not None and name is not None and name not in kept_patches

    keys = list(merged(doc))
    kept = [k for k in keys if not gone(k)]
    parents = {"/".join(k.split("/")[:i]) for k in kept for i in range(1, k.count("/") + 1)}
    drop(doc, [k for k in keys if gone(k) and k not in parents])  # a kept node's groups stay (tables/ of items)
    meta = doc["attributes"][L.META_KEY]
    if "image" in missing:
        meta["image"] = None
    if "patches" in missing:
        meta["qc"]["patches"] = {}
    elif kept_patches is not None:
        meta["qc"]["patches"] = {k: v for k, v in meta["qc"]["patches"].items() if k in kept_patches}
    meta["missing_elements"] = sorted(missing)
    zj.write_text(json.dumps(doc, indent=2))


def download(source: str | os.PathLike[str] | Any, dest: str | os.PathLike[str], *,
             ids: Sequence[str] | None = None, where: Any = None, elements: Sequence[str] | None = None,
             patches: Sequence[str] | None = None, workers: int = 8, storage_options: dict[str, Any] | None = None,
             progress: Progress | None = None, overwrite: bool = False, push_wait_s: float = 900.0) -> Path:
    """Download the selected samples of the root at ``source`` into the local root ``dest``; return ``dest``.

    Args:
        source: root URL (``file://``, ``s3://``, ``gs://``, ``https://``, ``hf://`` — anything fsspec opens), a
            local path, a remote name from the config (``$HESTDATA_REMOTE`` when None), or an opened
            :class:`hestdata.Root` (its pinned catalog version is what is downloaded).
        ids: sample ids; ``where``: a condition on the remote catalog (both: intersection).
        elements: any of ``image``, ``shapes``, ``expression``, ``patches``, ``points`` (Xenium transcripts);
            default: all.
        patches: patch array names to fetch (default: all of each sample's arrays).
        workers: parallel file transfers.
        progress: callback ``(relative_path, n_bytes)`` called as bytes arrive (a rich bar is shown otherwise
            when stderr is a terminal).
        overwrite: replace a local sample of the same id whose content differs from the remote one. Without
            it such a sample is refused, naming what differs; a local copy of the same sample is completed,
            never cut down (elements it has stay, whatever ``elements`` says), and a complete identical copy is
            skipped.
        push_wait_s: while a push to the remote is running (its ``hestdata-push.json`` marker is there), a sample
            the push is replacing fails verification against the version this download started from; the
            download then waits up to this long for the push to finish and resumes against the new version
            (files already fetched are kept). ``0``: fail at once. A pinned :class:`hestdata.Root` never moves.
    """
    from hestdata.store.root import Root

    pinned = isinstance(source, Root)
    root = Root.open(source, storage_options)
    while True:
        try:
            return _download_version(root, dest, ids, where, elements, patches, workers, progress, overwrite)
        except IntegrityError as exc:
            marker = None if pinned or push_wait_s <= 0 else push_marker(root)
            if marker is None:
                raise
            newer = _wait_for_push(root, push_wait_s)
            if newer is None:
                raise IntegrityError(f"{exc}; a push to {root.url} (started {marker.get('started', '?')}) is "
                                     f"replacing samples and has not finished after {push_wait_s:.0f} s: rerun "
                                     "this download when it has (or rerun the push if it was interrupted)") from exc
            warnings.warn(f"{root.url}: a push finished while downloading; continuing with catalog version "
                          f"{newer.version}", HestdataWarning, stacklevel=2)
            root = newer


def push_marker(root: Any) -> dict[str, Any] | None:
    """The remote's push-in-progress marker (what ``push`` writes before its first changed file), or None."""
    try:
        data = Remote(root.fs, root.base).read(L.PUSH_MARKER)
    except StoreError:
        return None
    try:
        doc = json.loads(data)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _wait_for_push(root: Any, wait_s: float, poll_s: float = 1.0) -> Any:
    """Poll the remote's pointer until it names another catalog version (the push committed): the newly opened
    root, or None after ``wait_s`` seconds."""
    import time

    deadline = time.monotonic() + wait_s
    while True:
        try:
            now = root.reopen()
            if now.pointer != root.pointer:
                return now
        except StoreError:
            pass  # the pointer is being replaced right now
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        poll_s = min(poll_s * 1.5, 10.0)


def _download_version(root: Any, dest: str | os.PathLike[str], ids: Sequence[str] | None, where: Any,
                      elements: Sequence[str] | None, patches: Sequence[str] | None, workers: int,
                      progress: Progress | None, overwrite: bool) -> Path:
    """One download against one pinned catalog version of the remote."""
    from hestdata.store.publish import check_writable, publish

    remote = Remote(root.fs, root.base)
    wanted = set(elements or ELEMENTS)
    unknown = wanted - set(ELEMENTS)
    if unknown:
        raise ValueError(f"unknown element(s) {sorted(unknown)}; choose from {list(ELEMENTS)}")
    selected = _select(root, ids, where)
    dest_p = Path(dest)
    if dest_p.exists() and not dest_p.is_dir():
        raise StoreError(f"{dest_p}: is a file, not a root folder")
    check_writable(dest_p)
    (dest_p / L.SAMPLES).mkdir(parents=True, exist_ok=True)
    want_patches = set(patches) if patches is not None else None
    recover_root(dest_p)
    plans: dict[str, _SamplePlan] = {}
    for sid in selected:
        sample = root.sample(sid)
        files = sample.manifest()  # checked against the pinned catalog row
        local = _local_copy(dest_p, sid, sample, files, overwrite)
        if local is not None and local.complete:
            continue  # an identical complete copy: nothing to fetch, nothing to rewrite
        plans[sid] = _plan_sample(sid, sample, files, dest_p, wanted, want_patches, local)
    plan = [item for p in plans.values() for item in p.files]
    failures = fetch_files(remote, plan, progress, workers)
    done = [sid for sid in plans if sid not in failures]
    for sid in done:
        p = plans[sid]
        _verify_staged(p.staged, {t for *_, t in p.files}, dest_p)
        _commit_staged(dest_p, sid, p, root.sample(sid))
    if done:
        publish(dest_p, done)
    for sid in failures:
        if "the disk is full" in failures[sid]:
            shutil.rmtree(plans[sid].staged, ignore_errors=True)  # its staging folder too
    if failures:
        first = next(iter(failures.items()))
        raise IntegrityError(f"{len(failures)} sample(s) failed to download ({', '.join(failures)}); "
                             f"first: {first[0]}: {first[1]}; completed files of the others are kept, rerun to "
                             "resume")
    return dest_p


def _select(root: Any, ids: Sequence[str] | None, where: Any) -> list[str]:
    """Sample ids chosen by ``ids`` and ``where`` from the remote catalog."""
    sel = root.select(where, ids=list(ids) if ids is not None else None)
    selected = [check_sample_id(s, root.where()) for s in sel.ids]
    if not selected:
        raise StoreError(f"{root.url}: no sample matches the selection")
    return selected


@dataclass
class _LocalCopy:
    """A local sample with the same id as a remote one, whose files all match the remote manifest."""

    path: Path
    elements: set[str]  # elements it holds
    patches: set[str]  # patch arrays it holds
    complete: bool  # every remote file present (nothing to do)


def _local_files(path: Path, sid: str) -> tuple[dict[str, tuple[int, str]], dict[str, Any]]:
    """The files of a local sample (its manifest) and what its manifest records of the remote original."""
    from hestdata.store.manifest import parse_sample_manifest, scan_sample

    mpath = path / L.SAMPLE_MANIFEST
    if not mpath.is_file():
        return scan_sample(path), {}
    data = mpath.read_bytes()
    return parse_sample_manifest(data, str(mpath), sid), json.loads(data).get("origin") or {}


def _local_copy(dest: Path, sid: str, sample: Any, remote: dict[str, tuple[int, str]], overwrite: bool
                ) -> _LocalCopy | None:
    """The local sample ``sid`` if it is a (possibly partial) copy of the remote one; None if there is none (or
    ``overwrite`` lets a different one be replaced); an error naming what differs if a different sample would
    be destroyed. Every file counts, the metadata (``zarr.json``) too: a partial copy rewrote its own, so its
    manifest's ``origin`` records the remote original it came from."""
    path = L.sample_path(dest, sid)
    if not path.exists():
        return None
    local, origin = _local_files(path, sid)
    zj = "zarr.json"
    original_zj = tuple(origin["zarr.json"]) if "zarr.json" in origin else local.get(zj)
    differ = sorted(rel for rel, e in local.items() if rel != zj and remote.get(rel) != e)
    if original_zj != remote.get(zj):
        differ.insert(0, "zarr.json (the metadata)")
    if differ or not local:
        if overwrite:
            return None
        raise StoreError(f"{path}: a different sample {sid!r} exists locally (differs from the remote's in "
                         f"{', '.join(differ[:4]) or 'every file'}{' …' if len(differ) > 4 else ''}); pass "
                         "overwrite=True / --overwrite to replace it")
    held = {element_of(rel) for rel in local}
    complete = set(remote) == set(local) and local.get(zj) == remote.get(zj)
    return _LocalCopy(path, {el for el, _ in held}, {n for el, n in held if el == "patches" and n}, complete)


@dataclass
class _SamplePlan:
    staged: Path
    files: list[tuple[str, str, int, str, Path]]  # (sample id, remote rel, size, sha, local target)
    missing: set[str]  # elements left out
    kept_patches: set[str] | None  # patch arrays kept (None: all)
    remote_files: dict[str, tuple[int, str]]  # the remote sample's manifest


def _plan_sample(sid: str, sample: Any, files: dict[str, tuple[int, str]], dest: Path, wanted: set[str],
                 want_patches: set[str] | None, local: _LocalCopy | None) -> _SamplePlan:
    """The files of ``sid`` to fetch into its staging folder; a local partial copy's elements are kept (its
    files are copied into the staging folder, not fetched again)."""
    if "zarr.json" not in files:
        raise IntegrityError(f"{sample.path}: the manifest of sample {sid} has no zarr.json entry")
    prefix = L.sample_relpath(sid) + "/"
    staged = dest / L.SAMPLES / f".dl-{sid}{L.SAMPLE_SUFFIX}"
    _refuse_links(staged, dest)
    names = {element_of(r)[1] for r in files} - {None}
    if want_patches is not None and "patches" in wanted and not (want_patches & names):
        raise StoreError(f"sample {sid}: none of the patch arrays {sorted(want_patches)} (has {sorted(names)})")
    if local is not None:  # never cut a local copy down
        wanted = wanted | (local.elements & set(ELEMENTS))
        if want_patches is not None:
            want_patches = want_patches | local.patches
    plan = []
    for rel, (size, sha) in files.items():
        el, name = element_of(rel)
        if el in ELEMENTS and el not in wanted:
            continue
        if el == "patches" and want_patches is not None and name is not None and name not in want_patches:
            continue
        if el == "other" and wanted != set(ELEMENTS):
            continue
        target = inside(staged.parent, staged.name + "/" + rel)
        if local is not None and rel != "zarr.json":
            _reuse_local(local.path / rel, target, size, sha)
        plan.append((sid, prefix + rel, size, sha, target))
    partial = wanted != set(ELEMENTS) or want_patches is not None
    return _SamplePlan(staged, plan, set(ELEMENTS) - wanted if partial else set(),
                       (want_patches if "patches" in wanted else None) if partial else None, files)


def _reuse_local(src: Path, target: Path, size: int, sha: str) -> None:
    """Copy a file the local copy already has into the staging folder (then ``_fetch`` finds it complete)."""
    import shutil

    if target.exists() or not src.is_file() or src.is_symlink() or src.stat().st_size != size:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    shutil.copyfile(src, tmp)
    if _sha256(tmp) == sha:
        os.replace(tmp, target)
    else:
        tmp.unlink()


def _refuse_links(path: Path, dest: Path) -> None:
    """No component between ``dest`` and ``path`` may be a symbolic link (a planted link would let a download
    write outside DEST or into another sample)."""
    p = Path(path)
    while p != dest and p != p.parent:
        if p.is_symlink():
            raise IntegrityError(f"{p}: is a symbolic link inside the download destination; refusing to write there")
        p = p.parent


def _verify_staged(staged: Path, planned: set[Path], dest: Path) -> None:
    """Before a staged sample is committed: only the planned files, all regular files, none through a link.
    Leftovers of earlier runs (``.part`` files, stale or planted files) are removed, links are refused."""
    planned = {Path(p) for p in planned}
    for dirpath, dirnames, filenames in os.walk(staged, followlinks=False):
        d = Path(dirpath)
        for name in list(dirnames) + filenames:
            p = d / name
            if p.is_symlink():
                raise IntegrityError(f"{p}: symbolic link in the download staging folder; refusing to commit")
        for name in filenames:
            p = d / name
            if p.resolve() not in planned and p not in planned:
                p.unlink()
    for p in planned:
        if not Path(p).is_file():
            raise IntegrityError(f"{p}: expected after download, missing")


def fetch_files(remote: Remote, plan: list[tuple[str, str, int, str | None, Path]], progress: Progress | None,
                workers: int) -> dict[str, str]:
    """Fetch ``(sample id, remote rel, size, sha256 or None, local target)`` files in parallel, resumably and
    verified; returns the first failure of each sample that had one (the others complete)."""
    failures: dict[str, str] = {}
    full: set[str] = set()
    with _bar(progress, sum(p[2] for p in plan)) as bar_cb, ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(_fetch, remote, rel, size, sha, target, bar_cb): (sid, rel)
                   for sid, rel, size, sha, target in plan}
        for fut, (sid, rel) in futures.items():
            try:
                fut.result()
            except Exception as exc:  # report per sample; others still complete
                failures.setdefault(sid, f"{rel}: {exc}")
                if is_disk_full(exc):
                    full.add(sid)
    for sid in full:  # a full disk: what was fetched of the sample is removed, not kept for a resume
        failures[sid] += " (the disk is full: this sample's partial download was removed to free the space)"
        for *_, target in (p for p in plan if p[0] == sid):
            target.unlink(missing_ok=True)
    return failures


def _commit_staged(dest: Path, sid: str, plan: _SamplePlan, sample: Any) -> None:
    """Give a completed staging folder its manifest (a partial sample gets a consistent zarr.json first) and
    rename it into place."""
    import hashlib

    from hestdata.store.atomic import atomic_write_bytes, commit_dir
    from hestdata.store.manifest import sample_manifest_bytes

    try:
        staged_id = json.loads((plan.staged / "zarr.json").read_text())["attributes"][L.META_KEY]["id"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{plan.staged / 'zarr.json'}: not a hestdata sample ({exc})") from None
    if staged_id != sid:
        raise IntegrityError(f"remote sample folder {L.sample_relpath(sid)} holds sample {staged_id!r}; refusing "
                             "to commit it under another id")
    partial = bool(plan.missing) or plan.kept_patches is not None
    kept = {rel: plan.remote_files[rel] for rel in (t.relative_to(plan.staged).as_posix() for *_, t in plan.files)}
    if partial:
        _rewrite_partial(plan.staged, plan.missing, plan.kept_patches)
        data = (plan.staged / "zarr.json").read_bytes()
        kept["zarr.json"] = (len(data), hashlib.sha256(data).hexdigest())
        doc = json.loads(sample_manifest_bytes(sid, kept))
        doc["origin"] = {"sha256": (sample.row or {}).get("sha256"), "zarr.json": list(plan.remote_files["zarr.json"])}
        manifest = (json.dumps(doc, separators=(",", ":")) + "\n").encode()
    else:  # the remote's entries: for a format-2 sample, the remote manifest's own bytes (same digest)
        manifest = sample_manifest_bytes(sid, kept)
    atomic_write_bytes(plan.staged / L.SAMPLE_MANIFEST, manifest)
    commit_dir(plan.staged, L.sample_path(dest, sid), overwrite=True, root=dest)


@contextmanager
def _bar(progress: Progress | None, total: int) -> Iterator[Progress | None]:
    """The caller's byte callback, or a shared terminal bar (:mod:`hestdata.io.progress`)."""
    if progress is not None:
        yield progress
        return
    from hestdata.io.progress import bar

    lock = threading.Lock()
    with bar("download", total, bytes_=True) as advance:
        def cb(_rel: str, n: int) -> None:
            with lock:
                advance(n)

        yield cb
