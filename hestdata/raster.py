"""Lazy RGB rasters: an image is read region by region, never whole unless its format gives no choice.

A :class:`Raster` answers ``read(y0, y1, x0, x1)`` with a (rows, cols, 3) uint8 array and ``overview(max_px)`` with
a small downsampled copy (for blank checks and previews). Implementations:

* ``TiffRaster`` and ``JpegRaster`` (:mod:`hestdata.sources.images`) — files, read lazily.
* :class:`ArrayRaster` — an array already in memory (PNG, AnnData images, tests).
* :class:`ZarrRaster` — a (c, y, x) zarr array, e.g. a level of the pyramid a conversion has just written.

Pixel types are normalised the same way everywhere (:func:`to_rgb`): grey → RGB, RGBA → RGB, uint16 → high byte,
floats in [0, 1] → × 255, channels-first → channels-last.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError


def channel_axis(shape: tuple[int, ...]) -> int | None:
    """Where the colour axis of an image of ``shape`` is: -1 (y, x, c), 0 (c, y, x) or None (grey (y, x))."""
    if len(shape) == 2:
        return None
    if len(shape) == 3 and shape[0] in (3, 4) and shape[2] not in (3, 4):
        return 0
    return -1


def to_rgb(arr: np.ndarray, path: str | Path, float_scale: float | None = None) -> np.ndarray:
    """Normalise (y, x[, c]) or (c, y, x) arrays of any common dtype to (y, x, 3) uint8.

    ``float_scale`` fixes the factor for float images (so that regions of one image agree); by default it is
    decided from ``arr`` itself (255 when its maximum is ≤ 1)."""
    if arr.ndim == 3 and channel_axis(arr.shape) == 0:
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(path, f"unsupported image shape {arr.shape}; expected (y, x), (y, x, 3) or (y, x, 4)")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        return np.ascontiguousarray((arr >> 8).astype(np.uint8))
    if arr.dtype == bool:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.floating):
        if float_scale is None:
            hi = float(np.nanmax(arr)) if arr.size else 1.0
            float_scale = 255.0 if hi <= 1.0 else 1.0
        return np.ascontiguousarray(np.clip(np.nan_to_num(arr) * float_scale, 0, 255).astype(np.uint8))
    raise InputError(path, f"unsupported pixel type {arr.dtype}")


class Raster:
    """An RGB uint8 image of ``height_px`` × ``width_px`` read by region (see the module docstring)."""

    source_path: Path
    height_px: int
    width_px: int

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` (inside the image) as (rows, cols, 3) uint8."""
        raise NotImplementedError

    def window(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """As :meth:`read`, for any box: the part outside the image is zero."""
        out = np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), dtype=np.uint8)
        sy0, sx0, sy1, sx1 = max(y0, 0), max(x0, 0), min(y1, self.height_px), min(x1, self.width_px)
        if sy1 > sy0 and sx1 > sx0:
            out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = self.read(sy0, sy1, sx0, sx1)
        return out

    def overview(self, max_px: int = 1024) -> np.ndarray:
        """A downsampled copy whose longer side is about ``max_px`` (at least as fine); reads the image in
        strips when the format offers nothing cheaper."""
        step = max(1, int(max(self.height_px, self.width_px) // max_px))
        rows = max(step, (64 << 20) // max(1, self.width_px * 3) // step * step)
        parts = [self.read(a, min(self.height_px, a + rows), 0, self.width_px)[::step, ::step]
                 for a in range(0, self.height_px, rows)]
        return np.concatenate(parts) if parts else np.zeros((0, 0, 3), np.uint8)

    def probe(self, grid: int = 8, size_px: int = 32) -> np.ndarray:
        """A cheap sample of the image for blank checks: ``grid`` × ``grid`` small windows spread over it (each
        touches one tile or strip), side by side."""
        ys = np.linspace(0, max(0, self.height_px - size_px), grid).astype(int)
        xs = np.linspace(0, max(0, self.width_px - size_px), grid).astype(int)
        parts = [self.read(y, min(self.height_px, y + size_px), x, min(self.width_px, x + size_px))
                 for y in ys for x in xs]
        return np.concatenate([p.reshape(-1, 3) for p in parts])[None]

    def release(self) -> None:
        """Drop any decoded copy held for speed (the raster stays usable)."""


class ArrayRaster(Raster):
    """An image already in memory."""

    def __init__(self, array: np.ndarray, source_path: str | Path = "<array>") -> None:
        self.source_path = Path(source_path)
        self.array = to_rgb(np.asarray(array), self.source_path)
        self.height_px, self.width_px = int(self.array.shape[0]), int(self.array.shape[1])

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.array[y0:y1, x0:x1]

    def overview(self, max_px: int = 1024) -> np.ndarray:
        step = max(1, int(max(self.height_px, self.width_px) // max_px))
        return self.array[::step, ::step]

    def probe(self, grid: int = 8, size_px: int = 32) -> np.ndarray:
        step = max(1, int(np.sqrt(self.height_px * self.width_px / 250_000)))
        return self.array[::step, ::step]


class ZarrRaster(Raster):
    """A (c, y, x) uint8 zarr array (a level of a hestdata pyramid) read as (y, x, 3)."""

    def __init__(self, array: Any, source_path: str | Path = "<zarr>") -> None:
        self.source_path = Path(source_path)
        self.array = array
        _, self.height_px, self.width_px = (int(v) for v in array.shape)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.ascontiguousarray(np.moveaxis(self.array[:, y0:y1, x0:x1], 0, -1))
