"""Per-patch scores (attention, predictions) over a slide: each patch's square coloured by its score on the H&E,
with a colour bar of the scores as they are (not rescaled), µm axes, a scale bar and a title."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.store import layout as L


def render_heatmap(sample: Any, patch: str, scores: np.ndarray, png: str | Path, max_px: int = 1024,
                   alpha: float = 0.5, what: str = "score", title: str | None = None) -> Path:
    """Draw ``scores`` (one per patch of ``patch``) over the image of ``sample`` (a
    :class:`hestdata.store.root.StoredSample` or its path) into ``png``."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    from hestdata.plot.sample import draw_image
    from hestdata.plot.style import pyplot, save
    from hestdata.store.root import StoredSample

    sample = StoredSample.of(sample)
    g = sample.patch_group(patch)
    centres = g[L.PATCH_CENTERS][:]
    if g.attrs.get("pixel_size_um") is None:
        raise ValueError(f"{sample.path}: patch array {patch} has no pixel size (an image collection): nothing to "
                         "place on an image")
    side = int(g.attrs["patch_size_px"]) * float(g.attrs["pixel_size_um"])
    s = np.asarray(scores, dtype=np.float64)
    if len(s) != len(centres):
        raise ValueError(f"{len(s)} scores for {len(centres)} patches")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 8))
    draw_image(ax, sample, L.IMAGE_HE, max_px)
    squares = PatchCollection([Rectangle((cx - side / 2, cy - side / 2), side, side) for cx, cy in centres],
                              cmap="magma", alpha=alpha, edgecolor="none")
    squares.set_array(s)
    ax.add_collection(squares)
    fig.colorbar(squares, ax=ax, fraction=0.046, pad=0.03, shrink=0.8, label=what)
    ax.set_title(title or f"{sample.id}: {what} of {len(s)} patches ({patch})")
    return save(fig, png)
