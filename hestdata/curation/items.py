"""Patches of an image collection's items: a tile, or a cell's box with context, fitted to ``<px>px`` (no pixel size
needed) or cut at ``<px>px_<um>um`` around the item's centre (a declared pixel size).

The region is a square in the image's continuous pixel frame (pixel ``i`` covers ``[i, i + 1)``):

- fit, tile: the whole image (a non-square one centred in a square, the rest zero-filled);
- fit, cell: side = the box's longer side x (1 + ``context``), centred on the box;
- physical: side = ``px x um / pixel_size_um`` source pixels, centred on the tile or box centre.

Resampling is Lanczos over the exact fractional region (PIL reduces first when shrinking, so there is no
aliasing); what lies outside the image is zero-filled and the item counted as partial. A source JPEG that is the
patch already (a whole tile, ``px`` square, baseline, 8-bit RGB) is returned as its own bytes, not re-encoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hestdata.errors import InputError


@dataclass(frozen=True)
class ItemRegion:
    """The square a patch covers, in source pixels, and whether it reaches past the image."""

    x0: float
    y0: float
    side: float
    partial: bool


def item_region(width_px: int, height_px: int, box: tuple[float, float, float, float] | None, patch_size_px: int,
                um_per_px: float | None, pixel_size_um: float | None, context: float) -> ItemRegion:
    """The square region of one item (module docstring); ``um_per_px`` None means fit."""
    if box is None:
        cx, cy = width_px / 2, height_px / 2
        fit_side = float(max(width_px, height_px))
    else:
        x0, y0, x1, y1 = box
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        fit_side = max(x1 - x0, y1 - y0) * (1 + context)
    if um_per_px is None:
        side = fit_side
    else:
        if pixel_size_um is None:
            raise ValueError("a physical geometry needs the pixel size")
        side = patch_size_px * um_per_px / pixel_size_um
    if not side > 0:
        raise ValueError(f"an item's region has no size (box {box}); a centre alone needs a µm geometry")
    x0, y0 = cx - side / 2, cy - side / 2
    partial = x0 < -1e-9 or y0 < -1e-9 or x0 + side > width_px + 1e-9 or y0 + side > height_px + 1e-9
    return ItemRegion(x0, y0, side, partial)


def load_rgb(path: Path) -> np.ndarray:
    """The image as (H, W, 3) uint8 in its stored pixel order (grey, palette, 16-bit and alpha images converted;
    alpha dropped)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                a = np.asarray(im, dtype=np.float64)
                a = np.clip(a / max(1.0, a.max()) * 255.0, 0, 255).astype(np.uint8)
                return np.repeat(a[:, :, None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"cannot decode the image ({exc})") from None


def render_region(rgb: np.ndarray, r: ItemRegion, patch_size_px: int) -> np.ndarray:
    """The region resampled to ``patch_size_px`` square (Lanczos), zero outside the image."""
    from PIL import Image

    h, w = rgb.shape[:2]
    ix0, iy0 = math.floor(r.x0) - 3, math.floor(r.y0) - 3  # a margin for the filter's support
    ix1, iy1 = math.ceil(r.x0 + r.side) + 3, math.ceil(r.y0 + r.side) + 3
    if not r.partial:  # inside the image: its own pixels around the region (PIL clamps at the image's edge)
        ix0, iy0, ix1, iy1 = max(ix0, 0), max(iy0, 0), min(ix1, w), min(iy1, h)
        canvas = rgb[iy0:iy1, ix0:ix1]
    else:
        canvas = np.zeros((iy1 - iy0, ix1 - ix0, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(ix0, 0), max(iy0, 0), min(ix1, w), min(iy1, h)
        if sx1 > sx0 and sy1 > sy0:
            canvas[sy0 - iy0:sy1 - iy0, sx0 - ix0:sx1 - ix0] = rgb[sy0:sy1, sx0:sx1]
    im = Image.fromarray(np.ascontiguousarray(canvas))
    box = (r.x0 - ix0, r.y0 - iy0, r.x0 - ix0 + r.side, r.y0 - iy0 + r.side)
    return np.asarray(im.resize((patch_size_px, patch_size_px), Image.Resampling.LANCZOS, box=box))
