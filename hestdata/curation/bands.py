"""Patches cut band by band from a lazy raster, rendered on a thread pool, yielded in order in bounded memory.

The windows of a patch plan come in scan order (rows of windows, left to right). Consecutive windows are grouped
into *bands* whose bounding box stays under ``band_bytes``; each band is read once — one thread reads the next
band while the pool renders the current one — every window is resampled on the pool (PIL's resampling and
libjpeg-turbo release the GIL, so threads run in parallel), and finished patches are yielded in plan order as
``(start, batch)``. Alive at any time: at most ``MAX_BANDS_ALIVE`` bands and ``2 × batch_size`` patches, whatever
the size of the image.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from hestdata.raster import Raster

BAND_BYTES = 64 << 20
MAX_BANDS_ALIVE = 3


def default_workers() -> int:
    """The cores this process may use (its CPU affinity, else the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def group_boxes(boxes: np.ndarray, band_bytes: int = BAND_BYTES) -> list[tuple[int, int]]:
    """Runs ``[a, b)`` of consecutive boxes (x0, y0, x1, y1) whose union, as RGB bytes, fits in ``band_bytes``
    (a single box always forms a run, whatever its size)."""
    groups: list[tuple[int, int]] = []
    n, a = len(boxes), 0
    while a < n:
        x0, y0, x1, y1 = (int(v) for v in boxes[a])
        b = a + 1
        while b < n:
            nx0, ny0 = min(x0, int(boxes[b, 0])), min(y0, int(boxes[b, 1]))
            nx1, ny1 = max(x1, int(boxes[b, 2])), max(y1, int(boxes[b, 3]))
            if (nx1 - nx0) * (ny1 - ny0) * 3 > band_bytes:
                break
            x0, y0, x1, y1 = nx0, ny0, nx1, ny1
            b += 1
        groups.append((a, b))
        a = b
    return groups


def scan_order(centres_px: np.ndarray, row_height_px: float) -> np.ndarray:
    """Indices that visit centres (x, y) in rows of ``row_height_px``, left to right within a row."""
    if len(centres_px) == 0:
        return np.zeros(0, dtype=np.int64)
    band = np.floor(centres_px[:, 1] / max(row_height_px, 1.0))
    return np.lexsort((centres_px[:, 0], band)).astype(np.int64)


def render_bands(raster: Raster, boxes: np.ndarray, render: Callable[[np.ndarray, int], np.ndarray],
                 patch_shape: tuple[int, ...], batch_size: int, workers: int | None = None,
                 band_bytes: int = BAND_BYTES) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, batch)``: ``render(crop, i)`` for every box ``i`` (integer x0, y0, x1, y1 in raster pixels;
    parts off the raster are zero), in order, ``batch_size`` at a time."""
    n = len(boxes)
    groups = group_boxes(boxes, band_bytes)
    state = _BandState(raster, boxes, groups)
    with ThreadPoolExecutor(1, thread_name_prefix="hestdata-read") as reader, \
            ThreadPoolExecutor(workers or default_workers(), thread_name_prefix="hestdata-render") as pool:
        state.start(reader)
        futures: deque[Future[np.ndarray]] = deque()
        out = np.empty((min(batch_size, max(n, 1)), *patch_shape), dtype=np.uint8)
        filled = start = 0
        for i in range(n):
            while state.can_submit(len(futures), 2 * batch_size):
                futures.extend(pool.submit(render, crop, j) for j, crop in state.next_group(reader))
            out[filled] = futures.popleft().result()
            state.done(i)
            filled += 1
            if filled == len(out) or start + filled == n:
                yield start, out[:filled].copy()
                start, filled = start + filled, 0


class _BandState:
    """Which band is being read and which are alive (each at most ``band_bytes``, so their count bounds memory)."""

    def __init__(self, raster: Raster, boxes: np.ndarray, groups: list[tuple[int, int]]) -> None:
        self.raster, self.boxes, self.groups = raster, boxes, groups
        self.next_index = 0
        self.pending: Future[tuple[np.ndarray, int, int]] | None = None
        self.alive: deque[int] = deque()  # last index of each submitted group whose patches are not all out

    def _read(self, g: int) -> tuple[np.ndarray, int, int]:
        a, b = self.groups[g]
        bx = self.boxes[a:b]
        x0, y0, x1, y1 = int(bx[:, 0].min()), int(bx[:, 1].min()), int(bx[:, 2].max()), int(bx[:, 3].max())
        return self.raster.window(y0, y1, x0, x1), x0, y0

    def start(self, reader: ThreadPoolExecutor) -> None:
        if self.groups:
            self.pending = reader.submit(self._read, 0)

    def can_submit(self, n_futures: int, max_futures: int) -> bool:
        if self.pending is None:
            return False
        if n_futures == 0:
            return True  # never starve
        return n_futures < max_futures and len(self.alive) < MAX_BANDS_ALIVE

    def next_group(self, reader: ThreadPoolExecutor) -> Iterator[tuple[int, np.ndarray]]:
        assert self.pending is not None
        band, bx, by = self.pending.result()
        g = self.next_index
        self.next_index += 1
        self.pending = reader.submit(self._read, self.next_index) if self.next_index < len(self.groups) else None
        a, b = self.groups[g]
        self.alive.append(b - 1)
        for j in range(a, b):
            x0, y0, x1, y1 = (int(v) for v in self.boxes[j])
            yield j, band[y0 - by:y1 - by, x0 - bx:x1 - bx]

    def done(self, i: int) -> None:
        while self.alive and self.alive[0] <= i:
            self.alive.popleft()
