"""Slide tiling: a grid of patches at a target geometry over the tissue, background and blur rejected.

Tiles are squares of ``patch_size_px · pixel_size_um`` µm on a grid anchored at the slide's origin. A tile is kept
when its Otsu tissue fraction (thumbnail mask) reaches ``min_tissue_fraction``; a kept tile is then rejected as
background when it is bright and flat (mean grey > ``max_brightness`` or edge density < ``min_edge_density`` —
STAMP's rule of thumb). Everything skipped is counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from hestdata.curation.levels import finest_level_for
from hestdata.curation.tissue import TissueMask
from hestdata.units import PatchGeometry


@dataclass
class TilePlan:
    geometry: PatchGeometry
    origins_um: np.ndarray  # (n, 2) top-left x, y in µm
    n_low_tissue: int


def plan_tiles(width_um: float, height_um: float, geometry: PatchGeometry, tissue: TissueMask | None,
               min_tissue_fraction: float = 0.5) -> TilePlan:
    s = geometry.field_of_view_um
    nx, ny = int(width_um // s), int(height_um // s)
    ys, xs = np.mgrid[0:ny, 0:nx]
    x0, y0 = xs.ravel() * s, ys.ravel() * s
    if tissue is not None and min_tissue_fraction > 0:
        frac = tissue.box_fraction(x0, y0, x0 + s, y0 + s)
        keep = frac >= min_tissue_fraction
    else:
        keep = np.ones(len(x0), dtype=bool)
    return TilePlan(geometry, np.column_stack([x0[keep], y0[keep]]), int((~keep).sum()))


def edge_density(tile: np.ndarray) -> float:
    """Fraction of pixels with a strong grey-level gradient (a cheap stand-in for a Canny edge ratio)."""
    g = tile.astype(np.float32).mean(axis=2)
    gx = np.abs(np.diff(g, axis=1))[:-1, :]
    gy = np.abs(np.diff(g, axis=0))[:, :-1]
    return float(((gx + gy) > 20).mean())


def render_tiles(read_region, level0_um_per_px: float, level_downsamples: list[float], plan: TilePlan,
                 batch_size: int, max_brightness: float = 220.0, min_edge_density: float = 0.02
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield ``(batch (b, P, P, 3), kept origins (b, 2) µm, n_background)``; tiles are read from the coarsest level
    not coarser than the target, then resized with Lanczos over the exact box."""
    from PIL import Image

    g = plan.geometry
    p = g.patch_size_px
    level = finest_level_for(level0_um_per_px, g.pixel_size_um, level_downsamples)
    ds = level_downsamples[level]
    side0 = g.field_of_view_um / level0_um_per_px  # tile side in level-0 px
    side_l = side0 / ds
    buf, kept, n_bg = [], [], 0
    for ox, oy in plan.origins_um:
        x0, y0 = ox / level0_um_per_px, oy / level0_um_per_px
        xi, yi = int(np.floor(x0)), int(np.floor(y0))
        w = int(np.ceil((x0 - xi) / ds + side_l)) + 1
        region = read_region(level, xi, yi, w, w)
        box = ((x0 - xi) / ds, (y0 - yi) / ds, (x0 - xi) / ds + side_l, (y0 - yi) / ds + side_l)
        tile = np.asarray(Image.fromarray(region).resize((p, p), Image.Resampling.LANCZOS, box=box))
        if tile.mean() > max_brightness or edge_density(tile) < min_edge_density:
            n_bg += 1
            continue
        buf.append(tile)
        kept.append((ox, oy))
        if len(buf) == batch_size:
            yield np.stack(buf), np.asarray(kept), n_bg
            buf, kept, n_bg = [], [], 0
    if buf or n_bg:
        yield (np.stack(buf) if buf else np.zeros((0, p, p, 3), np.uint8)), np.asarray(kept).reshape(-1, 2), n_bg
