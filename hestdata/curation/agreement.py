"""Is this the image the spots were measured on? Two checks made at conversion, with numbers.

1. **Off the image**: spots the source marks as under tissue must lie on the image; more than 20 % off it means
   a wrong image, a wrong pixel size or scale factor, or swapped x/y.
2. **On the tissue**: on the right image, spots marked under tissue sit on stained tissue almost always (her2st:
   96–100 % on the Otsu mask). Placed on an unrelated image they land on tissue about as often as the tissue
   covers the region they span. A section is a mismatch when its on-tissue fraction is not clearly better than
   that chance level (3 standard deviations of random placement) and below 80 %.
"""

from __future__ import annotations

import math

import numpy as np

from hestdata.errors import InputError
from hestdata.metadata import ImageSpotAgreement
from hestdata.model import CellSample

MAX_OFF_IMAGE_FRACTION = 0.20
MIN_ON_TISSUE_FRACTION = 0.80

LIKELY_CAUSES = ("a wrong image (another section?), a wrong pixel size or scale factor, or x/y swapped; pass "
                 "--allow-image-mismatch to convert anyway (recorded in the sample's QC)")


def off_image(centres_px: np.ndarray, width_px: float, height_px: float) -> np.ndarray:
    """Which centres (full-resolution x, y) lie outside the image."""
    x, y = centres_px[:, 0], centres_px[:, 1]
    return (x < 0) | (y < 0) | (x >= width_px) | (y >= height_px)


def agreement(centres_um: np.ndarray, in_tissue: np.ndarray, off: np.ndarray, tissue: object) -> ImageSpotAgreement:
    """Compare where the in-tissue spots fall with the Otsu tissue mask (``curation.tissue.TissueMask``)."""
    marked = in_tissue if in_tissue.any() else np.ones(len(in_tissue), bool)
    on_image = marked & ~off
    mask = tissue.mask  # type: ignore[attr-defined]
    ps = tissue.pixel_size_um  # type: ignore[attr-defined]
    n_on = 0
    f = 0.0
    n = int(on_image.sum())
    if n:
        ij = np.floor(centres_um[on_image][:, ::-1] / ps).astype(np.int64)
        ij = np.clip(ij, 0, np.array(mask.shape) - 1)
        n_on = int(mask[ij[:, 0], ij[:, 1]].sum())
        r0, c0 = ij.min(axis=0)
        r1, c1 = ij.max(axis=0) + 1
        f = float(mask[r0:r1, c0:c1].mean()) if (r1 > r0 and c1 > c0) else 0.0
    limit = min(1.0, f + 3 * math.sqrt(max(f * (1 - f), 1e-12) / max(n, 1)))
    on_frac = n_on / n if n else 0.0
    n_marked = int(marked.sum())
    mismatch = (int(off[marked].sum()) > MAX_OFF_IMAGE_FRACTION * n_marked) or (
        n >= 10 and on_frac <= limit and on_frac < MIN_ON_TISSUE_FRACTION)
    return ImageSpotAgreement(n_in_tissue=n_marked, n_off_image=int(off[marked].sum()), n_on_otsu_tissue=n_on,
                              image_tissue_fraction=round(f, 4), chance_limit=round(limit, 4), mismatch=mismatch)


def describe(a: ImageSpotAgreement) -> str:
    """The numbers behind a mismatch, in words."""
    on_img = a.n_in_tissue - a.n_off_image
    parts = [f"{a.n_off_image} of {a.n_in_tissue} spots marked in tissue lie off the image"]
    if on_img:
        parts.append(f"{a.n_on_otsu_tissue} of the {on_img} on it sit on Otsu tissue "
                     f"({a.n_on_otsu_tissue / on_img:.0%}; random placement reaches {a.chance_limit:.0%}, "
                     f"tissue covers {a.image_tissue_fraction:.0%} of the region the spots span)")
    return "; ".join(parts)


def check_extent(xs: CellSample, pixel_size_um: float, tolerance_um: float = 5.0) -> None:
    """Transcripts and cells must lie on the morphology image; otherwise the pixel size or origin is wrong."""
    if xs.image is None:
        return
    x0, y0 = xs.image_origin_um
    h, w = xs.image.shape[-2:]
    x1, y1 = x0 + w * pixel_size_um, y0 + h * pixel_size_um
    t = xs.transcripts
    out = ((t["x"] < x0 - tolerance_um) | (t["x"] > x1 + tolerance_um) | (t["y"] < y0 - tolerance_um)
           | (t["y"] > y1 + tolerance_um))
    if out.any():
        raise InputError(xs.folder, f"{int(out.sum())} of {len(t)} transcripts lie outside the morphology image "
                                    f"([{x0:g}, {x1:g}] x [{y0:g}, {y1:g}] µm at {pixel_size_um:g} µm/px); transcripts "
                                    f"span [{t['x'].min():.1f}, {t['x'].max():.1f}] x [{t['y'].min():.1f}, "
                                    f"{t['y'].max():.1f}] µm",
                         "check --pixel-size-um and --image-origin-um")
