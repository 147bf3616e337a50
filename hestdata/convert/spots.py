"""Spot and bin samples (Visium, Visium HD, legacy ST, AnnData, HEST-1k): table, spots, H&E pyramid, tissue,
spot-centred patch arrays.

Every check that needs no pixels runs before anything is written, so an impossible request leaves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.convert import stages
from hestdata.convert.cellcrops import write_cell_crops
from hestdata.convert.profiles import alterations_table, profile_table, write_slide_tables
from hestdata.curation.counts import check_counts, check_unique_ids
from hestdata.errors import InputError
from hestdata.metadata import QC, ImageInfo, PatchQC
from hestdata.model import SpotSample
from hestdata.options import SpotOptions
from hestdata.units import PatchGeometry

THUMBNAIL_MAX_PX = 2048
RENDER_BATCH = 256  # patches handed to the writer at a time (it regroups them into whole shards)


@dataclass
class SpotTable:
    """The curated expression table and what curation learned on the way."""

    table: Any  # AnnData
    centres_um: np.ndarray  # (n, 2)
    gene_qc: Any
    species: str
    integer: bool


def curate_table(req: stages.Request, s: SpotSample, pixel_size_um: float) -> SpotTable:
    """Unified genes, counts as CSR, spot centres in µm, typed obs columns."""
    import anndata as ad
    import pandas as pd

    check_unique_ids(s.expression.obs_names, req.where, "spot id")
    X, integer = check_counts(s.expression.X, req.where)
    new_var, gene_qc, species = stages.unify_genes(req, s.expression.var, s.species_hint)
    if not integer:
        req.warnings.append(f"{req.where}: expression values are not integer counts (stored as given)")
    obs = s.expression.obs.copy()
    obs["x_um"] = obs["pxl_col_in_fullres"].to_numpy(np.float64) * pixel_size_um
    obs["y_um"] = obs["pxl_row_in_fullres"].to_numpy(np.float64) * pixel_size_um
    obs["in_tissue"] = pd.to_numeric(obs["in_tissue"], errors="coerce").fillna(0).astype(np.int8)
    for c in ("array_row", "array_col"):
        obs[c] = pd.to_numeric(obs[c], errors="coerce").fillna(-1).astype(np.int32)
    obs["patient"] = str(req.fields.get("patient") or "")
    table = ad.AnnData(X=X, obs=obs, var=new_var)
    return SpotTable(table, obs[["x_um", "y_um"]].to_numpy(np.float64), gene_qc, species, integer)


def spots_frame(s: SpotSample, centres_um: np.ndarray, index: Any) -> Any:
    """``shapes/spots``: circles (radius in µm) or squares (Visium HD bins)."""
    import geopandas as gpd
    import shapely

    x_um, y_um = centres_um[:, 0], centres_um[:, 1]
    d = float(s.spot_diameter_um or 0.0)
    if s.spot_shape == "square" and d > 0:
        geom = shapely.box(x_um - d / 2, y_um - d / 2, x_um + d / 2, y_um + d / 2)
        return gpd.GeoDataFrame(geometry=geom, index=index)
    gdf = gpd.GeoDataFrame(geometry=shapely.points(x_um, y_um), index=index)
    gdf["radius"] = d / 2 if d > 0 else 1.0
    return gdf


def patch_levels(req: stages.Request, s: SpotSample, geometries: list[PatchGeometry], image_ps: float,
                 n_levels: int, o: SpotOptions) -> list[int]:
    """The pyramid level each geometry is cut from; an error before any write if the image is too coarse."""
    from hestdata.curation.levels import choose_level

    if s.image is None:
        if geometries:
            raise InputError(req.where, "cannot make patches: the sample has no usable image",
                             "pass --image, or --no-patches to convert expression and spots only")
        return []
    return [0 if g.name in s.precomputed_patches else
            choose_level(g, image_ps, n_levels, where=str(s.image.source_path), max_upsampling=o.max_upsampling)
            for g in geometries]


def plan(req: stages.Request, s: SpotSample, g: PatchGeometry, level: int, level_shape: tuple[int, int],
         level_ps: float, tissue: Any, st: SpotTable, o: SpotOptions) -> Any:
    """Which spots get a patch of geometry ``g`` (imported patches are checked instead)."""
    from hestdata.curation.patches import plan_patches

    if g.name in s.precomputed_patches:
        return imported_plan(g, s, st.centres_um, o.jpeg_quality)
    p = plan_patches(g, st.centres_um, level, level_shape, level_ps, tissue,
                     in_tissue=st.table.obs["in_tissue"].to_numpy() > 0,
                     min_tissue_fraction=o.min_tissue_fraction, jpeg_quality=o.jpeg_quality)
    if p.n_in_tissue_below_threshold:
        req.warnings.append(f"{g.name}: {p.n_in_tissue_below_threshold} spot(s) marked in tissue by the source have "
                            f"an Otsu tissue fraction < {o.min_tissue_fraction:g}; patched anyway")
    return p


def imported_plan(g: PatchGeometry, s: SpotSample, centres_um: np.ndarray, jpeg_quality: int) -> Any:
    """A plan for patches supplied by the source (checked for shape and row range)."""
    from hestdata.curation.patches import PatchPlan

    imgs, rows = s.precomputed_patches[g.name]
    rows = np.asarray(rows, dtype=np.int64)
    p = g.patch_size_px
    if imgs.ndim != 4 or imgs.shape[1:] != (p, p, 3) or imgs.dtype != np.uint8 or len(imgs) != len(rows):
        raise InputError(s.where, f"imported patches for {g.name} have shape {imgs.shape} {imgs.dtype}, "
                                  f"expected (N, {p}, {p}, 3) uint8 with one row each")
    n_obs = s.expression.n_obs
    if len(rows) and (rows.min() < 0 or rows.max() >= n_obs):
        raise InputError(s.where, f"imported patches for {g.name} point outside the expression table")
    qc = PatchQC(n_patches=len(rows), n_skipped_off_image=0, n_skipped_low_tissue=0, n_partial_outside_image=0,
                 min_tissue_fraction=0.0, source_pixel_size_um=g.pixel_size_um, jpeg_quality=jpeg_quality)
    return PatchPlan(g, rows, centres_um[rows], 0, g.pixel_size_um, centres_um[rows], 0.0, qc)


def write_patch_arrays(w: Any, req: stages.Request, s: SpotSample, plans: list[Any], o: SpotOptions) -> None:
    """Render (or take the imported) patches of every plan — band by band from the pyramid level just written,
    on ``o.workers`` threads — and write them as sharded JPEG arrays."""
    from hestdata.curation.patches import render_patches
    from hestdata.store import layout as L

    shard = int(o.shard_patches or L.DEFAULT_SHARD_PATCHES)
    for p in plans:
        n = len(p.obs_rows)
        if p.geometry.name in s.precomputed_patches:
            imgs = s.precomputed_patches[p.geometry.name][0]
            batches = ((a, np.ascontiguousarray(imgs[a:a + shard])) for a in range(0, n, shard))
        else:
            batches = render_patches(p, stages.level_raster(w, p.level), batch_size=RENDER_BATCH, workers=o.workers)
        w.write_patches(p.geometry.name, n, p.geometry.patch_size_px, batches, p.obs_rows, p.centres_um,
                        {"pixel_size_um": p.geometry.pixel_size_um, "source_level": p.level}, o.jpeg_quality,
                        shard_patches=shard, workers=o.workers)


def spots_off_image(s: SpotSample) -> np.ndarray:
    """Which spots' centres lie outside the image (full-resolution frame)."""
    from hestdata.curation.agreement import off_image

    img = s.image
    obs = s.expression.obs
    centres = obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    return off_image(centres, img.width_px / img.scale_to_fullres, img.height_px / img.scale_to_fullres)


