"""The versioned catalog of a format-2 root: immutable catalog versions and a small pointer written last.

```
<root>/hestdata.json                  the pointer: format version, current catalog version, the root's own files
<root>/catalog/base-<v>.parquet       every row at version v (a snapshot; sorted by id, row groups of 1,024)
<root>/catalog/tail-<v>.parquet       rows changed since the base (upserts, and ``deleted`` markers)
<root>/catalog/v<v>.json              the pointer as it was at version v (history: a reader can reopen it)
```

Version ``v`` is the base it names with its tail laid over it. A commit writes the new tail (the old tail plus
the changed rows; one row for a one-sample publish), then the version document, then renames the pointer into
place — the one atomic step: a crash before it leaves the previous version current and files nobody points to,
removed later. When the tail reaches ``compact_rows(n)`` rows (√n, at least 32) the commit writes a new base
instead, so a publish writes O(√n) rows amortised and a reader always makes three requests: pointer, base, tail.
The last ``KEEP_VERSIONS`` versions stay readable.

Writers hold the root lock (``store.atomic.root_lock``); readers take no lock.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hestdata.errors import IntegrityError, StoreError
from hestdata.store import layout as L
from hestdata.store.atomic import atomic_write_bytes

POINTER_FORMAT = "hestdata-root"
KEEP_VERSIONS = 32
ROW_GROUP_ROWS = 1024
DELETED = "deleted"
_NAME = re.compile(r"^(base|tail)-(\d{8,})\.parquet$|^v(\d{8,})\.json$")


def compact_rows(n_rows: int) -> int:
    """Tail size at which a commit writes a new base instead (√n rows, at least 32)."""
    return max(32, math.isqrt(max(0, n_rows)))


def _file_entry(rel: str, data: bytes, n_rows: int) -> dict[str, Any]:
    return {"path": rel, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "n_rows": n_rows}


def parse_pointer(data: bytes, where: str) -> dict[str, Any]:
    """A root pointer (or a version document), checked: its format, a version this hestdata reads, catalog file
    entries with safe paths inside ``catalog/``."""
    from hestdata._version import __version__
    from hestdata.errors import HestdataError
    from hestdata.store.safety import check_entry, check_relpath

    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IntegrityError(f"{where}: invalid JSON ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != POINTER_FORMAT:
        raise IntegrityError(f"{where}: not a hestdata root pointer")
    fv = doc.get("format_version")
    if not isinstance(fv, int) or fv > L.FORMAT_VERSION:
        raise HestdataError(f"{where}: root in store format {fv} (written by hestdata {doc.get('hestdata_version')}); "
                            f"this hestdata {__version__} reads formats up to {L.FORMAT_VERSION}: upgrade hestdata")
    cat = doc.get("catalog")
    if not isinstance(doc.get("version"), int) or not isinstance(cat, dict) or not isinstance(cat.get("base"), dict):
        raise IntegrityError(f"{where}: malformed root pointer (version, catalog)")
    for part in ("base", "tail"):
        e = cat.get(part)
        if e is None:
            continue
        rel = check_relpath(e.get("path"), where) if isinstance(e, dict) else None
        if rel is None or not rel.startswith(L.CATALOG_DIR + "/") or not isinstance(e.get("n_rows"), int):
            raise IntegrityError(f"{where}: malformed catalog entry {part}: {e!r}")
        check_entry(rel, e, where)
    files = doc.get("files", {})
    if not isinstance(files, dict):
        raise IntegrityError(f"{where}: malformed root files")
    for rel, e in files.items():
        check_relpath(rel, where)
        check_entry(rel, e, where)
    return doc


def read_version(read: Callable[[str], bytes], pointer: dict[str, Any], where: str) -> list[bytes]:
    """The catalog files of a version (base, then tail if any), each checked against the pointer."""
    out = []
    for part in ("base", "tail"):
        e = pointer["catalog"].get(part)
        if e is None:
            continue
        data = read(e["path"])
        if len(data) != e["size"] or hashlib.sha256(data).hexdigest() != e["sha256"]:
            raise IntegrityError(f"{where}: {e['path']} does not match the root pointer (version {pointer['version']})")
        out.append(data)
    return out


def merge(base: Any, tail: Any | None) -> Any:
    """The catalog of a version as polars: the base with the tail's rows laid over it (deleted ones dropped)."""
    import polars as pl

    if tail is None or tail.height == 0:
        return base
    gone = tail["id"].to_list()
    live = tail.filter(~pl.col(DELETED)).drop(DELETED)
    return pl.concat([base.filter(~pl.col("id").is_in(gone)), live.select(base.columns)], how="vertical_relaxed"
                     ).sort("id")


# -- writing -------------------------------------------------------------------------------------------------
def local_pointer(root: Path) -> dict[str, Any] | None:
    """The pointer of a local root (None for a root without one: empty, or format 1)."""
    p = root / L.ROOT_POINTER
    if not p.is_file():
        return None
    return parse_pointer(p.read_bytes(), str(p))


def _table_bytes(rows: list[dict[str, Any]], schema: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = sorted(rows, key=lambda r: r["id"])
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=ROW_GROUP_ROWS)
    return buf.getvalue()


