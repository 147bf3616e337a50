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
                 batch_size: int, max_brightness: float = 220.0, min_edge_density: float = 0.02,
                 workers: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Yield ``(batch (b, P, P, 3), kept origins (b, 2) µm, n_background)`` in plan order, ``batch_size`` tiles
    considered at a time on ``workers`` threads (OpenSlide and PIL release the GIL); tiles are read from the
    coarsest level not coarser than the target, then resized with Lanczos over the exact box."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from hestdata.curation.bands import default_workers

    g = plan.geometry
    p = g.patch_size_px
    level = finest_level_for(level0_um_per_px, g.pixel_size_um, level_downsamples)
    ds = level_downsamples[level]
    side_l = g.field_of_view_um / level0_um_per_px / ds  # tile side in level px

    def tile(origin: np.ndarray) -> np.ndarray | None:
        x0, y0 = origin[0] / level0_um_per_px, origin[1] / level0_um_per_px
        xi, yi = int(np.floor(x0)), int(np.floor(y0))
        w = int(np.ceil((x0 - xi) / ds + side_l)) + 1
        region = read_region(level, xi, yi, w, w)
        box = ((x0 - xi) / ds, (y0 - yi) / ds, (x0 - xi) / ds + side_l, (y0 - yi) / ds + side_l)
        t = np.asarray(Image.fromarray(region).resize((p, p), Image.Resampling.LANCZOS, box=box))
        return None if t.mean() > max_brightness or edge_density(t) < min_edge_density else t

    origins = plan.origins_um
    with ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="hestdata-tile") as pool:
        for a in range(0, len(origins), batch_size):
            tiles = list(pool.map(tile, origins[a:a + batch_size]))
            keep = [i for i, t in enumerate(tiles) if t is not None]
            batch = np.stack([tiles[i] for i in keep]) if keep else np.zeros((0, p, p, 3), np.uint8)
            yield batch, origins[a:a + batch_size][keep].reshape(-1, 2), len(tiles) - len(keep)
