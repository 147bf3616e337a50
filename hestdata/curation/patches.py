"""Aligned patch extraction: a patch of ``patch_size_px`` at ``pixel_size_um`` centred on each spot.

The source window (``patch_size_px · target / source`` pixels) is cut from the finest pyramid level that is
not finer than needed (so large downsampling starts from a pre-reduced level) and resampled with Lanczos over
the exact, sub-pixel box — anti-aliased when reducing. Parts outside the image are zero-filled (and counted);
spots whose window misses the image entirely, or whose tissue fraction is under the threshold, are skipped
and counted. Planning is cheap and happens first, so the number of patches is known before any is rendered.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hestdata.curation.levels import DEFAULT_MAX_UPSAMPLING, choose_level  # noqa: F401  (re-exported)
from hestdata.curation.tissue import TissueMask
from hestdata.metadata import PatchQC
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
    qc = PatchQC(n_patches=int(keep.sum()), n_skipped_off_image=int(off.sum()), n_skipped_low_tissue=int(low.sum()),
                 n_partial_outside_image=int((partial & keep).sum()), min_tissue_fraction=min_tissue_fraction,
                 source_pixel_size_um=lps, jpeg_quality=jpeg_quality)
    return PatchPlan(geometry, rows, centres_um[rows], level, lps, c_level[rows], window, qc,
                     n_in_tissue_below_threshold=int((below & marked).sum()))


def render_patch(level_img: np.ndarray, cx: float, cy: float, window: float, size_px: int) -> np.ndarray:
    """One (size_px, size_px, 3) uint8 patch: Lanczos resample of the exact box centred on (cx, cy)."""
    from PIL import Image

    h, w = level_img.shape[:2]
    margin = int(math.ceil(3 * max(1.0, window / size_px))) + 2
    xa, ya = int(math.floor(cx - window / 2)) - margin, int(math.floor(cy - window / 2)) - margin
    xb, yb = int(math.ceil(cx + window / 2)) + margin, int(math.ceil(cy + window / 2)) + margin
    crop = np.zeros((yb - ya, xb - xa, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(xa, 0), max(ya, 0), min(xb, w), min(yb, h)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - ya:sy1 - ya, sx0 - xa:sx1 - xa] = level_img[sy0:sy1, sx0:sx1]
    box = (cx - window / 2 - xa, cy - window / 2 - ya, cx + window / 2 - xa, cy + window / 2 - ya)
    out = Image.fromarray(crop).resize((size_px, size_px), Image.Resampling.LANCZOS, box=box)
    return np.asarray(out)


def render_patches(plan: PatchPlan, level_img: np.ndarray, batch_size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, batch)`` with ``batch`` (b, H, W, 3) uint8, in plan order."""
    n, p = len(plan.obs_rows), plan.geometry.patch_size_px
    for start in range(0, n, batch_size):
        stop = min(n, start + batch_size)
        batch = np.empty((stop - start, p, p, 3), dtype=np.uint8)
        for j, i in enumerate(range(start, stop)):
            cx, cy = plan.centres_level_px[i]
            batch[j] = render_patch(level_img, float(cx), float(cy), plan.window_level_px, p)
        yield start, batch


def render_affine_patch(level_img: np.ndarray, level_from_um: np.ndarray, centre_um: tuple[float, float],
                        geometry: PatchGeometry) -> np.ndarray:
    """A patch whose pixel grid is axis-aligned in µm, sampled from an image related to µm by an affine
    (``level_from_um``: 3x3, µm (x, y, 1) -> image pixel): bicubic, zero outside the image. Used when the image
    is registered with rotation/shear (Xenium H&E); choose a level no finer than needed beforehand."""
    from PIL import Image

    p, t = geometry.patch_size_px, geometry.pixel_size_um
    cx, cy = centre_um
    out_to_um = np.array([[t, 0.0, cx - p / 2 * t], [0.0, t, cy - p / 2 * t], [0.0, 0.0, 1.0]])
    b = level_from_um @ out_to_um  # output pixel -> image pixel
    corners = b @ np.array([[0, p, 0, p], [0, 0, p, p], [1, 1, 1, 1]], dtype=np.float64)
    h, w = level_img.shape[:2]
    x0, y0 = int(np.floor(corners[0].min())) - 3, int(np.floor(corners[1].min())) - 3
    x1, y1 = int(np.ceil(corners[0].max())) + 3, int(np.ceil(corners[1].max())) + 3
    crop = np.zeros((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        crop[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = level_img[sy0:sy1, sx0:sx1]
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], dtype=np.float64) @ b
    data = (shift[0, 0], shift[0, 1], shift[0, 2], shift[1, 0], shift[1, 1], shift[1, 2])
    out = Image.fromarray(crop).transform((p, p), Image.Transform.AFFINE, data, resample=Image.Resampling.BICUBIC)
    return np.asarray(out)