def _read_rows(root: Path, entry: dict[str, Any] | None, ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows of a local catalog file (only those with ``ids``, read through the row groups' id statistics)."""
    import pyarrow.parquet as pq

    if entry is None:
        return []
    p = root / entry["path"]
    try:
        if ids is None:
            return pq.read_table(p).to_pylist()
        if not ids:
            return []
        return pq.read_table(p, filters=[("id", "in", list(ids))]).to_pylist()
    except Exception as exc:
        raise StoreError(f"{p}: cannot read catalog version ({type(exc).__name__}: {exc}); run `hestdata repair "
                         f"{root}` to rebuild it from the samples") from exc


def commit(root: Path, upserts: dict[str, dict[str, Any]], deletes: set[str], root_files: dict[str, Any] | None,
           *, rebuild: bool = False) -> dict[str, Any]:
    """Write the next catalog version of ``root`` (call under the root lock) and return its pointer.

    ``upserts`` are whole rows by id, ``deletes`` ids to drop, ``root_files`` the root's own files (None: keep);
    ``rebuild`` starts from nothing (repair: the rows given are the whole catalog)."""
    from hestdata._version import __version__
    from hestdata.metadata import now_iso
    from hestdata.store.catalog import arrow_schema
    from hestdata.store.failpoints import failpoint

    failpoint("before-publish")
    old = None if rebuild else local_pointer(root)
    version = (old["version"] + 1) if old else 1
    if rebuild:  # keep version numbers increasing after a repair
        prev = _versions_on_disk(root)
        version = max([version, *[v + 1 for v in prev]])
    base_e = old["catalog"]["base"] if old else None
    tail_e = old["catalog"].get("tail") if old else None
    tail = {r["id"]: r for r in _read_rows(root, tail_e)}
    touched = sorted(set(upserts) | set(deletes))
    in_base = {r["id"] for r in _read_rows(root, base_e, touched)} if base_e else set()
    n_samples = old["catalog"]["n_samples"] if old else 0
    for sid in touched:
        before = (not tail[sid][DELETED]) if sid in tail else sid in in_base
        after = sid in upserts
        n_samples += int(after) - int(before)
        if after:
            tail[sid] = {**upserts[sid], DELETED: False}
        elif before or sid in tail:
            tail[sid] = {"id": sid, DELETED: True}
    schema = arrow_schema()
    cat_dir = root / L.CATALOG_DIR
    n_base = base_e["n_rows"] if base_e else 0
    if rebuild or base_e is None or len(tail) >= compact_rows(n_base):
        rows = {r["id"]: r for r in _read_rows(root, base_e)}
        for sid, r in tail.items():
            if r[DELETED]:
                rows.pop(sid, None)
            else:
                rows[sid] = {k: v for k, v in r.items() if k != DELETED}
        data = _table_bytes(list(rows.values()), schema)
        base_e = _file_entry(f"{L.CATALOG_DIR}/base-{version:08d}.parquet", data, len(rows))
        atomic_write_bytes(cat_dir / f"base-{version:08d}.parquet", data)
        tail_e = None
        n_samples = len(rows)
    else:
        import pyarrow as pa

        data = _table_bytes(list(tail.values()), schema.append(pa.field(DELETED, pa.bool_())))
        tail_e = _file_entry(f"{L.CATALOG_DIR}/tail-{version:08d}.parquet", data, len(tail))
        atomic_write_bytes(cat_dir / f"tail-{version:08d}.parquet", data)
    files = (old.get("files", {}) if old else {}) if root_files is None else root_files
    pointer = {"format": POINTER_FORMAT, "format_version": L.FORMAT_VERSION, "hestdata_version": __version__,
               "version": version, "updated_at": now_iso(),
               "catalog": {"n_samples": n_samples, "base": base_e, "tail": tail_e},
               "files": {k: files[k] for k in sorted(files)}}
    doc = (json.dumps(pointer, indent=1) + "\n").encode()
    atomic_write_bytes(cat_dir / f"v{version:08d}.json", doc)
    failpoint("before-pointer")
    atomic_write_bytes(root / L.ROOT_POINTER, doc)  # the commit
    collect_garbage(root, version)
    return pointer


def _versions_on_disk(root: Path) -> list[int]:
    d = root / L.CATALOG_DIR
    out = []
    if d.is_dir():
        for p in d.iterdir():
            m = _NAME.match(p.name)
            if m:
                out.append(int(m.group(2) or m.group(3)))
    return out


def collect_garbage(root: Path, current: int) -> list[str]:
    """Remove catalog files no kept version refers to (older than the last ``KEEP_VERSIONS``, or left by a
    commit that never happened); returns their names."""
    d = root / L.CATALOG_DIR
    if not d.is_dir():
        return []
    keep: set[str] = set()
    for v in range(max(1, current - KEEP_VERSIONS + 1), current + 1):
        p = d / f"v{v:08d}.json"
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        keep.add(p.name)
        for part in ("base", "tail"):
            e = doc.get("catalog", {}).get(part)
            if e:
                keep.add(e["path"].rsplit("/", 1)[-1])
    removed = []
    for p in d.iterdir():
        if _NAME.match(p.name) and p.name not in keep:
            p.unlink(missing_ok=True)
            removed.append(p.name)
        elif p.name.startswith(".") and p.name.endswith(".tmp"):  # an atomic write a crash interrupted
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed
