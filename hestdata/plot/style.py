"""What every hestdata figure shares: a non-interactive matplotlib, a µm scale bar, colour bars, and an atomic
save (a figure is written to a temporary name and renamed, so a crash never leaves half a PNG)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed); ``ml`` extra."""
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - the ml extra is missing
        from hestdata.errors import HestdataError

        raise HestdataError("figures need matplotlib: pip install 'hestdata[ml]'") from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def nice_length_um(span_um: float) -> float:
    """A round scale-bar length (1, 2 or 5 × 10^k µm) of about a fifth of ``span_um``."""
    target = max(span_um / 5.0, 1e-9)
    k = 10 ** np.floor(np.log10(target))
    return float(max(m * k for m in (1, 2, 5) if m * k <= target) if target >= k else k)


def scale_bar(ax: Any, span_um: float, *, units_per_um: float = 1.0, colour: str = "black",
              loc: str = "lower right") -> float:
    """Draw a scale bar (matplotlib's AnchoredSizeBar) on axes whose data units are ``1 / units_per_um`` µm;
    returns its length in µm."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = nice_length_um(span_um)
    label = f"{length / 1000:g} mm" if length >= 1000 else f"{length:g} µm"
    ax.add_artist(AnchoredSizeBar(ax.transData, length * units_per_um, label, loc, pad=0.4, sep=4, color=colour,
                                  frameon=True, size_vertical=length * units_per_um / 25))
    return length


def save(fig: Any, path: str | os.PathLike[str], dpi: int = 150) -> Path:
    """Write ``fig`` (format from the suffix: png, svg, pdf, jpg) through a temporary name and close it."""
    plt = pyplot()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.stem}.tmp{p.suffix}")
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)
        plt.close(fig)
    return p


def without_padding(patches: np.ndarray, dark: int = 3) -> np.ndarray:
    """Indices of patches none of whose four borders is an all-black band (the fill of a patch that reaches
    past the image's edge): a gallery of these shows no padding artefacts."""
    if len(patches) == 0:
        return np.zeros(0, dtype=np.int64)
    edges = [patches[:, 0], patches[:, -1], patches[:, :, 0], patches[:, :, -1]]
    padded = np.zeros(len(patches), dtype=bool)
    for e in edges:  # (n, P, 3): a border row or column that is black everywhere
        padded |= e.reshape(len(patches), -1).max(axis=1) <= dark
    return np.flatnonzero(~padded)


def gallery(patches: np.ndarray, cols: int, gap_px: int = 4) -> np.ndarray:
    """Patches (n, P, P, 3) tiled ``cols`` wide on white."""
    n, p = len(patches), patches.shape[1]
    rows = max(1, -(-n // cols))
    out = np.full((rows * (p + gap_px) - gap_px, cols * (p + gap_px) - gap_px, 3), 255, np.uint8)
    for i, im in enumerate(patches):
        r, c = divmod(i, cols)
        out[r * (p + gap_px): r * (p + gap_px) + p, c * (p + gap_px): c * (p + gap_px) + p] = im
    return out
