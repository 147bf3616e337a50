"""Image pyramid by 2x2 box averaging, streamed as row strips so no level is ever held whole unless asked.

``iter_pyramid`` walks level 0 in strips of ``strip_rows`` rows and cascades each strip down every level
(strip heights stay even for ``log2(strip_rows)`` levels); deeper levels, which are tiny, are computed from the
last cascaded level held in memory. Memory beyond level 0 is a few strips plus whatever levels the caller keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

STRIP_ROWS = 512


def pyramid_shapes(height: int, width: int, min_size_px: int = 256) -> list[tuple[int, int]]:
    """``[(h0, w0), (h0 // 2, w0 // 2), …]`` until the next level's shorter side would fall below ``min_size_px``."""
    shapes = [(height, width)]
    while min(shapes[-1]) // 2 >= min_size_px:
        h, w = shapes[-1]
        shapes.append((h // 2, w // 2))
    return shapes


def downsample2x(img: np.ndarray) -> np.ndarray:
    """Half-size image (floor of odd sizes); each pixel the rounded mean of a 2x2 block."""
    h, w = img.shape[0] // 2, img.shape[1] // 2
    if img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and h and w:
        from PIL import Image  # C box filter; as fast as numpy's strided sums here, and simpler

        return np.asarray(Image.fromarray(np.ascontiguousarray(img[: 2 * h, : 2 * w])).reduce(2))
    if np.issubdtype(img.dtype, np.floating):
        block = img[: 2 * h, : 2 * w].astype(np.float64)
        s = block[0::2, 0::2] + block[1::2, 0::2] + block[0::2, 1::2] + block[1::2, 1::2]
        return (s / 4).astype(img.dtype)
    block = img[: 2 * h, : 2 * w].astype(np.uint64)
    s = block[0::2, 0::2] + block[1::2, 0::2] + block[0::2, 1::2] + block[1::2, 1::2]
    return ((s + 2) >> 2).astype(img.dtype)


PARALLEL_MIN_WIDTH = 4096  # narrower strips are reduced on the calling thread


def downsample2x_parallel(img: np.ndarray, pool: Any, k: int) -> np.ndarray:
    """:func:`downsample2x` of a wide strip, ``k`` column blocks (even-aligned) reduced on ``pool``'s threads
    (PIL's reduce releases the GIL); the same pixels as one call."""
    w2 = img.shape[1] // 2
    if k < 2 or img.shape[1] < PARALLEL_MIN_WIDTH:
        return downsample2x(img)
    cuts = [2 * ((w2 * i) // k) for i in range(k + 1)]
    parts = list(pool.map(lambda ab: downsample2x(img[:, ab[0]:ab[1]]), zip(cuts[:-1], cuts[1:], strict=True)))
    return np.concatenate(parts, axis=1)


def iter_pyramid(level0: np.ndarray, n_levels: int, strip_rows: int = STRIP_ROWS) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(level, first_row, strip)`` covering every row of levels ``0 .. n_levels-1`` exactly once."""
    return iter_pyramid_from(lambda a, b: level0[a:b], level0.shape[0], n_levels, strip_rows)


def read_ahead(read_rows: Callable[[int, int], np.ndarray], height: int, strip_rows: int
               ) -> Iterator[tuple[int, np.ndarray]]:
    """``(first_row, strip)`` of level 0, the next strip read on a background thread while the caller works on
    the current one (decoding overlaps downsampling and compression)."""
    from concurrent.futures import ThreadPoolExecutor

    starts = list(range(0, height, strip_rows))
    with ThreadPoolExecutor(1, thread_name_prefix="hestdata-strip") as ex:
        nxt = ex.submit(read_rows, 0, min(height, strip_rows)) if starts else None
        for i, r0 in enumerate(starts):
            strip = nxt.result()  # type: ignore[union-attr]
            if i + 1 < len(starts):
                a = starts[i + 1]
                nxt = ex.submit(read_rows, a, min(height, a + strip_rows))
            yield r0, strip


def iter_pyramid_from(read_rows: Callable[[int, int], np.ndarray], height: int, n_levels: int,
                      strip_rows: int = STRIP_ROWS) -> Iterator[tuple[int, int, np.ndarray]]:
    """As :func:`iter_pyramid`, with level 0 read strip by strip by ``read_rows(first, stop)`` (one strip ahead,
    on a background thread) — an image never needs to be decoded whole."""
    from concurrent.futures import ThreadPoolExecutor

    from hestdata.curation.bands import default_workers

    depth = min(n_levels, int(np.log2(strip_rows)) + 1)  # levels reachable by cascading strips
    last_rows: list[np.ndarray] = []
    k_par = default_workers()
    with ThreadPoolExecutor(k_par, thread_name_prefix="hestdata-reduce") as pool:
        for r0, strip in read_ahead(read_rows, height, strip_rows):
            row = r0
            for k in range(depth):
                yield k, row, strip
                if k == depth - 1:
                    if depth < n_levels:
                        last_rows.append(strip.copy())
                    break
                strip, row = downsample2x_parallel(strip, pool, k_par), row // 2
    if depth < n_levels:
        cur = np.concatenate(last_rows)
        for k in range(depth, n_levels):
            cur = downsample2x(cur)
            yield k, 0, cur