def check_agreement(req: stages.Request, s: SpotSample, st: SpotTable, tissue: Any, o: SpotOptions) -> Any:
    """Stop (or, on request, record) a sample whose spots do not agree with its image."""
    from hestdata.curation.agreement import LIKELY_CAUSES, agreement, describe

    a = agreement(st.centres_um, st.table.obs["in_tissue"].to_numpy() > 0, spots_off_image(s), tissue)
    if a.mismatch:
        if not o.allow_image_mismatch:
            raise InputError(s.image.source_path, f"the spots do not agree with this image: {describe(a)}",
                             f"likely causes: {LIKELY_CAUSES}")
        a.accepted_anyway = True
        req.warnings.append(f"{s.image.source_path}: converted despite an image-spot mismatch: {describe(a)}")
    return a


def write_image(w: Any, req: stages.Request, s: SpotSample, image_ps: float, levels: list[int],
                geometries: list[PatchGeometry], st: SpotTable, o: SpotOptions
                ) -> tuple[list[Any], float | None, ImageInfo | None, Any]:
    """Pyramid (read strip by strip), tissue, image-spot agreement and patch plans of the sample's H&E (nothing
    when it has none)."""
    img = s.image
    if img is None:
        return [], None, None, None
    shapes, t_idx, thumb = stages.write_raster_pyramid(w, img.raster, image_ps, THUMBNAIL_MAX_PX, workers=o.workers)
    tm = stages.write_tissue(w, thumb, image_ps * 2 ** t_idx)
    if tm.fraction == 0:
        req.warnings.append(f"{img.source_path}: no tissue found by Otsu segmentation")
    agreement = check_agreement(req, s, st, tm, o)
    plans = [plan(req, s, g, lvl, shapes[lvl], image_ps * 2 ** lvl, tm, st, o)
             for g, lvl in zip(geometries, levels, strict=True)]
    info = ImageInfo(source_path=str(img.source_path), kind=img.kind, pixel_size_um=image_ps,
                     width_px=img.width_px, height_px=img.height_px, n_levels=len(shapes))
    return plans, round(tm.fraction, 4), info, agreement


