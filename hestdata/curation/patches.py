"""Aligned patch extraction: a patch of ``patch_size_px`` at ``pixel_size_um`` centred on each spot.

The source window (``patch_size_px · target / source`` pixels) is cut from the finest pyramid level that is
not finer than needed (so large downsampling starts from a pre-reduced level) and resampled with Lanczos over
the exact, sub-pixel box — anti-aliased when reducing. Parts outside the image are zero-filled (and counted);
spots whose window misses the image entirely, or whose tissue fraction is under the threshold, are skipped
and counted. Planning is cheap and happens first, so the number of patches is known before any is rendered.
Patches are stored in scan order (rows of windows top to bottom, left to right in a row) — ``obs_rows`` maps
each to its table row — so that rendering reads every part of the image once, band by band.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hestdata.curation.bands import scan_order
from hestdata.curation.levels import DEFAULT_MAX_UPSAMPLING, choose_level  # noqa: F401  (re-exported)
from hestdata.curation.tissue import TissueMask
from hestdata.metadata import PatchQC
from hestdata.raster import Raster
from hestdata.units import PatchGeometry

DEFAULT_MIN_TISSUE_FRACTION = 0.15
DEFAULT_JPEG_QUALITY = 90


@dataclass
class PatchPlan:
    """Which spots get a patch, and where the windows lie on the chosen pyramid level."""

    geometry: PatchGeometry
    obs_rows: np.ndarray  # int64 rows of the expression table, one per patch
    centres_um: np.ndarray  # (n, 2) x, y in µm
    level: int
    level_pixel_size_um: float
    centres_level_px: np.ndarray  # (n, 2) continuous x, y on that level
    window_level_px: float
    qc: PatchQC
    n_in_tissue_below_threshold: int = 0


def plan_patches(geometry: PatchGeometry, centres_um: np.ndarray, level: int, level_shape: tuple[int, int],
                 level_pixel_size_um: float, tissue: TissueMask | None, *, in_tissue: np.ndarray | None = None,
                 min_tissue_fraction: float = DEFAULT_MIN_TISSUE_FRACTION,
                 jpeg_quality: int = DEFAULT_JPEG_QUALITY) -> PatchPlan:
    """Decide which spots get a patch on the given pyramid level, counting every skip.

    Spots the source marks as under tissue (``in_tissue``: Space Ranger's call, the ST annotators'
    selection — made at full resolution) are always patched; the Otsu tissue-fraction threshold only filters
    the others. ``plan.n_in_tissue_below_threshold`` counts marked spots Otsu disagrees with (for QC).
    """
    target = geometry.pixel_size_um
    lps = level_pixel_size_um
    h, w = level_shape
    window = geometry.patch_size_px * target / lps
    c_level = centres_um / lps
    half = window / 2
    x0, x1 = c_level[:, 0] - half, c_level[:, 0] + half
    y0, y1 = c_level[:, 1] - half, c_level[:, 1] + half
    off = (x1 <= 0) | (y1 <= 0) | (x0 >= w) | (y0 >= h)
    partial = ~off & ((x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h))
    half_um = geometry.field_of_view_um / 2
    if tissue is not None and min_tissue_fraction > 0:
        frac = tissue.box_fraction(centres_um[:, 0] - half_um, centres_um[:, 1] - half_um,
                                   centres_um[:, 0] + half_um, centres_um[:, 1] + half_um)
        below = ~off & (frac < min_tissue_fraction)
    else:
        below = np.zeros(len(centres_um), dtype=bool)
    marked = np.zeros(len(centres_um), dtype=bool) if in_tissue is None else np.asarray(in_tissue, dtype=bool)
    low = below & ~marked
    keep = ~off & ~low
    rows = np.flatnonzero(keep).astype(np.int64)
    rows = rows[scan_order(c_level[rows], window)]  # band by band: each image region is read once
    qc = PatchQC(n_patches=int(keep.sum()), n_skipped_off_image=int(off.sum()), n_skipped_low_tissue=int(low.sum()),
                 n_partial_outside_image=int((partial & keep).sum()), min_tissue_fraction=min_tissue_fraction,
                 source_pixel_size_um=lps, jpeg_quality=jpeg_quality)
    return PatchPlan(geometry, rows, centres_um[rows], level, lps, c_level[rows], window, qc,
                     n_in_tissue_below_threshold=int((below & marked).sum()))


def window_boxes(centres_px: np.ndarray, window_px: float, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Integer read boxes (x0, y0, x1, y1) around each centre — the window plus a Lanczos margin — and the exact
    sub-pixel window inside each box (left, top, right, bottom), for :func:`resample`."""
    margin = int(math.ceil(3 * max(1.0, window_px / size_px))) + 2
    c = np.asarray(centres_px, dtype=np.float64).reshape(-1, 2)
    lo, hi = c - window_px / 2, c + window_px / 2
    a = np.floor(lo).astype(np.int64) - margin
    b = np.ceil(hi).astype(np.int64) + margin
    boxes = np.column_stack([a[:, 0], a[:, 1], b[:, 0], b[:, 1]])
    exact = np.column_stack([lo[:, 0] - a[:, 0], lo[:, 1] - a[:, 1], hi[:, 0] - a[:, 0], hi[:, 1] - a[:, 1]])
    return boxes, exact


