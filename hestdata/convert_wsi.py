"""Write a whole-slide image sample: the pyramid strip by strip, tissue polygons, and tile patch arrays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hestdata._version import __version__
from hestdata.metadata import QC, ImageInfo, PatchQC, SampleMetadata, now_iso
from hestdata.sources.wsi import WSI
from hestdata.units import PatchGeometry

STRIP_ROWS = 256
THUMBNAIL_MAX_PX = 1024


def convert_wsi(slide: WSI, root: str | Path, sample_id: str, *, patches: Sequence[str | PatchGeometry] = (
        PatchGeometry(224, 256 / 224),), min_tissue_fraction: float = 0.5, overwrite: bool = False,
                metadata: dict[str, Any] | None = None, publish_root: bool = True,
                   input_sha256: str | None = None, jpeg_quality: int = 90) -> Path:
    """Convert without ever holding level 0 whole: level 0 is read in 256-row strips and cascaded down the
    pyramid; the tissue mask comes from the written thumbnail level; tiles are read region by region."""
    import geopandas as gpd

    from hestdata.curation.pixel_size import resolve_pixel_size
    from hestdata.curation.pyramid import iter_pyramid_from, pyramid_shapes
    from hestdata.curation.tiling import plan_tiles, render_tiles
    from hestdata.curation.tissue import mask_to_polygons, segment_tissue
    from hestdata.store import layout as L
    from hestdata.store.catalog import publish
    from hestdata.store.sample import SampleWriter

    extra = dict(metadata or {})
    ps, warns = resolve_pixel_size(slide.pixel_size, "wsi", None, str(slide.path))
    geoms = [PatchGeometry.parse(g) for g in patches]
    w0, h0 = slide.width, slide.height
    shapes = pyramid_shapes(h0, w0)
    t_idx = next((i for i, s in enumerate(shapes) if max(s) <= THUMBNAIL_MAX_PX), len(shapes) - 1)
    thumb = np.empty(shapes[t_idx] + (3,), np.uint8)

    def rows(a: int, b: int) -> np.ndarray:
        return slide.read_region(0, 0, a, w0, b - a)

    def strips() -> Any:
        for k, r0, strip in iter_pyramid_from(rows, h0, len(shapes), STRIP_ROWS):
            if k == t_idx:
                thumb[r0:r0 + len(strip)] = strip
            yield k, r0, strip

    with SampleWriter(root, sample_id, overwrite=overwrite) as w:
        w.write_image(shapes, 3, np.uint8, ps.value, strips())
        tm = segment_tissue(thumb, ps.value * 2 ** t_idx)
        polys = mask_to_polygons(tm)
        if polys:
            w.write_shapes(L.SHAPES_TISSUE, gpd.GeoDataFrame(geometry=polys))
        pqc: dict[str, PatchQC] = {}
        for g in geoms:
            plan = plan_tiles(w0 * ps.value, h0 * ps.value, g, tm, min_tissue_fraction)
            imgs, origins, n_bg = [], [], 0
            for batch, kept, bg in render_tiles(slide.read_region, ps.value, slide.level_downsamples, plan, 256):
                imgs.append(batch)
                origins.append(kept)
                n_bg += bg
            arr = np.concatenate(imgs) if imgs else np.zeros((0, g.patch_size_px, g.patch_size_px, 3), np.uint8)
            org = np.concatenate(origins) if origins else np.zeros((0, 2))
            n = len(arr)
            centres = org + g.field_of_view_um / 2
            w.write_patches(g.name, n, g.patch_size_px, [(0, arr)] if n else [], np.full(n, -1), centres,
                            {"pixel_size_um": g.pixel_size_um, "tile_size_um": g.field_of_view_um,
                             "coords_um_top_left": "centers_um - tile_size_um / 2"}, jpeg_quality, table="")
            pqc[g.name] = PatchQC(n_patches=n, n_skipped_off_image=0, n_skipped_low_tissue=plan.n_low_tissue,
                                  n_partial_outside_image=0, n_skipped_background=n_bg,
                                  min_tissue_fraction=min_tissue_fraction,
                                  source_pixel_size_um=ps.value * slide.level_downsamples[
                                      max([i for i, d in enumerate(slide.level_downsamples)
                                           if d <= g.pixel_size_um / ps.value * 1.0001] or [0])],
                                  jpeg_quality=jpeg_quality)
        qc = QC(n_obs=0, n_genes=0, counts_integer=True, tissue_fraction=round(tm.fraction, 4), patches=pqc,
                warnings=warns)
        meta = SampleMetadata(id=sample_id, technology="wsi", pixel_size_um=ps, qc=qc,
                              magnification=extra.pop("magnification", None) or slide.magnification,
                              image=ImageInfo(source_path=str(slide.path), kind="fullres", pixel_size_um=ps.value,
                                              width_px=w0, height_px=h0, n_levels=len(shapes)),
                              hestdata_version=__version__, created_at=now_iso(), input_sha256=input_sha256, **extra)
        path = w.commit(meta)
    if publish_root:
        publish(root, [sample_id])
    return path
