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


def convert_xenium(xs: XeniumSample, root: str | Path, *, pseudospot_um: Sequence[float] = (55.0,),
                   grid: str = "square", min_qv: float = 20.0, overwrite: bool = False,
                   metadata: dict[str, Any] | None = None, publish_root: bool = True) -> Path:
    """Store ``xs`` in ``root/samples/<id>.zarr`` (cell table annotating ``shapes/cells``; one
    ``expression_pseudospots_<d>um`` table annotating ``shapes/pseudospots_<d>um`` per diameter) and publish it."""
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
    no_grid = pd.DataFrame({"pxl_col_in_fullres": [], "pxl_row_in_fullres": []})  # Xenium has no spot grid
    ps, warns = resolve_pixel_size(xs.pixel_size, "xenium", no_grid, str(xs.folder))
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
                counts_integer=True, genes=gqc, tables={n: int(tb.n_obs) for n, tb, _ in ps_tables},
                n_transcripts=int(len(t)), warnings=list(xs.warnings) + warns)
        panel = xs.experiment.get("panel_name") or extra.pop("panel", None)
        meta = SampleMetadata(id=xs.sample_id, technology="xenium", species=species, pixel_size_um=ps,
                              image=image_info, qc=qc, panel=panel, spot_diameter_um=None,
                              hestdata_version=__version__, created_at=now_iso(), **extra)
        path = w.commit(meta)
    if publish_root:
        publish(root, [xs.sample_id])
    return path
