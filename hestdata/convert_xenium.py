"""Write a Xenium sample: cells table, transcripts, cell/nucleus polygons, DAPI image, pseudo-spot tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hestdata._version import __version__
from hestdata.errors import InputError
from hestdata.metadata import QC, ImageInfo, SampleMetadata, now_iso
from hestdata.sources.xenium import XeniumSample, check_extent


def _polygon_frame(polys: dict[str, np.ndarray], where: Path, what: str) -> Any:
    import geopandas as gpd
    import shapely

    if not polys:
        raise InputError(where, f"no {what} boundaries")
    geoms = [shapely.make_valid(shapely.Polygon(v)) if len(v) >= 3 else shapely.Polygon() for v in polys.values()]
    return gpd.GeoDataFrame(geometry=geoms, index=list(polys))


def he_to_um(xs: XeniumSample, pixel_size_um: float) -> np.ndarray:
    """3x3 affine H&E pixel -> µm (10x's alignment maps to morphology pixels: scale by the pixel size, shift by
    the image origin)."""
    assert xs.he_affine is not None
    if xs.he_affine_kind == "um":
        return xs.he_affine
    ox, oy = xs.image_origin_um
    morph_to_um = np.array([[pixel_size_um, 0, ox], [0, pixel_size_um, oy], [0, 0, 1]], dtype=np.float64)
    return morph_to_um @ xs.he_affine


def convert_xenium(xs: XeniumSample, root: str | Path, *, pseudospot_um: Sequence[float] = (55.0,),
                   grid: str = "square", min_qv: float = 20.0, overwrite: bool = False,
                   metadata: dict[str, Any] | None = None, publish_root: bool = True,
                   input_sha256: str | None = None,
                   patches: Sequence[str] = ("224px_0.5um",), jpeg_quality: int = 90) -> Path:
    """Store ``xs`` in ``root/samples/<id>.zarr`` (cell table annotating ``shapes/cells``; one
    ``expression_pseudospots_<d>um`` table annotating ``shapes/pseudospots_<d>um`` per diameter) and publish it.

    With a registered H&E, ``images/he`` is written with its affine to µm, and for each geometry in ``patches``
    two H&E patch arrays: ``cells-<geometry>`` (centred on each cell; rows of ``tables/expression``) and
    ``pseudospots_<d>um-<geometry>`` (rows of the pseudo-spot table) — the expression–morphology pairs."""
    import geopandas as gpd
    import pandas as pd
    import shapely

    from hestdata.curation.genes import unify_genes
    from hestdata.curation.pixel_size import resolve_pixel_size
    from hestdata.curation.pseudospots import make_pseudospots
    from hestdata.curation.pyramid import iter_pyramid, pyramid_shapes
    from hestdata.store import layout as L
    from hestdata.store.catalog import publish
    from hestdata.store.sample import SampleWriter

    extra = dict(metadata or {})
    ps, warns = resolve_pixel_size(xs.pixel_size, "xenium", None, str(xs.folder))
    check_extent(xs, ps.value)
    cells = xs.cells
    var, gqc, species = unify_genes(cells.var.assign(feature_type="Gene Expression"), extra.pop("species", None),
                                    xs.folder)
    import anndata as ad

    obs = cells.obs.copy()
    obs["in_tissue"] = np.int8(1)
    table = ad.AnnData(X=cells.X.astype(np.int32), obs=obs, var=var, obsm=dict(cells.obsm), uns=dict(cells.uns))
    names_orig = list(cells.var_names)
    ps_tables = []
    for d in pseudospot_um:
        spots = make_pseudospots(xs.transcripts, names_orig, d, grid, min_qv)
        obs_s = pd.DataFrame({"x_um": spots.centres_um[:, 0], "y_um": spots.centres_um[:, 1],
                              "array_row": spots.rows.astype(np.int32), "array_col": spots.cols.astype(np.int32),
                              "in_tissue": np.int8(1),
                              "n_transcripts": np.asarray(spots.counts.sum(axis=1)).ravel().astype(np.int64)},
                             index=[f"ps{d:g}_{r}_{c}" for r, c in zip(spots.rows, spots.cols, strict=True)])
        name = f"pseudospots_{d:g}um"
        ps_tables.append((name, ad.AnnData(X=spots.counts, obs=obs_s, var=var.copy()), spots))
    img = xs.image
    image_info = None
    with SampleWriter(root, xs.sample_id, overwrite=overwrite) as w:
        if img is not None:
            hwc = np.moveaxis(img, 0, -1)
            shapes = pyramid_shapes(hwc.shape[0], hwc.shape[1], min_size_px=64)
            w.write_image(shapes, hwc.shape[2], hwc.dtype, ps.value, iter_pyramid(hwc, len(shapes)), name="if",
                          channel_names=["DAPI"] * hwc.shape[2], origin_um=xs.image_origin_um)
            image_info = ImageInfo(source_path=str(xs.folder), kind="fullres", pixel_size_um=ps.value,
                                   width_px=int(hwc.shape[1]), height_px=int(hwc.shape[0]), n_levels=len(shapes))
        pqc: dict[str, Any] = {}
        if xs.he is not None:
            _write_he(w, xs, ps.value, table, ps_tables, patches, jpeg_quality, pqc)
        t = xs.transcripts
        w.write_points("transcripts", t, feature_key="gene", instance_key="cell_id")
        w.write_shapes("cells", _polygon_frame(xs.cell_polygons, xs.folder, "cell"))
        w.write_shapes("nuclei", _polygon_frame(xs.nucleus_polygons, xs.folder, "nucleus"))
        w.write_table(table, region="cells")
        for name, tab, spots in ps_tables:
            c = spots.centres_um
            if grid == "square":
                geom = shapely.box(c[:, 0] - spots.diameter_um / 2, c[:, 1] - spots.diameter_um / 2,
                                   c[:, 0] + spots.diameter_um / 2, c[:, 1] + spots.diameter_um / 2)
                frame = gpd.GeoDataFrame(geometry=geom, index=tab.obs_names)
            else:
                frame = gpd.GeoDataFrame(geometry=shapely.points(c), index=tab.obs_names)
                frame["radius"] = spots.diameter_um / 2
            w.write_shapes(name, frame)
            w.write_table(tab, region=name, name=f"{L.TABLE}_{name}")  # spatialdata names are unique across types
        qc = QC(n_obs=int(table.n_obs), n_obs_in_tissue=int(table.n_obs), n_genes=int(table.n_vars),
                counts_integer=True, genes=gqc, tables={n: int(tb.n_obs) for n, tb, _ in ps_tables}, patches=pqc,
                n_transcripts=int(len(t)), warnings=list(xs.warnings) + warns)
        panel = xs.experiment.get("panel_name") or extra.pop("panel", None)
        meta = SampleMetadata(id=xs.sample_id, technology="xenium", species=species, pixel_size_um=ps,
                              image=image_info, qc=qc, panel=panel, spot_diameter_um=None,
                              hestdata_version=__version__, created_at=now_iso(), input_sha256=input_sha256, **extra)
        path = w.commit(meta)
    if publish_root:
        publish(root, [xs.sample_id])
    return path


def _write_he(w: Any, xs: XeniumSample, pixel_size_um: float, table: Any, ps_tables: list, patches: Sequence[str],
              jpeg_quality: int, pqc: dict[str, Any]) -> None:
    """images/he (affine to µm) and the H&E patch arrays for cells and pseudo-spots."""
    from hestdata.curation.patches import render_affine_patch
    from hestdata.curation.pyramid import iter_pyramid, pyramid_shapes
    from hestdata.metadata import PatchQC
    from hestdata.store import layout as L
    from hestdata.units import PatchGeometry

    a = he_to_um(xs, pixel_size_um)
    he = xs.he.array
    he_ps = float(np.sqrt(abs(np.linalg.det(a[:2, :2]))))
    shapes = pyramid_shapes(he.shape[0], he.shape[1])
    keep = set()
    geoms = [PatchGeometry.parse(g) for g in patches]
    for g in geoms:
        lvl = 0
        for i in range(len(shapes)):
            if he_ps * 2 ** i <= g.pixel_size_um * 1.0001:
                lvl = i
        if he_ps > g.pixel_size_um * 1.5:
            raise InputError(xs.he.source_path, f"cannot make {g.name} patches: the H&E is {he_ps:.4g} µm/px")
        keep.add(lvl)
    kept = {k: np.empty(shapes[k] + (3,), np.uint8) for k in keep if k}
    kept[0] = he

    def strips() -> Any:
        for k, r0, strip in iter_pyramid(he, len(shapes)):
            if k in kept and k:
                kept[k][r0:r0 + len(strip)] = strip
            yield k, r0, strip

    w.write_image(shapes, 3, np.uint8, he_ps, strips(), name=L.IMAGE_HE, affine=a)
    sets = [("cells", table.obs[["x_um", "y_um"]].to_numpy(np.float64), L.TABLE)]
    sets += [(name, tb.obs[["x_um", "y_um"]].to_numpy(np.float64), f"{L.TABLE}_{name}") for name, tb, _ in ps_tables]
    for g in geoms:
        lvl = max(i for i in kept if he_ps * 2 ** i <= g.pixel_size_um * 1.0001) if any(
            he_ps * 2 ** i <= g.pixel_size_um * 1.0001 for i in kept) else 0
        level_from_um = np.linalg.inv(a @ np.diag([2.0 ** lvl, 2.0 ** lvl, 1.0]))
        for prefix, centres, tname in sets:
            n = len(centres)
            batch = np.stack([render_affine_patch(kept[lvl], level_from_um, (float(x), float(y)), g)
                              for x, y in centres]) if n else np.zeros((0, g.patch_size_px, g.patch_size_px, 3), np.uint8)
            name = f"{prefix}-{g.name}"
            w.write_patches(name, n, g.patch_size_px, [(0, batch)] if n else [], np.arange(n), centres,
                            {"pixel_size_um": g.pixel_size_um, "source_level": lvl}, jpeg_quality, table=tname)
            pqc[name] = PatchQC(n_patches=n, n_skipped_off_image=0, n_skipped_low_tissue=0, n_partial_outside_image=0,
                                min_tissue_fraction=0.0, source_pixel_size_um=he_ps * 2 ** lvl,
                                jpeg_quality=jpeg_quality)
