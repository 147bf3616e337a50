"""The catalog: one row per sample, the index every query runs on and the root's index of its samples.

In a format-2 root the catalog is versioned (``store.versions``: immutable versions, a pointer written last); a
row holds what a reader needs before opening the sample — its digest (sha256 of its ``manifest.json``), file
count and size, format version, variant, patch arrays with their patch counts and shard sizes, and a digest of
its gene list. This module holds the catalog's columns, how a sample's row is made and how catalog files are parsed;
``store.publish`` writes versions, ``store.root`` reads them. Format-1 catalogs (``catalog.parquet``) parse here
too (``parse_catalog``).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hestdata.errors import StoreError
from hestdata.store import layout as L

CATALOG_SCHEMA: dict[str, str] = {
    "id": "str", "cohort": "str", "patient": "str", "technology": "str", "species": "str", "organ": "str",
    "disease_state": "str", "oncotree_code": "str", "panel": "str", "preservation": "str",
    "n_obs": "int64", "n_genes": "int64", "pixel_size_um": "float64", "pixel_size_flagged": "bool",
    "patch_arrays": "list[str]", "n_patches": "int64", "elements": "list[str]", "bytes": "int64", "sha256": "str", "license": "str",
    "synthetic": "bool", "path": "str", "created_at": "str", "hestdata_version": "str",
    "profile": "str", "alterations": "list[str]",
    # format 2
    "format_version": "int64", "variant": "str", "n_files": "int64", "patch_counts": "list[int64]",
    "patch_shards": "list[int64]", "genes_sha256": "str",
}
FORMAT2_COLUMNS = ("format_version", "variant", "n_files", "patch_counts", "patch_shards", "genes_sha256")


ELEMENTS = ("image", "shapes", "expression", "patches", "points")  # what a partial download can leave out


def polars_schema() -> dict[str, Any]:
    """The catalog's columns as polars dtypes (without pyarrow: a reader that only opens a root never imports it,
    nor the pandas that pyarrow's interop then pulls in — ~0.9 s of a DataLoader's start)."""
    import polars as pl

    m = {"str": pl.String, "int64": pl.Int64, "float64": pl.Float64, "bool": pl.Boolean,
         "list[str]": pl.List(pl.String), "list[int64]": pl.List(pl.Int64)}
    return {k: m[v] for k, v in CATALOG_SCHEMA.items()}


def arrow_schema() -> Any:
    """The catalog's columns as an Arrow schema."""
    import pyarrow as pa

    m = {"str": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
         "list[str]": pa.list_(pa.string()), "list[int64]": pa.list_(pa.int64())}
    return pa.schema([(k, m[v]) for k, v in CATALOG_SCHEMA.items()])


def catalog_row(meta: Any, sha256: str, nbytes: int, n_files: int | None = None,
                consolidated: dict[str, Any] | None = None, genes_sha256: str | None = None) -> dict[str, Any]:
    """The catalog row of a sample from its metadata, its digest, size and file count, the consolidated metadata
    of its root ``zarr.json`` (patch shard sizes) and the digest of its gene list."""
    patches = meta.qc.patches
    ps = meta.pixel_size_um  # None: an image collection of unknown pixel size
    names = sorted(patches)
    cons = consolidated or {}
    shards = [int(cons.get(f"{L.PATCH_GROUP}/{n}", {}).get("attributes", {}).get("shard_patches")
                  or L.DEFAULT_SHARD_PATCHES) for n in names]
    return {
        "format_version": meta.format_version, "variant": L.variant_of(meta), "n_files": n_files,
        "patch_counts": [patches[n].n_patches for n in names], "patch_shards": shards, "genes_sha256": genes_sha256,
        "id": meta.id, "cohort": meta.cohort, "patient": meta.patient, "technology": meta.technology,
        "species": meta.species, "organ": meta.organ, "disease_state": meta.disease_state,
        "oncotree_code": meta.oncotree_code, "panel": meta.panel, "preservation": meta.preservation,
        "n_obs": meta.qc.n_obs, "n_genes": meta.qc.n_genes, "pixel_size_um": ps.value if ps else None,
        "pixel_size_flagged": bool(ps and ps.flagged), "patch_arrays": names,
        "n_patches": sum(p.n_patches for p in patches.values()),
        "elements": [e for e in ELEMENTS if e not in meta.missing_elements], "bytes": nbytes, "sha256": sha256,
        "license": meta.license, "synthetic": meta.synthetic, "path": L.sample_relpath(meta.id),
        "created_at": meta.created_at, "hestdata_version": meta.hestdata_version,
        "profile": meta.slide_profile.kind if meta.slide_profile else None, "alterations": sorted(meta.alterations),
    }


def empty_catalog() -> Any:
    """An empty catalog (polars) with the full schema."""
    import polars as pl

    return pl.from_arrow(arrow_schema().empty_table())


def ids_with(cat: Any, *, patch: str | None = None, element: str | None = None) -> list[str]:
    """Ids of the catalog's samples that hold the patch array ``patch`` and/or the element ``element``
    (``image``, ``expression``, … — see ``ELEMENTS``), in catalog order."""
    rows = zip(cat["id"].to_list(), cat["patch_arrays"].to_list(), cat["elements"].to_list(), strict=True)
    return [i for i, arrays, elements in rows
            if (patch is None or patch in arrays) and (element is None or element in elements)]


