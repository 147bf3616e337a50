"""Crash consistency of a root: what an interrupted write leaves behind, and how the next writer repairs it.

Every write to a root goes through one of four windows, each recoverable:

- a sample being written lives in ``samples/.tmp-<id>-<uuid>.zarr`` while its writer holds ``flock`` on the
  sibling ``.lock`` file; a temporary folder whose lock nobody holds belongs to a dead writer and is removed;
- an overwrite swaps the old sample to ``samples/.trash-<id>.zarr-<uuid>`` under the root lock; if the process
  died between the two renames the old sample is put back, otherwise the trash is removed; a completed overwrite
  keeps the old version as ``samples/.old-<id>-<digest>.zarr`` for the readers that opened it, removed here once
  older than ``$HESTDATA_KEEP_OLD_S`` (a day);
- a download stages into ``samples/.dl-<id>.zarr`` (kept across runs so downloads resume; locked while in use);
- a catalog version is committed by renaming the root pointer into place (``store.versions``); catalog files
  of a version that was never committed are garbage and removed;
- a sample renamed into place is marked in ``.pending/`` until a catalog version names it (``store.pending``):
  marked ids are published, so a sample committed before a crash is never lost and never invisible.

:func:`recover_root` does all this under the root lock, at a cost proportional to what was in flight, not to
what the root holds; every command that writes into a root calls it first. In a format-1 root (read only, until
``hestdata upgrade``) an interrupted publication of its catalog + manifest pair is replayed from its journal.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from hestdata.store import layout as L
from hestdata.store.atomic import is_locked, lock_of
from hestdata.store.journal import JOURNAL, STAGE_PREFIX, replay_journal

TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
DL_PREFIX = ".dl-"


@dataclass
class RecoveryReport:
    """What a recovery (or ``hestdata repair``) did."""

    replayed_journal: bool = False
    restored: list[str] = field(default_factory=list)  # overwrite swaps rolled back
    removed: list[str] = field(default_factory=list)  # stale temporary / trash / staging folders
    published: list[str] = field(default_factory=list)  # committed samples that were not in the catalog

    @property
    def changed(self) -> bool:
        return bool(self.replayed_journal or self.restored or self.removed or self.published)


def leftovers(root: Path, include_downloads: bool = True) -> list[Path]:
    """Stale temporary, trash, download-staging and publication folders of ``root`` (none in use)."""
    out: list[Path] = []
    samples = root / L.SAMPLES
    prefixes = (TMP_PREFIX, TRASH_PREFIX) + ((DL_PREFIX,) if include_downloads else ())
    if samples.is_dir():
        for p in sorted(samples.iterdir()):
            if p.name.startswith(prefixes) and not p.name.endswith(".lock") and not is_locked(lock_of(p)):
                out.append(p)
            elif p.name.endswith(".lock") and p.name.startswith(prefixes) and not is_locked(p) \
                    and not p.with_name(p.name[:-5]).exists():
                out.append(p)
    if root.is_dir():
        out += [p for p in sorted(root.iterdir()) if p.name.startswith(STAGE_PREFIX)]
        if (root / JOURNAL).exists():
            out.append(root / JOURNAL)
    return out


def _settle_swaps(root: Path, rep: RecoveryReport) -> None:
    samples = root / L.SAMPLES
    for trash in sorted(samples.glob(f"{TRASH_PREFIX}*")):
        if trash.name.endswith(".lock"):
            continue
        name = trash.name[len(TRASH_PREFIX):].rsplit("-", 1)[0]  # <id>.zarr
        final = samples / name
        if not final.exists() and name.endswith(L.SAMPLE_SUFFIX):
            os.replace(trash, final)
            rep.restored.append(name[: -len(L.SAMPLE_SUFFIX)])
        else:
            shutil.rmtree(trash, ignore_errors=True)
            rep.removed.append(trash.name)


def _remove_stale(root: Path, rep: RecoveryReport, include_downloads: bool) -> None:
    for p in leftovers(root, include_downloads=include_downloads):
        if p.parent != root / L.SAMPLES or p.name.startswith(TRASH_PREFIX):
            continue  # publication leftovers are the journal's business; trash was settled
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
            lock_of(p).unlink(missing_ok=True)  # its writer is gone: the lock marks nothing any more
        else:
            p.unlink(missing_ok=True)
        rep.removed.append(p.name)


def unpublished(root: Path) -> list[str]:
    """Samples committed (or removed) whose catalog version was never written: the pending marks."""
    from hestdata.store.pending import pending_ids

    return pending_ids(root)


def recover_root(root: str | Path, *, include_downloads: bool = False, publish: bool = True) -> RecoveryReport:
    """Bring ``root`` back to a consistent state after any interrupted write (no-op on a healthy root).

    ``publish=False`` leaves committed-but-unpublished samples for their owner to publish (a registration in
    progress publishes all its samples at once, at the end)."""
    from hestdata.store.atomic import prune_retired, root_lock
    from hestdata.store.publish import publish as publish_samples
    from hestdata.store.root import local_format
    from hestdata.store.versions import collect_garbage, local_pointer

    r = Path(root)
    rep = RecoveryReport()
    if not (r / L.SAMPLES).is_dir() and not (r / JOURNAL).exists():
        return rep
    with root_lock(r, L.LOCK):
        fmt = local_format(r)
        if fmt == 1:
            rep.replayed_journal = replay_journal(r)
        _settle_swaps(r, rep)
        _remove_stale(r, rep, include_downloads)
        rep.removed += prune_retired(r)  # replaced versions past their retention
        pointer = local_pointer(r) if fmt == 2 else None
        if pointer is not None:
            rep.removed += collect_garbage(r, int(pointer["version"]))
        rep.published = unpublished(r) if publish and fmt != 1 else []
    if rep.published:
        publish_samples(r, rep.published)
    return rep


@dataclass
class RepairReport(RecoveryReport):
    """What ``hestdata repair`` did, beyond recovery."""

    quarantined: list[str] = field(default_factory=list)  # unreadable samples moved to .quarantine/
    n_samples: int = 0


def repair_root(root: str | Path) -> RepairReport:
    """Recover from any interrupted write (download staging included), then rebuild every sample's manifest and
    the catalog from the samples present (a new catalog version). A sample whose metadata cannot be read is moved
    to ``ROOT/.quarantine/`` (kept, not deleted) and named in the report. A format-1 root is rebuilt by
    ``hestdata upgrade`` instead."""
    import time

    from hestdata.errors import StoreError
    from hestdata.store.atomic import root_lock
    from hestdata.store.pending import clear_pending, pending_ids
    from hestdata.store.publish import check_writable, publish
    from hestdata.store.sample import read_metadata

    r = Path(root)
    if not r.is_dir():
        raise StoreError(f"{r}: root folder not found")
    check_writable(r)
    rep = RepairReport()
    with root_lock(r, L.LOCK):
        rep.replayed_journal = replay_journal(r)
        _settle_swaps(r, rep)
        _remove_stale(r, rep, include_downloads=True)
        (r / L.SAMPLES).mkdir(exist_ok=True)
        for p in sorted((r / L.SAMPLES).glob(f"*{L.SAMPLE_SUFFIX}")):
            if not L.is_sample_dir(p):
                continue
            try:
                read_metadata(p)
            except Exception:
                q = r / ".quarantine" / f"{p.name}-{time.strftime('%Y%m%dT%H%M%S')}"
                q.parent.mkdir(exist_ok=True)
                os.replace(p, q)
                rep.quarantined.append(str(q.relative_to(r)))
        rep.published = pending_ids(r)
    publish(r, None, rebuild=True)
    clear_pending(r, rep.published)
    rep.n_samples = len([p for p in (r / L.SAMPLES).glob(f"*{L.SAMPLE_SUFFIX}") if L.is_sample_dir(p)])
    return rep
