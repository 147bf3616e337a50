"""Attribution maps as figures: a diverging colour map centred on zero (red raises the head's output, blue lowers
it), a colour bar that says how the values were scaled, the patch beside its map, and a slide mosaic in µm with a
scale bar where every patch shares one scale (so patches can be compared)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from hestdata.plot.style import pyplot, save, scale_bar

CMAP = "RdBu_r"


def _scale(maps: np.ndarray) -> float:
    """The 99th percentile of |value| (1 where the maps are all zero): values beyond it saturate."""
    return float(np.percentile(np.abs(maps), 99)) or 1.0


def patch_figure(patch: np.ndarray, amap: np.ndarray, out: str | os.PathLike[str], title: str,
                 method: str) -> Path:
    """The patch, and its map over a grey copy of it, scaled by this patch's own 99th percentile of |value|."""
    from matplotlib.colors import Normalize

    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.6, 4.2))
    a.imshow(patch)
    a.set_title("patch")
    grey = patch.mean(axis=2)
    b.imshow(grey, cmap="gray", vmin=0, vmax=255)
    s = _scale(amap)
    im = b.imshow(amap / s, cmap=CMAP, norm=Normalize(-1, 1), alpha=0.65)
    b.set_title(f"{method}")
    for ax in (a, b):
        ax.set_axis_off()
    fig.colorbar(im, ax=b, fraction=0.046, pad=0.03,
                 label=f"attribution / {s:.3g} (this patch's 99th pct of |value|)")
    fig.suptitle(title)
    return save(fig, out)


def mosaic_figure(patches: np.ndarray, maps: np.ndarray, centres_um: np.ndarray, um_per_px: float,
                  out: str | os.PathLike[str], title: str, method: str, max_side_px: int = 96) -> Path:
    """Each patch's map at its place on the slide (µm axes, scale bar), all on one shared scale (the 99th
    percentile of |value| over every patch shown), over grey copies of the patches."""
    from matplotlib.colors import Normalize
    from PIL import Image

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 8))
    p = patches.shape[1]
    side_um = p * um_per_px
    s = _scale(maps)
    step = max(1, int(np.ceil(p / max_side_px)))  # thumbnails keep a many-patch mosaic light
    im = None
    for img, m, (cx, cy) in zip(patches, maps, centres_um, strict=True):
        ext = (cx - side_um / 2, cx + side_um / 2, cy + side_um / 2, cy - side_um / 2)
        grey = np.asarray(Image.fromarray(img).convert("L"))[::step, ::step]
        ax.imshow(grey, cmap="gray", vmin=0, vmax=255, extent=ext)
        im = ax.imshow(m[::step, ::step] / s, cmap=CMAP, norm=Normalize(-1, 1), alpha=0.65, extent=ext)
    lo, hi = centres_um.min(0) - side_um, centres_um.max(0) + side_um
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(hi[1], lo[1])
    ax.set_aspect("equal")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    scale_bar(ax, float(hi[0] - lo[0]))
    if im is not None:
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, shrink=0.7,
                     label=f"{method} / {s:.3g} (99th pct of |value| over the {len(patches)} patches: shared scale)")
    ax.set_title(title)
    return save(fig, out)