def _read_table(data: bytes, ids: list[str] | None) -> Any:
    """Parquet bytes as polars; with ``ids``, only their rows: row groups whose id statistics exclude every one
    of them are not decoded (catalog files are sorted by id in row groups of 1,024)."""
    import polars as pl

    if ids is None:
        return pl.read_parquet(io.BytesIO(data))
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(io.BytesIO(data))
    col = pf.schema_arrow.get_field_index("id")
    groups = []
    for g in range(pf.metadata.num_row_groups):
        st = pf.metadata.row_group(g).column(col).statistics if col >= 0 else None
        if st is None or not st.has_min_max or any(st.min <= i <= st.max for i in ids):
            groups.append(g)
    cat = pl.from_arrow(pf.read_row_groups(groups)) if groups else pl.from_arrow(pf.schema_arrow.empty_table())
    return cat.filter(pl.col("id").is_in(list(ids))) if "id" in cat.columns else cat


def parse_catalog(data: bytes, where: str, ids: list[str] | None = None) -> Any:
    """The one catalog reader: ``catalog.parquet`` bytes (local or fetched) as a polars DataFrame, checked —
    readable, with ``id`` and ``path`` columns, unique valid ids, and relative sample paths inside the root.
    ``ids``: only those rows (what one-sample operations read)."""
    import polars as pl

    from hestdata.errors import InputError

    try:
        cat = _read_table(data, ids)
    except Exception as exc:
        raise StoreError(f"{where}: cannot read catalog ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in ("id", "path") if c not in cat.columns]
    if missing:
        raise StoreError(f"{where}: catalog lacks column(s) {missing}")
    if cat["id"].n_unique() != cat.height:
        raise StoreError(f"{where}: catalog has duplicate ids")
    # vectorised (a 10,000-row catalog is checked in milliseconds); the row-by-row check below runs only on the
    # first offending row, for its message
    ok = (cat["id"].str.contains(L.SAMPLE_ID_PATTERN).fill_null(False)
          & (cat["path"] == (pl.lit(L.SAMPLE_RELPATH_PREFIX) + cat["id"] + pl.lit(L.SAMPLE_SUFFIX))).fill_null(False)
          if cat.height else pl.Series([], dtype=pl.Boolean))
    bad = cat.filter(~ok) if cat.height else cat
    for sid, rel in zip(bad["id"].to_list()[:1], bad["path"].to_list()[:1], strict=True):
        try:
            L.check_sample_id(sid)
        except InputError as exc:
            raise StoreError(f"{where}: {exc.reason}") from None
        if rel != L.sample_relpath(sid):
            raise StoreError(f"{where}: sample {sid!r} has path {rel!r}, expected {L.sample_relpath(sid)!r}")
    return cat


def parse_tail(data: bytes, where: str, ids: list[str] | None = None) -> Any:
    """A catalog tail (rows changed since the base, with a ``deleted`` column) as a polars DataFrame."""
    try:
        tail = _read_table(data, ids)
    except Exception as exc:
        raise StoreError(f"{where}: cannot read catalog tail ({type(exc).__name__}: {exc})") from exc
    if "id" not in tail.columns or "deleted" not in tail.columns:
        raise StoreError(f"{where}: catalog tail lacks its id/deleted columns")
    return tail


def sample_row(folder: Path, rescan: bool = False) -> dict[str, Any]:
    """The catalog row of a committed format-2 sample folder, from its ``manifest.json`` (written at commit; or
    hashed now when absent or ``rescan``), its root ``zarr.json`` and the index of its expression table."""
    import hashlib
    import json

    from hestdata.metadata import parse_metadata
    from hestdata.store.manifest import parse_sample_manifest, write_sample_manifest

    zj = folder / "zarr.json"
    try:
        doc = json.loads(zj.read_bytes())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{folder}: not a readable sample ({type(exc).__name__}: {exc})") from exc
    meta = parse_metadata(doc.get("attributes", {}).get(L.META_KEY), str(zj))
    sid = folder.name[: -len(L.SAMPLE_SUFFIX)]
    if meta.id != sid:
        raise StoreError(f"{folder}: holds sample {meta.id!r}, not {sid!r}")
    mpath = folder / L.SAMPLE_MANIFEST
    if rescan or not mpath.is_file():
        digest, n_files, nbytes = write_sample_manifest(folder, sid)
    else:
        data = mpath.read_bytes()
        files = parse_sample_manifest(data, str(mpath), sid)
        digest, n_files = hashlib.sha256(data).hexdigest(), len(files) + 1
        nbytes = sum(s for s, _ in files.values()) + len(data)
    from hestdata.store.consolidated import merged

    cons = merged(doc)
    return catalog_row(meta, digest, nbytes, n_files, cons, genes_digest(folder, cons))


def genes_digest(folder: Path, consolidated: dict[str, Any]) -> str | None:
    """sha256 of the expression table's gene list (its var index, one symbol a line): samples with equal digests
    share a gene list, so a reader reads it once."""
    import hashlib

    import zarr

    var = consolidated.get(f"tables/{L.TABLE}/var")
    if var is None:
        return None
    name = var.get("attributes", {}).get("_index", "_index")
    try:
        values = zarr.open_array(str(folder / "tables" / L.TABLE / "var" / name), mode="r")[:]
    except Exception:  # a partial download without the table
        return None
    return hashlib.sha256("\n".join(str(v) for v in values).encode()).hexdigest()