def convert_spots(req: stages.Request, s: SpotSample, o: SpotOptions, publish_root: bool) -> Path:
    """The spot variant's pipeline: checks, then one temporary sample folder renamed into place."""
    from hestdata.curation.pyramid import pyramid_shapes
    from hestdata.store import layout as L
    from hestdata.store.sample import SampleWriter

    if s.expression.n_obs == 0:
        raise InputError(req.where, "no spots with counts")
    from hestdata.curation.pixel_size import SpotGrid

    grid = SpotGrid(s.grid_layout, s.inter_spot_distance_um) if s.inter_spot_distance_um else None
    ps = stages.resolve_pixel_size(req, s.expression.obs, grid)
    geometries = [PatchGeometry.parse(g) for g in o.patches]
    image_ps = ps.value / s.image.scale_to_fullres if s.image is not None else 0.0
    n_levels = len(pyramid_shapes(s.image.height_px, s.image.width_px)) if s.image is not None else 0
    levels = patch_levels(req, s, geometries, image_ps, n_levels, o)  # a too-coarse image fails before any work
    st = curate_table(req, s, ps.value)
    if s.image is not None and not o.allow_image_mismatch:  # the cheap half of the agreement check, before writing
        from hestdata.curation.agreement import LIKELY_CAUSES, MAX_OFF_IMAGE_FRACTION

        marked = st.table.obs["in_tissue"].to_numpy() > 0
        marked = marked if marked.any() else np.ones(len(marked), bool)
        n_off = int(spots_off_image(s)[marked].sum())
        if n_off > MAX_OFF_IMAGE_FRACTION * marked.sum():
            raise InputError(s.image.source_path, f"the spots do not agree with this image: {n_off} of "
                                                  f"{int(marked.sum())} spots marked in tissue lie off the image",
                             f"likely causes: {LIKELY_CAUSES}")
    label_qc = None
    if s.slide_inputs.get("labels") is not None:
        from hestdata.curation.labels import attach_labels
        from hestdata.metadata import LabelQC

        st.table.obs, got = attach_labels(st.table.obs, s.slide_inputs["labels"], pixel_size_um=ps.value)
        label_qc = LabelQC(**got)
    prof, prof_info = profile_table(req, s, st.table, st.species, o.pseudobulk)
    alt, alterations = alterations_table(s)
    with SampleWriter(req.root, s.sample_id, overwrite=req.overwrite) as w:
        plans, tissue_fraction, info, agreement = write_image(w, req, s, image_ps, levels, geometries, st, o)
        w.write_shapes(L.SHAPES_SPOTS, spots_frame(s, st.centres_um, st.table.obs_names))
        w.write_table(st.table)
        write_slide_tables(w, prof, alt)
        write_patch_arrays(w, req, s, plans, o)
        level_shapes = pyramid_shapes(info.height_px, info.width_px) if info is not None else []
        cell_qc = write_cell_crops(w, req, s, ps.value, image_ps, level_shapes, o.cell_patches, o.jpeg_quality,
                                   o.max_upsampling, o.workers)
        obs = st.table.obs
        qc = QC(n_obs=int(st.table.n_obs), n_obs_in_tissue=int((obs["in_tissue"] > 0).sum()),
                n_genes=int(st.table.n_vars), counts_integer=st.integer,
                n_positions_without_counts=s.n_positions_without_counts, tissue_fraction=tissue_fraction,
                genes=st.gene_qc, patches={**{p.geometry.name: p.qc for p in plans}, **cell_qc}, warnings=req.warnings,
                image_spot_agreement=agreement, labels=label_qc)
        meta = stages.sample_metadata(req, species=st.species, pixel_size_um=ps, image=info, qc=qc,
                                      spot_diameter_um=s.spot_diameter_um,
                                      inter_spot_distance_um=s.inter_spot_distance_um, slide_profile=prof_info,
                                      alterations=alterations)
        return stages.commit_and_publish(w, req, meta, publish_root)
