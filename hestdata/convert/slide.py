"""Whole slides: the pyramid strip by strip (level 0 is never held whole), tissue polygons from the thumbnail
level, and tissue tiles read region by region."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.convert import stages
from hestdata.convert.cellcrops import write_cell_crops
from hestdata.convert.profiles import alterations_table, profile_table, write_slide_tables
from hestdata.io import progress
from hestdata.metadata import QC, ImageInfo, PatchQC
from hestdata.model import SlideSample
from hestdata.options import SlideOptions
from hestdata.raster import Raster
from hestdata.units import PatchGeometry

STRIP_ROWS = 256
THUMBNAIL_MAX_PX = 1024


class SlideRows(Raster):
    """A slide's level 0 as a raster (OpenSlide or tifffile regions), so slides share the raster pyramid writer."""

    def __init__(self, slide: Any) -> None:
        self.slide, self.source_path = slide, slide.path
        self.height_px, self.width_px = slide.height, slide.width

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.slide.read_region(0, x0, y0, x1 - x0, y1 - y0)


def write_slide_pyramid(w: Any, slide: Any, pixel_size_um: float, workers: int | None = None
                        ) -> tuple[list[tuple[int, int]], int, np.ndarray]:
    """Level 0 read in strips of ``STRIP_ROWS`` (slides are wide) and cascaded down; returns the level shapes,
    the thumbnail level and its pixels."""
    return stages.write_raster_pyramid(w, SlideRows(slide), pixel_size_um, THUMBNAIL_MAX_PX, strip_rows=STRIP_ROWS,
                                       workers=workers)


def write_tiles(w: Any, slide: Any, pixel_size_um: float, g: PatchGeometry, tissue: Any, o: SlideOptions) -> PatchQC:
    """Tiles of ``g`` over the tissue (background and blur rejected, counted), as one patch array."""
    from hestdata.curation.levels import finest_level_for
    from hestdata.curation.tiling import plan_tiles, render_tiles

    plan = plan_tiles(slide.width * pixel_size_um, slide.height * pixel_size_um, g, tissue, o.min_tissue_fraction)
    pw = w.patch_writer(g.name, len(plan.origins_um), g.patch_size_px, o.jpeg_quality, workers=o.workers)
    origins, n_bg = [], 0
    tiles = render_tiles(slide.read_region, pixel_size_um, slide.level_downsamples, plan, 256, workers=o.workers)
    for batch, kept, bg in progress.track(tiles, f"{w.sample_id} {g.name} tiles", len(plan.origins_um),
                                          weight=lambda t: len(t[1]) + t[2]):
        pw.append(batch)  # streamed: only one batch of tiles is ever held
        origins.append(kept)
        n_bg += bg
    org = np.concatenate(origins) if origins else np.zeros((0, 2))
    n = pw.finish(np.full(len(org), -1), org + g.field_of_view_um / 2,
                  {"pixel_size_um": g.pixel_size_um, "tile_size_um": g.field_of_view_um,
                   "coords_um_top_left": "centers_um - tile_size_um / 2"}, table="")
    level = finest_level_for(pixel_size_um, g.pixel_size_um, slide.level_downsamples)
    return PatchQC(n_patches=n, n_skipped_off_image=0, n_skipped_low_tissue=plan.n_low_tissue,
                   n_partial_outside_image=0, n_skipped_background=n_bg, min_tissue_fraction=o.min_tissue_fraction,
                   source_pixel_size_um=pixel_size_um * slide.level_downsamples[level], jpeg_quality=o.jpeg_quality)


def convert_slide(req: stages.Request, s: SlideSample, o: SlideOptions, publish_root: bool) -> Path:
    """The whole-slide variant's pipeline."""
    from hestdata.store.sample import SampleWriter

    ps = stages.resolve_pixel_size(req)
    slide = s.slide
    geoms = [PatchGeometry.parse(g) for g in o.patches]
    prof, prof_info = profile_table(req, s, None, req.fields.get("species"), False)
    alt, alterations = alterations_table(s)
    with SampleWriter(req.root, s.sample_id, overwrite=req.overwrite) as w:
        shapes, t_idx, thumb = write_slide_pyramid(w, slide, ps.value, o.workers)
        write_slide_tables(w, prof, alt)
        tm = stages.write_tissue(w, thumb, ps.value * 2 ** t_idx)
        pqc = {g.name: write_tiles(w, slide, ps.value, g, tm, o) for g in geoms}
        pqc.update(write_cell_crops(w, req, s, ps.value, ps.value, shapes, o.cell_patches, o.jpeg_quality, 1.5,
                                    o.workers))
        qc = QC(n_obs=0, n_genes=0, counts_integer=True, tissue_fraction=round(tm.fraction, 4), patches=pqc,
                warnings=req.warnings)
        meta = stages.sample_metadata(
            req, pixel_size_um=ps, qc=qc, magnification=req.fields.pop("magnification", None) or s.magnification,
            slide_profile=prof_info, alterations=alterations,
            image=ImageInfo(source_path=str(slide.path), kind="fullres", pixel_size_um=ps.value,
                            width_px=slide.width, height_px=slide.height, n_levels=len(shapes)))
        return stages.commit_and_publish(w, req, meta, publish_root)
