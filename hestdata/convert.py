"""Curate an in-memory :class:`~hestdata.model.Sample` and write it into a root, atomically.

Reader → pixel size → gene symbols → µm coordinates → pyramid → tissue → patch plans (all checks, nothing
written yet) → one temporary sample folder → rename into place → catalog + manifest under the root lock.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from hestdata._version import __version__
from hestdata.curation.patches import (
    DEFAULT_JPEG_QUALITY,
    DEFAULT_MAX_UPSAMPLING,
    DEFAULT_MIN_TISSUE_FRACTION,
    PatchPlan,
    choose_level,
    plan_patches,
    render_patches,
)
from hestdata.errors import InputError
from hestdata.metadata import QC, ImageInfo, SampleMetadata, now_iso
from hestdata.model import Sample
from hestdata.units import DEFAULT_PATCH, PatchGeometry

THUMBNAIL_MAX_PX = 2048
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_META_FIELDS = {"cohort", "patient", "species", "organ", "disease_state", "oncotree_code", "preservation", "panel",
                "magnification", "license", "citation", "source_url", "synthetic", "provenance"}


def _counts_matrix(X: Any) -> tuple[sp.csr_matrix, bool]:
    """CSR counts; integer-valued data stored as int32 (int64 if needed), anything else kept as float."""
    X = sp.csr_matrix(X)
    data = X.data
    if np.issubdtype(data.dtype, np.integer):
        integer = True
    else:
        integer = bool(np.all(np.isfinite(data)) and np.all(np.mod(data, 1) == 0))
    if integer:
        hi = int(data.max()) if data.size else 0
        X = X.astype(np.int32 if hi < 2**31 else np.int64)
    return X, integer


def _spots_frame(sample: Sample, x_um: np.ndarray, y_um: np.ndarray, index: Any) -> Any:
    import geopandas as gpd
    import shapely

    d = float(sample.spot_diameter_um or 0.0)
    if sample.spot_shape == "square" and d > 0:
        geom = shapely.box(x_um - d / 2, y_um - d / 2, x_um + d / 2, y_um + d / 2)
        return gpd.GeoDataFrame(geometry=geom, index=index)
    gdf = gpd.GeoDataFrame(geometry=shapely.points(x_um, y_um), index=index)
    gdf["radius"] = d / 2 if d > 0 else 1.0
    return gdf


def convert(sample: Sample, root: str | Path, *, patches: Sequence[str | PatchGeometry] = (DEFAULT_PATCH,),
            overwrite: bool = False, min_tissue_fraction: float = DEFAULT_MIN_TISSUE_FRACTION,
            max_upsampling: float = DEFAULT_MAX_UPSAMPLING, jpeg_quality: int = DEFAULT_JPEG_QUALITY,
            metadata: dict[str, Any] | None = None, progress: bool = False,
            shard_patches: int | None = None, publish_root: bool = True, input_sha256: str | None = None) -> Path:
    """Write ``sample`` to ``root/samples/<id>.zarr`` and publish it in the catalog; return the sample path.

    ``patches`` lists patch geometries (``"224px_0.5um"``); an image too coarse for one is an error naming the
    best available µm/px. ``metadata`` sets descriptive fields (organ, patient, species, licence, …).
    ``shard_patches`` sets how many patches share one shard file (default 1,000). ``publish_root=False`` leaves
    the catalog and manifest alone (a registration publishes all its samples once at the end).
    """
    import geopandas as gpd
    import pandas as pd

    from hestdata.curation.genes import unify_genes
    from hestdata.curation.pixel_size import resolve_pixel_size
    from hestdata.curation.pyramid import iter_pyramid, pyramid_shapes
    from hestdata.curation.tissue import mask_to_polygons, segment_tissue
    from hestdata.store import layout as L
    from hestdata.store.catalog import publish
    from hestdata.store.sample import SampleWriter

    sid = sample.sample_id
    where = sample.source_files[0] if sample.source_files else sid
    if not _ID_RE.match(sid):
        raise InputError(where, f"sample id {sid!r} is invalid", "use letters, digits, '.', '_' and '-' (max 128)")
    extra = {**sample.metadata.get("descriptive", {}), **(metadata or {})}  # the source's, then the caller's
    unknown = set(extra) - _META_FIELDS
    if unknown:
        raise InputError(None, f"unknown metadata field(s) {sorted(unknown)}; allowed: {sorted(_META_FIELDS)}")
    geometries = [PatchGeometry.parse(p) for p in patches]
    if len({g.name for g in geometries}) != len(geometries):
        raise InputError(None, "the same patch geometry was requested twice")
    if not 0 <= min_tissue_fraction <= 1:
        raise InputError(None, f"min_tissue_fraction must be in [0, 1], got {min_tissue_fraction}")
    if L.sample_path(root, sid).exists() and not overwrite:
        from hestdata.errors import StoreError

        raise StoreError(f"{L.sample_path(root, sid)}: sample already exists (pass overwrite=True / --overwrite)")
    warnings = list(sample.warnings)

    adata = sample.expression
    if adata.n_obs == 0:
        raise InputError(where, "no spots with counts")
    ps, ps_warn = resolve_pixel_size(sample.pixel_size, sample.technology, adata.obs, str(where),
                                     sample.inter_spot_distance_um)
    warnings += ps_warn

    var = adata.var
    species = extra.pop("species", None) or sample.species_hint
    new_var, gene_qc, species = unify_genes(var, species, where)
    X, integer = _counts_matrix(adata.X)
    if not integer:
        warnings.append(f"{where}: expression values are not integer counts (stored as given)")

    import anndata as ad

    obs = adata.obs.copy()
    x_um = obs["pxl_col_in_fullres"].to_numpy(np.float64) * ps.value
    y_um = obs["pxl_row_in_fullres"].to_numpy(np.float64) * ps.value
    obs["x_um"], obs["y_um"] = x_um, y_um
    obs["in_tissue"] = pd.to_numeric(obs["in_tissue"], errors="coerce").fillna(0).astype(np.int8)
    for c in ("array_row", "array_col"):
        obs[c] = pd.to_numeric(obs[c], errors="coerce").fillna(-1).astype(np.int32)
    obs["patient"] = str(extra.get("patient") or "")
    table = ad.AnnData(X=X, obs=obs, var=new_var)

    # -- checks that need no pixels come first: nothing is written for an impossible request --------------
    img = sample.image
    shapes: list[tuple[int, int]] = []
    image_ps = 0.0
    patch_levels: list[int] = []
    if img is not None:
        image_ps = ps.value / img.scale_to_fullres
        shapes = pyramid_shapes(img.height_px, img.width_px)
        patch_levels = [0 if g.name in sample.precomputed_patches else
                        choose_level(g, image_ps, len(shapes), where=str(img.source_path),
                                     max_upsampling=max_upsampling) for g in geometries]
    elif geometries:
        raise InputError(where, "cannot make patches: the sample has no usable image",
                         "pass --image, or --no-patches to convert expression and spots only")
    t_idx = next((i for i, s in enumerate(shapes) if max(s) <= THUMBNAIL_MAX_PX), len(shapes) - 1)

    with SampleWriter(root, sid, overwrite=overwrite) as w:
        plans: list[PatchPlan] = []
        tissue_fraction = None
        image_info = None
        kept: dict[int, np.ndarray] = {}
        if img is not None:
            keep = ({t_idx} | set(patch_levels)) - {0}
            kept = {k: np.empty(shapes[k] + img.array.shape[2:], dtype=img.array.dtype) for k in keep}
            kept[0] = img.array

            def strips() -> Any:
                for k, r0, strip in iter_pyramid(img.array, len(shapes)):
                    if k in keep:
                        kept[k][r0:r0 + len(strip)] = strip
                    yield k, r0, strip

            w.write_image(shapes, img.array.shape[2], img.array.dtype, image_ps, strips())
            tm = segment_tissue(kept[t_idx], image_ps * 2 ** t_idx)
            tissue_fraction = round(tm.fraction, 4)
            if tm.fraction == 0:
                warnings.append(f"{img.source_path}: no tissue found by Otsu segmentation")
            polys = mask_to_polygons(tm)
            if polys:
                w.write_shapes(L.SHAPES_TISSUE, gpd.GeoDataFrame(geometry=polys))
            centres = np.column_stack([x_um, y_um])
            for g, lvl in zip(geometries, patch_levels, strict=True):
                if g.name in sample.precomputed_patches:
                    plans.append(_imported_plan(g, sample, np.column_stack([x_um, y_um]), jpeg_quality))
                    continue
                plan = plan_patches(g, centres, lvl, shapes[lvl], image_ps * 2 ** lvl, tm,
                                    in_tissue=obs["in_tissue"].to_numpy() > 0,
                                    min_tissue_fraction=min_tissue_fraction, jpeg_quality=jpeg_quality)
                if plan.n_in_tissue_below_threshold:
                    warnings.append(f"{g.name}: {plan.n_in_tissue_below_threshold} spot(s) marked in tissue by the "
                                    f"source have an Otsu tissue fraction < {min_tissue_fraction:g}; patched anyway")
                plans.append(plan)
            image_info = ImageInfo(source_path=str(img.source_path), kind=img.kind, pixel_size_um=image_ps,
                                   width_px=img.width_px, height_px=img.height_px, n_levels=len(shapes))
        w.write_shapes(L.SHAPES_SPOTS, _spots_frame(sample, x_um, y_um, table.obs_names))
        w.write_table(table)
        for plan in plans:
            n = len(plan.obs_rows)
            shard = int(shard_patches or L.DEFAULT_SHARD_PATCHES)
            if plan.geometry.name in sample.precomputed_patches:
                imgs = sample.precomputed_patches[plan.geometry.name][0]
                batches = ((a, np.ascontiguousarray(imgs[a:a + shard])) for a in range(0, n, shard))
            else:
                batches = render_patches(plan, kept[plan.level], batch_size=shard)
            if progress:
                batches = _progress(batches, n, f"{sid} {plan.geometry.name}")
            w.write_patches(plan.geometry.name, n, plan.geometry.patch_size_px, batches, plan.obs_rows,
                            plan.centres_um, {"pixel_size_um": plan.geometry.pixel_size_um,
                                              "source_level": plan.level}, jpeg_quality, shard_patches=shard)
        kept.clear()
        qc = QC(n_obs=int(table.n_obs), n_obs_in_tissue=int((obs["in_tissue"] > 0).sum()), n_genes=int(table.n_vars),
                counts_integer=integer, n_positions_without_counts=sample.n_positions_without_counts,
                tissue_fraction=tissue_fraction, genes=gene_qc, patches={p.geometry.name: p.qc for p in plans},
                warnings=warnings)
        meta = SampleMetadata(
            id=sid, technology=sample.technology, species=species, pixel_size_um=ps, image=image_info, qc=qc,
            spot_diameter_um=sample.spot_diameter_um, inter_spot_distance_um=sample.inter_spot_distance_um,
            hestdata_version=__version__, created_at=now_iso(), input_sha256=input_sha256, **extra,
        )
        path = w.commit(meta)
    if publish_root:
        publish(root, [sid])
    return path


def _imported_plan(g: PatchGeometry, sample: Sample, centres_um: np.ndarray, jpeg_quality: int) -> PatchPlan:
    """A plan for patches supplied by the source (checked for shape and row range)."""
    from hestdata.metadata import PatchQC

    imgs, rows = sample.precomputed_patches[g.name]
    rows = np.asarray(rows, dtype=np.int64)
    p = g.patch_size_px
    where = sample.source_files[0] if sample.source_files else sample.sample_id
    if imgs.ndim != 4 or imgs.shape[1:] != (p, p, 3) or imgs.dtype != np.uint8 or len(imgs) != len(rows):
        raise InputError(where, f"imported patches for {g.name} have shape {imgs.shape} {imgs.dtype}, "
                                f"expected (N, {p}, {p}, 3) uint8 with one row each")
    n_obs = sample.expression.n_obs
    if len(rows) and (rows.min() < 0 or rows.max() >= n_obs):
        raise InputError(where, f"imported patches for {g.name} point outside the expression table")
    qc = PatchQC(n_patches=len(rows), n_skipped_off_image=0, n_skipped_low_tissue=0, n_partial_outside_image=0,
                 min_tissue_fraction=0.0, source_pixel_size_um=g.pixel_size_um, jpeg_quality=jpeg_quality)
    return PatchPlan(g, rows, centres_um[rows], 0, g.pixel_size_um, centres_um[rows], 0.0, qc)


def _progress(batches: Any, total: int, label: str) -> Any:
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        for start, batch in batches:
            yield start, batch
            bar.advance(task, len(batch))
