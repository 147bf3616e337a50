"""``hestdata upgrade ROOT``: rewrite a store-format-1 root in format 2, in place, sample by sample (and, on a
format-2 root, split the consolidated metadata of samples written before 0.2.1: see :func:`_split_samples`).

Each sample is rebuilt in a temporary folder beside it — every file hard-linked (or copied) except its image
pyramids, which are rewritten as sharded arrays level by level in bounded memory (the pixels are unchanged:
zarr decodes the old chunks, the new shards hold the same values), the root attributes marked
``format_version: 2``, the consolidated metadata refreshed and the sample's ``manifest.json`` written — then
swapped in with the same atomic rename an overwrite uses. When every sample is in format 2 the first catalog
version is committed (the root pointer appears: the root is now format 2) and the format-1 ``catalog.parquet``
and ``manifest.json`` are removed.

Crash-safe at every step: a killed upgrade leaves a format-1 root whose samples are each wholly old or wholly
new (a sample's own manifest says which), readable as before; ``hestdata upgrade`` again resumes with the
samples still old. ``<root>/.upgrading`` marks an upgrade in progress (``validate`` says so).
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import StoreError
from hestdata.store import layout as L

MARKER = ".upgrading"


@dataclass
class UpgradeReport:
    already: bool = False
    upgraded: list[str] = field(default_factory=list)
    skipped: int = 0  # samples already in format 2 (an earlier, interrupted run)
    files_before: int = 0
    files_after: int = 0
    version: int | None = None
    split_only: bool = False  # a format-2 root: only sample metadata was split (no file rewritten)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _is_sharded(meta: dict[str, Any]) -> bool:
    return any(c.get("name") == "sharding_indexed" for c in meta.get("codecs", []))


def _reshard_level(src: Any, dst_group: Any, name: str, folder: Path) -> None:
    """Write the array ``src`` (c, y, x) as ``dst_group/<name>``, sharded, reading it 512 rows at a time."""
    from hestdata.store.sample import ShardRowWriter, _zstd, shard_shape

    c, h, w = src.shape
    chunks = (c, min(L.IMAGE_CHUNK_PX, h), min(L.IMAGE_CHUNK_PX, w))
    shards = shard_shape(chunks, (c, h, w))
    arr = dst_group.create_array(name, shape=(c, h, w), dtype=src.dtype, chunks=chunks, shards=shards,
                                 compressors=[_zstd(1)], dimension_names=("c", "y", "x"), fill_value=0)
    arr.attrs.update(dict(src.attrs))
    writer = ShardRowWriter(folder, [chunks], [shards], src.dtype, names=[name])
    try:
        for r0 in range(0, h, chunks[1]):
            block = np.moveaxis(np.asarray(src[:, r0:r0 + chunks[1], :]), 0, -1)
            writer.write(0, r0, block, h)
    finally:
        writer.close()


def _rebuild(old: Path, tmp: Path) -> None:
    """The format-2 copy of the format-1 sample ``old`` in ``tmp`` (see the module docstring)."""
    import warnings

    import zarr

    import hestdata.store.codecs  # noqa: F401  (patch arrays' metadata names the JPEG codec)

    src = zarr.open_group(str(old), mode="r", use_consolidated=False)
    levels: list[tuple[str, str]] = []  # (image name, level name) to rewrite
    if "images" in src:
        for image_name, image in src["images"].groups():
            for level_name, arr in image.arrays():
                if not _is_sharded(arr.metadata.to_dict()):
                    levels.append((image_name, level_name))
    skip = {f"images/{i}/{lv}" for i, lv in levels}
    for p in sorted(old.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(old).as_posix()
        if rel == L.SAMPLE_MANIFEST or any(rel == s or rel.startswith(s + "/") for s in skip):
            continue
        _link_or_copy(p, tmp / rel)
    zj = tmp / "zarr.json"  # hard-linked: write a new file, never through the link
    doc = json.loads(zj.read_text())
    doc["attributes"][L.META_KEY]["format_version"] = L.FORMAT_VERSION
    doc.pop("consolidated_metadata", None)
    zj.unlink()
    zj.write_text(json.dumps(doc, indent=2))
    dst = zarr.open_group(str(tmp), mode="r+", use_consolidated=False)
    for image_name, level_name in levels:
        _reshard_level(src["images"][image_name][level_name], dst["images"][image_name], level_name,
                       tmp / "images" / image_name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
        zarr.consolidate_metadata(str(tmp))
    from hestdata.store.consolidated import split_file

    split_file(tmp / "zarr.json")


def _sample_folders(r: Path) -> list[Path]:
    """The committed sample folders of the root ``r``, sorted."""
    return sorted(p for p in (r / L.SAMPLES).glob(f"*{L.SAMPLE_SUFFIX}") if L.is_sample_dir(p)) \
        if (r / L.SAMPLES).is_dir() else []


def _swap_in(r: Path, folder: Path, build: Callable[[Path], None]) -> None:
    """Build the new version of the sample ``folder`` in a temporary folder beside it (``build(tmp)``), write its
    manifest, and swap it in with the atomic rename an overwrite uses; the temporary folder never outlives this."""
    from hestdata.store.atomic import commit_dir, held_lock, lock_of
    from hestdata.store.failpoints import failpoint
    from hestdata.store.manifest import write_sample_manifest

    sid = folder.name[: -len(L.SAMPLE_SUFFIX)]
    tmp = folder.with_name(f".tmp-{sid}-{uuid.uuid4().hex[:8]}{L.SAMPLE_SUFFIX}")
    with held_lock(lock_of(tmp)):
        try:
            build(tmp)
            write_sample_manifest(tmp, sid)
            failpoint("upgrade-before-swap", sid)
            commit_dir(tmp, folder, overwrite=True, root=r, keep_replaced=False)  # a rewrite, not a new version
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _split_samples(r: Path, rep: UpgradeReport, echo: Callable[[str], None] | None) -> None:
    """Format-2 samples written before hestdata 0.2.1 list their JPEG patch arrays in the consolidated metadata,
    which zarr cannot parse without hestdata: rewrite each one's ``zarr.json`` split
    (:mod:`hestdata.store.consolidated`) and its manifest in a hard-linked copy swapped in atomically, then
    publish the changed rows. The data files are untouched."""
    from hestdata.store.consolidated import is_split, split_private
    from hestdata.store.publish import publish

    changed = []
    for folder in _sample_folders(r):
        sid = folder.name[: -len(L.SAMPLE_SUFFIX)]
        try:
            doc = json.loads((folder / "zarr.json").read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{folder / 'zarr.json'}: not readable ({exc}); run `hestdata repair {r}`") from None
        if is_split(doc):
            rep.skipped += 1
            continue

        def build(tmp: Path, folder: Path = folder, doc: dict[str, Any] = doc) -> None:
            for p in sorted(folder.rglob("*")):
                rel = p.relative_to(folder).as_posix()
                if p.is_file() and not p.is_symlink() and rel not in ("zarr.json", L.SAMPLE_MANIFEST):
                    _link_or_copy(p, tmp / rel)
            (tmp / "zarr.json").write_text(json.dumps(split_private(doc), indent=2))

        _swap_in(r, folder, build)
        changed.append(sid)
        rep.upgraded.append(sid)
        if echo:
            echo(f"  {sid}: metadata split (opens without hestdata)")
    if changed:
        publish(r, changed)


def _sample_format(folder: Path) -> int:
    try:
        doc = json.loads((folder / "zarr.json").read_text())
        fv = int(doc["attributes"][L.META_KEY].get("format_version", 1))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{folder}: not a readable sample ({type(exc).__name__}: {exc}); move it out of the "
                         "root or delete it, then run `hestdata upgrade` again") from None
    return fv if (folder / L.SAMPLE_MANIFEST).is_file() else 1


def _count_files(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(root).parts))


def upgrade_root(root: str | Path, echo: Callable[[str], None] | None = None) -> UpgradeReport:
    """Upgrade the local root ``root`` to store format 2 (no-op on a format-2 root); see the module docstring."""
    from hestdata.store import versions
    from hestdata.store.atomic import held_lock, root_lock
    from hestdata.store.catalog import sample_row
    from hestdata.store.journal import replay_journal
    from hestdata.store.pending import clear_pending
    from hestdata.store.publish import root_files
    from hestdata.store.root import local_format

    r = Path(root)
    if not r.is_dir():
        raise StoreError(f"{r}: root folder not found")
    rep = UpgradeReport()
    with held_lock(r / ".hestdata.upgrade.lock"):
        fmt = local_format(r)
        if fmt == 2 and not (r / MARKER).exists():
            _split_samples(r, rep, echo)
            rep.already, rep.split_only = not rep.upgraded, True
            rep.version = int(versions.local_pointer(r)["version"])  # type: ignore[index]
            return rep
        if fmt is None and not (r / L.SAMPLES).is_dir():
            raise StoreError(f"{r}: not a hestdata root (no {L.CATALOG}, {L.MANIFEST} or {L.ROOT_POINTER})")
        rep.files_before = _count_files(r)
        (r / MARKER).touch()
        from hestdata.store.recovery import RecoveryReport, _remove_stale, _settle_swaps

        with root_lock(r, L.LOCK):
            replay_journal(r)  # a format-1 publication interrupted before the upgrade
            rec = RecoveryReport()
            _settle_swaps(r, rec)
            _remove_stale(r, rec, include_downloads=True)
        samples = _sample_folders(r)
        for folder in samples:
            sid = folder.name[: -len(L.SAMPLE_SUFFIX)]
            if _sample_format(folder) >= 2:
                rep.skipped += 1
                continue
            _swap_in(r, folder, lambda tmp, folder=folder: _rebuild(folder, tmp))
            rep.upgraded.append(sid)
            if echo:
                echo(f"  {sid}: rewritten in format 2")
        with root_lock(r, L.LOCK):
            rows = {p.name[: -len(L.SAMPLE_SUFFIX)]: sample_row(p) for p in samples}
            pointer = versions.commit(r, rows, set(), root_files(r), rebuild=True)
            for name in (L.CATALOG, L.MANIFEST):
                (r / name).unlink(missing_ok=True)
            clear_pending(r, list(rows))
        (r / MARKER).unlink(missing_ok=True)
    rep.version = int(pointer["version"])
    rep.files_after = _count_files(r)
    return rep


upgrade = upgrade_root
