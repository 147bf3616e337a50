"""Per-sample state of a dataset: which patch array, which table its rows point into, and the patch index.

Built from each sample's root ``zarr.json`` (metadata + consolidated array metadata), the patch → row index and
the table's var/obs names — never through ``spatialdata.read_zarr``, which loads every element eagerly. What a
sample holds (spots, cells, channels, slide) is its stored variant (``store.layout.variant_of``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hestdata.io.fs import ProcessLocalFS, join
from hestdata.loader.targets import Targets, gene_positions
from hestdata.store import layout as L
from hestdata.store.access import open_group
from hestdata.store.patches import PatchArrayReader, open_patch_reader


@dataclass
class LoadedSample:
    """One sample as a dataset sees it."""

    sample_id: str
    path: str
    reader: PatchArrayReader
    obs_index: np.ndarray  # patch -> table row
    centers_um: np.ndarray
    obs_names: np.ndarray
    targets: Targets
    first: int  # global id of this sample's first patch
    variant: str = "spots"


def table_of(meta: dict[str, Any], patch: str) -> str:
    """The table a patch array's ``obs_index`` points into (``tables/expression`` unless stated; '' for none)."""
    cons = meta.get("consolidated_metadata", {}).get("metadata", {})
    attrs = cons.get(f"{L.PATCH_GROUP}/{patch}", {}).get("attributes", {})
    if "obs_index_table" in attrs and not attrs["obs_index_table"]:
        return ""  # patches tied to no table (slide tiles)
    return str(attrs.get("obs_index_table") or f"tables/{L.TABLE}")


def table_names(fs: ProcessLocalFS, path: str, table: str) -> tuple[list[str], np.ndarray]:
    """(var names, obs names) of a sample's table, from one opening of its group."""
    from anndata.io import read_elem

    g = open_group(fs, join(path, table))
    return [str(v) for v in read_elem(g["var"]).index], np.asarray(read_elem(g["obs"]).index.astype(str))


def sample_attrs(meta: dict[str, Any]) -> dict[str, Any]:
    """The hestdata metadata in a sample's root ``zarr.json``."""
    return meta.get("attributes", {}).get(L.META_KEY, {})


def open_sample(fs: ProcessLocalFS, path: str, meta: dict[str, Any], patch: str, table: str, var: list[str],
                obs_names: np.ndarray | None, genes: list[str], first: int,
                pinned: dict[str, tuple[int, str]] | None = None) -> LoadedSample:
    """A sample's patch reader, patch → row index, centres and targets for ``genes``."""
    consolidated = meta.get("consolidated_metadata", {}).get("metadata", {})
    attrs = sample_attrs(meta)
    sid = attrs.get("id", path.rsplit("/", 1)[-1])
    reader = open_patch_reader(fs, path, patch, consolidated, pinned)
    g = open_group(fs, join(path, L.PATCH_GROUP, patch))
    obs_index = np.asarray(g[L.PATCH_OBS_INDEX][:], dtype=np.int64)
    centers = np.asarray(g[L.PATCH_CENTERS][:], dtype=np.float32)
    if obs_names is None:  # patches are their own rows
        obs_names = np.array([f"tile{i}" for i in range(reader.info.n_patches)])
        obs_index = np.arange(reader.info.n_patches, dtype=np.int64)
    targets = Targets(path, table, gene_positions(genes, var))
    return LoadedSample(sid, path, reader, obs_index, centers, obs_names, targets, first, L.variant_of(attrs))
