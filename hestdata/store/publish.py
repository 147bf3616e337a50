"""Publishing: a new catalog version naming samples that were committed (or removed), under the root lock.

Publishing a sample reads that sample's manifest and metadata and writes one catalog version
(``store.versions``): O(that sample) plus O(√n) catalog rows, whatever the root holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hestdata.errors import StoreError
from hestdata.store import layout as L
from hestdata.store.atomic import root_lock
from hestdata.store.catalog import sample_row


def root_files(root: Path) -> dict[str, Any]:
    """The root's own files (the cohort descriptors), with size and sha256."""
    from hestdata.store.manifest import scan

    return scan(root, L.COHORTS) if (root / L.COHORTS).is_dir() else {}


def check_writable(root: Path) -> None:
    """A root this hestdata may write into: empty, or format 2 (a format-1 root is upgraded first)."""
    fv = L.local_format(root)
    if fv == 1:
        raise StoreError(f"{root}: a store-format-1 root; this hestdata writes format 2 only (run `hestdata upgrade "
                         f"{root}` first: it rewrites the root in place, sample by sample)")


def publish(root: str | Path, sample_ids: list[str] | None = None, *, rebuild: bool = False) -> None:
    """Write a catalog version with fresh rows for ``sample_ids`` (all samples present when None: rows of samples
    that vanished are dropped too), under the lock.

    A listed id whose folder is gone loses its row. ``rebuild=True`` (``hestdata repair``) starts from nothing:
    every sample present is re-hashed into its manifest and the catalog is rebuilt from them."""
    from hestdata.store import versions
    from hestdata.store.pending import clear_pending

    r = Path(root)
    check_writable(r)
    with root_lock(r, L.LOCK):
        samples = r / L.SAMPLES
        if sample_ids is None:
            todo = sorted(p.name[: -len(L.SAMPLE_SUFFIX)] for p in samples.glob(f"*{L.SAMPLE_SUFFIX}")
                          if L.is_sample_dir(p)) if samples.is_dir() else []
        else:
            todo = list(dict.fromkeys(sample_ids))
        upserts, deletes = {}, set()
        if sample_ids is None and not rebuild:  # the whole root: rows of samples that vanished go too
            from hestdata.store.root import Root

            deletes = set(Root.open(r).ids) - set(todo)
        for sid in todo:
            folder = L.sample_path(r, sid)
            if L.is_sample_dir(folder):
                upserts[sid] = sample_row(folder, rescan=rebuild)
            else:
                deletes.add(sid)
        versions.commit(r, upserts, deletes, root_files(r), rebuild=rebuild)
        clear_pending(r, todo)