def resample(crop: np.ndarray, exact_box: tuple[float, float, float, float], size_px: int) -> np.ndarray:
    """Lanczos resample of the sub-pixel ``exact_box`` of ``crop`` to (size_px, size_px, 3) uint8 (anti-aliased
    when reducing)."""
    from PIL import Image

    box = tuple(float(v) for v in exact_box)
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((size_px, size_px), Image.Resampling.LANCZOS,
                                                                          box=box))


def render_patch(level_img: np.ndarray, cx: float, cy: float, window: float, size_px: int) -> np.ndarray:
    """One (size_px, size_px, 3) uint8 patch: Lanczos resample of the exact box centred on (cx, cy)."""
    from hestdata.raster import ArrayRaster

    boxes, exact = window_boxes(np.array([[cx, cy]]), window, size_px)
    x0, y0, x1, y1 = (int(v) for v in boxes[0])
    return resample(ArrayRaster(level_img).window(y0, y1, x0, x1), tuple(exact[0]), size_px)


def render_patches(plan: PatchPlan, level: Raster | np.ndarray, batch_size: int, workers: int | None = None
                   ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, batch)`` with ``batch`` (b, H, W, 3) uint8, in plan order, rendered band by band from the
    plan's pyramid level (:mod:`hestdata.curation.bands`) on ``workers`` threads."""
    from hestdata.curation.bands import render_bands
    from hestdata.raster import ArrayRaster

    raster = level if isinstance(level, Raster) else ArrayRaster(level)
    p = plan.geometry.patch_size_px
    boxes, exact = window_boxes(plan.centres_level_px, plan.window_level_px, p)
    return render_bands(raster, boxes, lambda crop, i: resample(crop, tuple(exact[i]), p), (p, p, 3),
                        batch_size, workers)


def affine_boxes(level_from_um: np.ndarray, centres_um: np.ndarray, geometry: PatchGeometry
                 ) -> tuple[np.ndarray, np.ndarray]:
    """For patches axis-aligned in µm sampled from an image related to µm by an affine (``level_from_um``: 3x3,
    µm (x, y, 1) → image pixel): integer read boxes (x0, y0, x1, y1) covering each patch's footprint (+3 px for
    bicubic) and, per patch, the 2x3 output-pixel → box-pixel map PIL's affine transform takes."""
    p, t = geometry.patch_size_px, geometry.pixel_size_um
    c = np.asarray(centres_um, dtype=np.float64).reshape(-1, 2)
    lin = level_from_um[:2, :2] * t  # output pixel -> image pixel, linear part
    corners = lin @ np.array([[0, p, 0, p], [0, 0, p, p]], dtype=np.float64)  # (2, 4), relative to the origin
    origin = (c - p / 2 * t) @ level_from_um[:2, :2].T + level_from_um[:2, 2]  # image px of output (0, 0)
    lo = np.floor(origin + corners.min(axis=1)).astype(np.int64) - 3
    hi = np.ceil(origin + corners.max(axis=1)).astype(np.int64) + 3
    boxes = np.column_stack([lo[:, 0], lo[:, 1], hi[:, 0], hi[:, 1]])
    maps = np.empty((len(c), 6))
    maps[:, 0], maps[:, 1], maps[:, 2] = lin[0, 0], lin[0, 1], origin[:, 0] - lo[:, 0]
    maps[:, 3], maps[:, 4], maps[:, 5] = lin[1, 0], lin[1, 1], origin[:, 1] - lo[:, 1]
    return boxes, maps


def affine_resample(crop: np.ndarray, out_to_crop: np.ndarray, size_px: int) -> np.ndarray:
    """Bicubic sample of ``crop`` on the output grid mapped by ``out_to_crop`` (2x3, output px → crop px)."""
    from PIL import Image

    data = tuple(float(v) for v in out_to_crop)
    out = Image.fromarray(np.ascontiguousarray(crop)).transform((size_px, size_px), Image.Transform.AFFINE, data,
                                                                 resample=Image.Resampling.BICUBIC)
    return np.asarray(out)


def render_affine_patch(level_img: np.ndarray, level_from_um: np.ndarray, centre_um: tuple[float, float],
                        geometry: PatchGeometry) -> np.ndarray:
    """A patch whose pixel grid is axis-aligned in µm, sampled from an image related to µm by an affine
    (``level_from_um``: 3x3, µm (x, y, 1) -> image pixel): bicubic, zero outside the image. Used when the image
    is registered with rotation/shear (Xenium H&E); choose a level no finer than needed beforehand."""
    from hestdata.raster import ArrayRaster

    boxes, maps = affine_boxes(level_from_um, np.array([centre_um]), geometry)
    x0, y0, x1, y1 = (int(v) for v in boxes[0])
    return affine_resample(ArrayRaster(level_img).window(y0, y1, x0, x1), maps[0], geometry.patch_size_px)
