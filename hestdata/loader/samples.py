"""Per-sample state of a dataset, opened lazily: which patch array, which table its rows point into, the patch
index and the targets.

A dataset knows each sample's size from its catalog row (patch count and shard size), so building a dataset over
thousands of samples reads nothing per sample; the first batch that touches a sample opens it — its root
``zarr.json`` (metadata + consolidated array metadata), the patch → row index and the table's obs names — in the
process that reads it. Never through ``spatialdata.read_zarr``, which loads every element eagerly. What a sample
holds (spots, cells, channels, slide) is its stored variant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hestdata.errors import IntegrityError
from hestdata.loader.targets import Targets, gene_positions
from hestdata.store import layout as L
from hestdata.store.patches import PatchArrayReader
from hestdata.store.root import StoredSample


def table_of(sample: StoredSample, patch: str) -> str:
    """The table a patch array's ``obs_index`` points into (``tables/expression`` unless stated; '' for none)."""
    attrs = sample.patch_attrs(patch)
    if "obs_index_table" in attrs and not attrs["obs_index_table"]:
        return ""  # patches tied to no table (slide tiles)
    return str(attrs.get("obs_index_table") or f"tables/{L.TABLE}")


@dataclass
class _Opened:
    reader: PatchArrayReader
    obs_index: np.ndarray  # patch -> table row
    centers_um: np.ndarray
    obs_names: np.ndarray
    targets: Targets
    ident: tuple[int, int] | None = None  # local: (inode, mtime) of the manifest the sample was opened with


def _manifest_ident(sample: StoredSample) -> tuple[int, int] | None:
    """(inode, mtime) of a local format-2 sample's manifest (None for remote samples, pinned by content instead)."""
    import os

    if not sample.fs.is_local or sample.root is None or sample.root.format_version != 2:
        return None
    try:
        st = os.stat(os.path.join(sample.path, L.SAMPLE_MANIFEST))
    except FileNotFoundError:
        return 0, 0  # no sample there right now (an overwrite between its two renames)
    return st.st_ino, st.st_mtime_ns


def retired_copy(sample: StoredSample) -> StoredSample | None:
    """The version of a local sample that its catalog row names, kept by an overwrite that replaced it
    (``samples/.old-<id>-<digest>.zarr``, ``store.atomic``), or None."""
    import os
    import time

    digest = (sample.row or {}).get("sha256")
    if not sample.fs.is_local or sample.root is None or not digest:
        return None
    folder = os.path.join(os.path.dirname(sample.path.rstrip("/")), L.retired_name(sample.id, str(digest)))
    for _ in range(3):  # between the overwrite's renames the old version is in its trash name for a moment
        if os.path.isdir(folder):
            old = StoredSample(sample.root, sample.id, sample.row)
            old.path = folder
            return old
        time.sleep(0.05)
    return None


def _read_all(parts: dict[str, Any], concurrent: bool) -> dict[str, Any]:
    """Call each of ``parts``; from a bucket, at once on a few threads (each is one or two requests: a sample opens
    in the time of its slowest read, not of their sum)."""
    if not concurrent:
        return {k: f() for k, f in parts.items()}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(parts), thread_name_prefix="hestdata-open") as pool:
        futures = {k: pool.submit(f) for k, f in parts.items()}
        return {k: fut.result() for k, fut in futures.items()}


@dataclass
class LoadedSample:
    """One sample as a dataset sees it: its size now, everything else when first used."""

    stored: StoredSample
    patch: str
    n_patches: int
    shard_patches: int
    first: int  # global id of this sample's first patch
    genes: list[str]
    _opened: _Opened | None = field(default=None, repr=False)
    label_codes: np.ndarray | None = field(default=None, repr=False)  # class index per table row (labels=…)

    @property
    def sample_id(self) -> str:
        return self.stored.id

    @property
    def path(self) -> str:
        return self.stored.path

    @property
    def variant(self) -> str:
        return self.stored.variant

    def _open(self) -> _Opened:
        if self._opened is None:
            s = self.stored
            ident = _manifest_ident(s)
            if ident is not None:
                try:
                    s.manifest()  # local: the manifest must be the one the catalog version names
                except IntegrityError:
                    old = retired_copy(s)  # replaced since the dataset opened the root: its kept version
                    if old is None or old.path == s.path:
                        raise
                    self.stored = s = old
                    s.manifest()
                    ident = _manifest_ident(s)
            g = s.patch_group(self.patch)  # the sample's metadata (manifest, zarr.json): read once, first
            table = table_of(s, self.patch) if s.variant != "channels" else ""
            parts = {"reader": lambda: s.patch_reader(self.patch),
                     "obs_index": lambda: np.asarray(g[L.PATCH_OBS_INDEX][:], dtype=np.int64),
                     "centers": lambda: np.asarray(g[L.PATCH_CENTERS][:], dtype=np.float32),
                     "names": lambda: s.table_names(table[len("tables/"):]) if table else ([], None)}
            got = _read_all(parts, concurrent=not s.fs.is_local)
            reader, obs_index, centers, (var, obs_names) = (got[k] for k in parts)
            if obs_names is None:  # patches are their own rows
                obs_names = np.array([f"tile{i}" for i in range(reader.info.n_patches)])
                obs_index = np.arange(reader.info.n_patches, dtype=np.int64)
            targets = Targets(s, table, gene_positions(self.genes, var))
            self._opened = _Opened(reader, obs_index, centers, obs_names, targets, ident)
        return self._opened

    def check_unchanged(self) -> bool:
        """A local sample must still be the one this dataset opened: an ``--overwrite`` swaps in a new folder
        (new manifest inode), whose patches would not match the catalog row's counts and rows. The overwrite keeps
        the old version for a while (``samples/.old-…``): then the sample moves there and True says "read what
        you just read again"; without it, an ``IntegrityError``."""
        o = self._open()
        if o.ident is None or _manifest_ident(self.stored) == o.ident:
            return False
        old = retired_copy(self.stored)
        if old is not None and _manifest_ident(old) == o.ident:
            self.stored, self._opened = old, None
            return True
        raise IntegrityError(f"{self.path}: sample {self.sample_id} was replaced since this dataset opened it "
                             "(an overwrite), and the version it opened is no longer kept "
                             "($HESTDATA_KEEP_OLD_S); reopen the dataset")

    @property
    def reader(self) -> PatchArrayReader:
        return self._open().reader

    @property
    def obs_index(self) -> np.ndarray:
        return self._open().obs_index

    @property
    def centers_um(self) -> np.ndarray:
        return self._open().centers_um

    @property
    def obs_names(self) -> np.ndarray:
        return self._open().obs_names

    @property
    def targets(self) -> Targets:
        return self._open().targets
