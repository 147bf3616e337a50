"""Cell-centred crops from a segmentation made by another tool (QuPath, HoVer-Net, CellViT… — see
:mod:`hestdata.curation.segmentation`), for any sample with an H&E: DinoBloom-style single-cell images.

Writes ``tables/segmented_cells`` (one row per cell: id, ``x_um``, ``y_um``, label if any; it annotates the outlines),
``shapes/segmented_cell_outlines`` (outlines, or points with a radius) and, per geometry (``cell_patches``, e.g. ``96px_0.25um``), the patch array
``cells-<geometry>`` whose ``obs_index`` points into that table. Crops are cut like spot patches (Lanczos over the
exact box, from the stored pyramid level they need, band by band on threads); cells whose crop misses the image
are skipped and those overlapping its edge zero-filled, both counted in the QC.
"""

from __future__ import annotations

from typing import Any

from hestdata.convert import stages
from hestdata.errors import InputError
from hestdata.metadata import PatchQC
from hestdata.units import PatchGeometry

TABLE = "segmented_cells"
SHAPES = "segmented_cell_outlines"  # spatialdata names are unique across element types
DEFAULT_CELL_PATCH = "64px_0.5um"


def write_cell_crops(w: Any, req: stages.Request, s: Any, fullres_ps: float, image_ps: float,
                     level_shapes: list[tuple[int, int]], geometries: list[str], jpeg_quality: int,
                     max_upsampling: float, workers: int | None) -> dict[str, PatchQC]:
    """The segmentation's table, shapes and crop arrays (nothing when the sample has no ``cells`` input)."""
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    import shapely

    from hestdata.curation.levels import choose_level
    from hestdata.curation.patches import plan_patches, render_patches
    from hestdata.curation.segmentation import read_segmentation

    path = s.slide_inputs.get("cells")
    if path is None:
        return {}
    if not level_shapes:
        raise InputError(path, "cell crops need an H&E image, and this sample has none")
    seg = read_segmentation(path)
    centres = seg.centres_um(fullres_ps)
    obs = pd.DataFrame({"x_um": centres[:, 0], "y_um": centres[:, 1]}, index=pd.Index(seg.cell_ids, name="cell_id"))
    if seg.labels is not None:
        obs["label"] = pd.Categorical(seg.labels)
    w.write_table(ad.AnnData(obs=obs), region=SHAPES, name=TABLE)  # annotates the outlines (spatial queries)
    outlines = seg.outlines_um(fullres_ps)
    if outlines is not None and any(g.geom_type == "Polygon" for g in outlines):
        shapes = gpd.GeoDataFrame(geometry=outlines, index=obs.index)
    else:
        shapes = gpd.GeoDataFrame(geometry=shapely.points(centres[:, 0], centres[:, 1]), index=obs.index)
        shapes["radius"] = 5.0
    w.write_shapes(SHAPES, shapes)
    qc: dict[str, PatchQC] = {}
    for name in geometries or [DEFAULT_CELL_PATCH]:
        g = PatchGeometry.parse(name)
        lvl = choose_level(g, image_ps, len(level_shapes), where=str(path), max_upsampling=max_upsampling)
        plan = plan_patches(g, centres, lvl, level_shapes[lvl], image_ps * 2 ** lvl, None, min_tissue_fraction=0.0,
                            jpeg_quality=jpeg_quality)
        arr = f"cells-{g.name}"
        w.write_patches(arr, len(plan.obs_rows), g.patch_size_px,
                        render_patches(plan, stages.level_raster(w, lvl), batch_size=256, workers=workers),
                        plan.obs_rows, plan.centres_um, {"pixel_size_um": g.pixel_size_um, "source_level": lvl,
                                                         "segmentation": str(path)},
                        jpeg_quality, table=TABLE, workers=workers)
        qc[arr] = plan.qc
        if plan.qc.n_skipped_off_image:
            req.warnings.append(f"{path}: {plan.qc.n_skipped_off_image} cell(s) lie off the image (no crop)")
    return qc
