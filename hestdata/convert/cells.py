"""Cell samples (Xenium): cell table annotating ``shapes/cells``, transcripts, cell/nucleus polygons, the DAPI
image, pseudo-spot tables, and — with a registered H&E — ``images/he`` plus cell- and pseudo-spot-centred H&E
patch arrays (the expression–morphology pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.convert import stages
from hestdata.convert.profiles import alterations_table, profile_table, write_slide_tables
from hestdata.curation.counts import check_counts, check_unique_ids
from hestdata.errors import InputError
from hestdata.metadata import QC, ImageInfo, PatchQC
from hestdata.model import CellSample
from hestdata.options import CellOptions
from hestdata.units import PatchGeometry


def polygon_frame(polys: dict[str, np.ndarray], where: Path, what: str) -> Any:
    import geopandas as gpd
    import shapely

    if not polys:
        raise InputError(where, f"no {what} boundaries")
    geoms = [shapely.make_valid(shapely.Polygon(v)) if len(v) >= 3 else shapely.Polygon() for v in polys.values()]
    return gpd.GeoDataFrame(geometry=geoms, index=list(polys))


def he_to_um(xs: CellSample, pixel_size_um: float) -> np.ndarray:
    """3x3 affine H&E pixel -> µm (10x's alignment maps to morphology pixels: scale by the pixel size, shift by
    the image origin)."""
    if xs.he_affine is None:
        raise ValueError(f"{xs.sample_id}: no H&E affine")
    if xs.he_affine_kind == "um":
        return xs.he_affine
    ox, oy = xs.image_origin_um
    morph_to_um = np.array([[pixel_size_um, 0, ox], [0, pixel_size_um, oy], [0, 0, 1]], dtype=np.float64)
    return morph_to_um @ xs.he_affine


def cell_table(req: stages.Request, xs: CellSample) -> tuple[Any, Any, str]:
    """The cell table with unified genes (controls stay in obsm), its gene QC and the species."""
    import anndata as ad

    cells = xs.cells
    check_unique_ids(cells.obs_names, req.where, "cell id")
    X, _ = check_counts(cells.X, req.where)
    var, gqc, species = stages.unify_genes(req, cells.var.assign(feature_type="Gene Expression"))
    obs = cells.obs.copy()
    obs["in_tissue"] = np.int8(1)
    table = ad.AnnData(X=X.astype(np.int32), obs=obs, var=var, obsm=dict(cells.obsm), uns=dict(cells.uns))
    return table, gqc, species


def pseudospot_tables(xs: CellSample, var: Any, o: CellOptions) -> list[tuple[str, Any, Any]]:
    """One ``pseudospots_<d>um`` table per diameter: transcripts of quality >= ``min_qv`` summed per spot."""
    import anndata as ad
    import pandas as pd

    from hestdata.curation.pseudospots import make_pseudospots

    out = []
    for d in o.pseudospot_um:
        spots = make_pseudospots(xs.transcripts, list(xs.cells.var_names), d, o.grid, o.min_qv)
        obs = pd.DataFrame({"x_um": spots.centres_um[:, 0], "y_um": spots.centres_um[:, 1],
                            "array_row": spots.rows.astype(np.int32), "array_col": spots.cols.astype(np.int32),
                            "in_tissue": np.int8(1),
                            "n_transcripts": np.asarray(spots.counts.sum(axis=1)).ravel().astype(np.int64)},
                           index=[f"ps{d:g}_{r}_{c}" for r, c in zip(spots.rows, spots.cols, strict=True)])
        out.append((f"pseudospots_{d:g}um", ad.AnnData(X=spots.counts, obs=obs, var=var.copy()), spots))
    return out


def pseudospot_frame(spots: Any, index: Any, grid: str) -> Any:
    import geopandas as gpd
    import shapely

    c, r = spots.centres_um, spots.diameter_um / 2
    if grid == "square":
        return gpd.GeoDataFrame(geometry=shapely.box(c[:, 0] - r, c[:, 1] - r, c[:, 0] + r, c[:, 1] + r), index=index)
    frame = gpd.GeoDataFrame(geometry=shapely.points(c), index=index)
    frame["radius"] = r
    return frame


def write_he(w: Any, xs: CellSample, pixel_size_um: float, sets: list[tuple[str, np.ndarray, str]],
             o: CellOptions) -> dict[str, PatchQC]:
    """``images/he`` (affine to µm, written strip by strip) and, per geometry and centre set, an H&E patch array
    rendered band by band from the pyramid level it needs (patches in scan order; ``obs_index`` maps them to
    table rows)."""
    from hestdata.curation.levels import check_resolution, finest_level_for
    from hestdata.curation.pyramid import pyramid_shapes
    from hestdata.store import layout as L

    a = he_to_um(xs, pixel_size_um)
    he = xs.he.raster
    he_ps = float(np.sqrt(abs(np.linalg.det(a[:2, :2]))))
    n_levels = len(pyramid_shapes(he.height_px, he.width_px))
    geoms = [PatchGeometry.parse(g) for g in o.patches]
    for g in geoms:
        check_resolution(g, he_ps, where=str(xs.he.source_path))
    levels = {g: finest_level_for(he_ps, g.pixel_size_um, n_levels) for g in geoms}
    stages.write_raster_pyramid(w, he, he_ps, 1024, name=L.IMAGE_HE, affine=a)
    pqc: dict[str, PatchQC] = {}
    for g, lvl in levels.items():
        level_from_um = np.linalg.inv(a @ np.diag([2.0 ** lvl, 2.0 ** lvl, 1.0]))
        for prefix, centres, tname in sets:
            name = f"{prefix}-{g.name}"
            rows, batches, n_off, n_edge = affine_patches(stages.level_raster(w, lvl), level_from_um, centres, g,
                                                          o.workers)
            w.write_patches(name, len(rows), g.patch_size_px, batches, rows, centres[rows],
                            {"pixel_size_um": g.pixel_size_um, "source_level": lvl}, o.jpeg_quality, table=tname,
                            workers=o.workers)
            pqc[name] = PatchQC(n_patches=len(rows), n_skipped_off_image=n_off, n_skipped_low_tissue=0,
                                n_partial_outside_image=n_edge, min_tissue_fraction=0.0,
                                source_pixel_size_um=he_ps * 2 ** lvl, jpeg_quality=o.jpeg_quality)
    return pqc


def affine_patches(level: Any, level_from_um: np.ndarray, centres_um: np.ndarray, g: PatchGeometry,
                   workers: int | None) -> tuple[np.ndarray, Any, int, int]:
    """Table rows in scan order, the ``(start, batch)`` stream of their patches (axis-aligned in µm), and the
    counts of cells whose patch misses the image (skipped) or overlaps its edge (zero-filled)."""
    from hestdata.curation.bands import render_bands, scan_order
    from hestdata.curation.patches import affine_boxes, affine_resample

    boxes, maps = affine_boxes(level_from_um, centres_um, g)
    h, w = level.height_px, level.width_px
    off = (boxes[:, 2] <= 0) | (boxes[:, 3] <= 0) | (boxes[:, 0] >= w) | (boxes[:, 1] >= h)
    edge = ~off & ((boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h))
    keep = np.flatnonzero(~off)
    middle = (boxes[keep, :2] + boxes[keep, 2:]) / 2
    rows = keep[scan_order(middle, float(np.median(boxes[keep, 3] - boxes[keep, 1])) if len(keep) else 1.0)]
    boxes, maps = boxes[rows], maps[rows]
    p = g.patch_size_px
    stream = render_bands(level, boxes, lambda crop, i: affine_resample(crop, maps[i], p), (p, p, 3), 256, workers)
    return rows, stream, int(off.sum()), int(edge.sum())


def write_morphology(w: Any, xs: CellSample, pixel_size_um: float) -> ImageInfo | None:
    """``images/if``: the DAPI image with its origin as a translation."""
    if xs.image is None:
        return None
    hwc = np.moveaxis(xs.image, 0, -1)
    shapes, _ = stages.write_pyramid(w, hwc, pixel_size_um, min_size_px=64, name="if",
                                     channel_names=["DAPI"] * hwc.shape[2], origin_um=xs.image_origin_um)
    return ImageInfo(source_path=str(xs.folder), kind="fullres", pixel_size_um=pixel_size_um,
                     width_px=int(hwc.shape[1]), height_px=int(hwc.shape[0]), n_levels=len(shapes))


def convert_cells(req: stages.Request, xs: CellSample, o: CellOptions, publish_root: bool) -> Path:
    """The cell variant's pipeline."""
    from hestdata.curation.agreement import check_extent
    from hestdata.store import layout as L
    from hestdata.store.sample import SampleWriter

    ps = stages.resolve_pixel_size(req)
    check_extent(xs, ps.value)
    table, gqc, species = cell_table(req, xs)
    label_qc = None
    if xs.slide_inputs.get("labels") is not None:  # per-cell labels keyed by cell id (hestdata.curation.labels)
        from hestdata.curation.labels import attach_labels
        from hestdata.metadata import LabelQC

        table.obs, got = attach_labels(table.obs, xs.slide_inputs["labels"], pixel_size_um=ps.value)
        label_qc = LabelQC(**got)
    ps_tables = pseudospot_tables(xs, table.var, o)
    prof, prof_info = profile_table(req, xs, table, species, o.pseudobulk)
    alt, alterations = alterations_table(xs)
    with SampleWriter(req.root, xs.sample_id, overwrite=req.overwrite) as w:
        write_slide_tables(w, prof, alt)
        image_info = write_morphology(w, xs, ps.value)
        pqc: dict[str, PatchQC] = {}
        if xs.he is not None:
            sets = [("cells", table.obs[["x_um", "y_um"]].to_numpy(np.float64), L.TABLE)]
            sets += [(n, tb.obs[["x_um", "y_um"]].to_numpy(np.float64), f"{L.TABLE}_{n}") for n, tb, _ in ps_tables]
            pqc = write_he(w, xs, ps.value, sets, o)
        w.write_points("transcripts", xs.transcripts, feature_key="gene", instance_key="cell_id")
        w.write_shapes("cells", polygon_frame(xs.cell_polygons, xs.folder, "cell"))
        w.write_shapes("nuclei", polygon_frame(xs.nucleus_polygons, xs.folder, "nucleus"))
        w.write_table(table, region="cells")
        for name, tab, spots in ps_tables:
            w.write_shapes(name, pseudospot_frame(spots, tab.obs_names, o.grid))
            w.write_table(tab, region=name, name=f"{L.TABLE}_{name}")  # spatialdata names are unique across types
        qc = QC(n_obs=int(table.n_obs), n_obs_in_tissue=int(table.n_obs), n_genes=int(table.n_vars),
                counts_integer=True, genes=gqc, tables={n: int(tb.n_obs) for n, tb, _ in ps_tables}, patches=pqc,
                n_transcripts=int(len(xs.transcripts)), labels=label_qc, warnings=req.warnings)
        panel = xs.experiment.get("panel_name") or req.fields.pop("panel", None)
        meta = stages.sample_metadata(req, species=species, pixel_size_um=ps, image=image_info, qc=qc, panel=panel,
                                      slide_profile=prof_info, alterations=alterations)
        return stages.commit_and_publish(w, req, meta, publish_root)
