"""``catalog.parquet``: one row per sample, the index every query runs on; updated with the manifest.

Publishing a sample (after its folder was renamed into place) happens under the root lock: the sample's files
are hashed into the manifest, its catalog row is upserted, rows of vanished samples are dropped, then the
catalog and finally the manifest are written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hestdata.errors import StoreError
from hestdata.store import layout as L
from hestdata.store.atomic import root_lock
from hestdata.store.failpoints import failpoint
from hestdata.store.manifest import digest, load_manifest, scan

CATALOG_SCHEMA: dict[str, str] = {
    "id": "str", "cohort": "str", "patient": "str", "technology": "str", "species": "str", "organ": "str",
    "disease_state": "str", "oncotree_code": "str", "panel": "str", "preservation": "str",
    "n_obs": "int64", "n_genes": "int64", "pixel_size_um": "float64", "pixel_size_flagged": "bool",
    "patch_arrays": "list[str]", "n_patches": "int64", "elements": "list[str]", "bytes": "int64", "sha256": "str", "license": "str",
    "synthetic": "bool", "path": "str", "created_at": "str", "hestdata_version": "str",
    "profile": "str", "alterations": "list[str]",
}


ELEMENTS = ("image", "shapes", "expression", "patches", "points")  # what a partial download can leave out


def _arrow_schema() -> Any:
    import pyarrow as pa

    m = {"str": pa.string(), "int64": pa.int64(), "float64": pa.float64(), "bool": pa.bool_(),
         "list[str]": pa.list_(pa.string())}
    return pa.schema([(k, m[v]) for k, v in CATALOG_SCHEMA.items()])


def catalog_row(meta: Any, sha256: str, nbytes: int) -> dict[str, Any]:
    """The catalog row of a sample from its metadata, its digest and its size on disk."""
    patches = meta.qc.patches
    return {
        "id": meta.id, "cohort": meta.cohort, "patient": meta.patient, "technology": meta.technology,
        "species": meta.species, "organ": meta.organ, "disease_state": meta.disease_state,
        "oncotree_code": meta.oncotree_code, "panel": meta.panel, "preservation": meta.preservation,
        "n_obs": meta.qc.n_obs, "n_genes": meta.qc.n_genes, "pixel_size_um": meta.pixel_size_um.value,
        "pixel_size_flagged": meta.pixel_size_um.flagged, "patch_arrays": sorted(patches),
        "n_patches": sum(p.n_patches for p in patches.values()),
        "elements": [e for e in ELEMENTS if e not in meta.missing_elements], "bytes": nbytes, "sha256": sha256,
        "license": meta.license, "synthetic": meta.synthetic, "path": L.sample_relpath(meta.id),
        "created_at": meta.created_at, "hestdata_version": meta.hestdata_version,
        "profile": meta.slide_profile.kind if meta.slide_profile else None, "alterations": sorted(meta.alterations),
    }


def empty_catalog() -> Any:
    """An empty catalog (polars) with the full schema."""
    import polars as pl

    return pl.from_arrow(_arrow_schema().empty_table())


def ids_with(cat: Any, *, patch: str | None = None, element: str | None = None) -> list[str]:
    """Ids of the catalog's samples that hold the patch array ``patch`` and/or the element ``element``
    (``image``, ``expression``, … — see ``ELEMENTS``), in catalog order."""
    rows = zip(cat["id"].to_list(), cat["patch_arrays"].to_list(), cat["elements"].to_list(), strict=True)
    return [i for i, arrays, elements in rows
            if (patch is None or patch in arrays) and (element is None or element in elements)]


def open_catalog(root: str | Path) -> Any:
    """The catalog of a root as a polars DataFrame (empty, with the full schema, if nothing is published)."""

    r = Path(root)
    if not r.is_dir():
        raise StoreError(f"{r}: root folder not found")
    p = r / L.CATALOG
    if not p.is_file():
        return empty_catalog()
    return parse_catalog(p.read_bytes(), str(p))


def parse_catalog(data: bytes, where: str) -> Any:
    """The one catalog reader: ``catalog.parquet`` bytes (local or fetched) as a polars DataFrame, checked —
    readable, with ``id`` and ``path`` columns, unique valid ids, and relative sample paths inside the root."""
    import polars as pl

    from hestdata.errors import InputError

    try:
        cat = pl.read_parquet(io.BytesIO(data))
    except Exception as exc:
        raise StoreError(f"{where}: cannot read catalog ({type(exc).__name__}: {exc})") from exc
    missing = [c for c in ("id", "path") if c not in cat.columns]
    if missing:
        raise StoreError(f"{where}: catalog lacks column(s) {missing}")
    ids = cat["id"].to_list()
    if len(set(ids)) != len(ids):
        raise StoreError(f"{where}: catalog has duplicate ids")
    for sid, rel in zip(ids, cat["path"].to_list(), strict=True):
        try:
            L.check_sample_id(sid)
        except InputError as exc:
            raise StoreError(f"{where}: {exc.reason}") from None
        if rel != L.sample_relpath(sid):
            raise StoreError(f"{where}: sample {sid!r} has path {rel!r}, expected {L.sample_relpath(sid)!r}")
    return cat


def _read_rows(root: Path) -> list[dict[str, Any]]:
    """Catalog rows via pyarrow (the conversion path does not import polars)."""
    import pyarrow.parquet as pq

    p = root / L.CATALOG
    if not p.is_file():
        return []
    try:
        return pq.read_table(p).to_pylist()
    except Exception as exc:
        raise StoreError(f"{p}: cannot read catalog ({type(exc).__name__}: {exc}); run `hestdata repair {root}` "
                         "to rebuild it from the samples") from exc


def catalog_bytes(rows: list[dict[str, Any]]) -> bytes:
    """``catalog.parquet`` content for ``rows`` (sorted by id, full schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema()
    rows = sorted(rows, key=lambda r: r["id"])
    table = pa.Table.from_pylist([{k: r.get(k) for k in schema.names} for r in rows], schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def _commit(root: Path, rows: list[dict[str, Any]], files: dict[str, Any]) -> None:
    """Catalog and manifest replaced together (one journaled step: a crash leaves the old pair or the new)."""
    import hashlib

    from hestdata.metadata import now_iso
    from hestdata.store.journal import commit_files
    from hestdata.store.manifest import manifest_bytes

    cat = catalog_bytes(rows)
    files[L.CATALOG] = {"size": len(cat), "sha256": hashlib.sha256(cat).hexdigest()}
    commit_files(root, {L.CATALOG: cat, L.MANIFEST: manifest_bytes(files, now_iso())})


def publish(root: str | Path, sample_ids: list[str] | None = None, *, rebuild: bool = False) -> None:
    """Refresh manifest entries and catalog rows for ``sample_ids`` (all samples when None), under the lock.

    ``rebuild=True`` ignores the existing catalog and manifest (``hestdata repair``: rebuilt from the samples)."""
    from hestdata.store.journal import replay_journal
    from hestdata.store.sample import read_metadata

    r = Path(root)
    with root_lock(r, L.LOCK):
        replay_journal(r)
        manifest = {"files": {}} if rebuild else _manifest_or_hint(r)
        files: dict[str, Any] = manifest["files"]
        present = {p.name[: -len(L.SAMPLE_SUFFIX)] for p in (r / L.SAMPLES).glob(f"*{L.SAMPLE_SUFFIX}")
                   if L.is_sample_dir(p)}
        todo = sorted(present) if sample_ids is None else list(sample_ids)
        # drop entries of vanished samples and of the samples being refreshed
        for path in list(files):
            parts = path.split("/")
            if parts[0] == L.SAMPLES and len(parts) > 1:
                sid = parts[1][: -len(L.SAMPLE_SUFFIX)]
                if sid not in present or sid in todo:
                    del files[path]
        rows = {} if rebuild else {row["id"]: row for row in _read_rows(r)}
        rows = {k: v for k, v in rows.items() if k in present}
        for sid in todo:
            rel = L.sample_relpath(sid)
            entries = scan(r, rel)
            files.update(entries)
            meta = read_metadata(r / rel)
            rows[sid] = catalog_row(meta, digest(entries, rel), sum(e["size"] for e in entries.values()))
        for path in [p for p in files if p.startswith(L.COHORTS + "/")]:
            del files[path]
        if (r / L.COHORTS).is_dir():
            files.update(scan(r, L.COHORTS))
        failpoint("before-publish")
        _commit(r, list(rows.values()), files)


def _manifest_or_hint(root: Path) -> dict[str, Any]:
    from hestdata.errors import IntegrityError

    try:
        return load_manifest(root)
    except IntegrityError as exc:
        raise StoreError(f"{exc} (run `hestdata repair {root}` to rebuild it from the samples)") from None
