"""Resolve the full-resolution pixel size (µm/px): user > embedded > estimated, disagreements flagged.

Estimates come from the spot grid (array coordinates have a known physical pitch: Visium hexagonal 100 µm
centre-to-centre, legacy ST square 200 µm) by a least-squares affine fit of pixel centres on physical grid
positions — rotation- and shear-tolerant — or, without array coordinates, from ``spot_diameter_fullres``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from hestdata.errors import InputError
from hestdata.metadata import PixelSize
from hestdata.model import PixelSizeEvidence

DISAGREEMENT_LIMIT_PCT = 5.0


def grid_positions_um(technology: str, obs: pd.DataFrame, spacing_um: float | None = None) -> np.ndarray | None:
    """Physical (x, y) µm of each spot from its array coordinates, or None if the grid is unknown/absent.

    ``spacing_um`` is the centre-to-centre distance of neighbouring spots (Visium 100, legacy ST 200, Visium
    HD the bin size); the technology's standard value is used when it is None.
    """
    if "array_row" not in obs or "array_col" not in obs:
        return None
    row = pd.to_numeric(obs["array_row"], errors="coerce").to_numpy(np.float64)
    col = pd.to_numeric(obs["array_col"], errors="coerce").to_numpy(np.float64)
    if not (np.isfinite(row).all() and np.isfinite(col).all()) or (row < 0).any():
        return None
    if technology == "visium":  # hexagonal: same-row neighbours differ by 2 columns
        d = spacing_um or 100.0
        return np.column_stack([col * d / 2, row * d / 2 * math.sqrt(3.0)])
    if technology in ("st", "visium_hd"):  # square grids
        d = spacing_um or (200.0 if technology == "st" else None)
        return None if d is None else np.column_stack([col * d, row * d])
    return None


def estimate_from_grid(phys_um: np.ndarray, pixels: np.ndarray) -> float | None:
    """µm/px from an affine fit ``pixels ≈ A · phys + t``: ``1 / sqrt(|det A|)``; robust to a few outliers."""
    n = len(phys_um)
    if n < 6 or np.linalg.matrix_rank(phys_um - phys_um.mean(0)) < 2:
        return None
    keep = np.ones(n, dtype=bool)
    for _ in range(3):
        design = np.column_stack([phys_um[keep], np.ones(int(keep.sum()))])
        coef, *_ = np.linalg.lstsq(design, pixels[keep], rcond=None)
        resid = np.linalg.norm(np.column_stack([phys_um, np.ones(n)]) @ coef - pixels, axis=1)
        mad = np.median(resid[keep]) + 1e-9
        new_keep = resid <= max(5 * mad, 1.0)
        if new_keep.sum() < 6 or (new_keep == keep).all():
            break
        keep = new_keep
    det = abs(np.linalg.det(coef[:2, :2]))
    if det <= 0:
        return None
    return float(1.0 / math.sqrt(det))


def estimate_from_neighbours(pixels: np.ndarray, spacing_um: float) -> float | None:
    """µm/px from the median nearest-neighbour distance of spot centres (= the grid pitch on a dense grid)."""
    if len(pixels) < 6:
        return None
    from scipy.spatial import cKDTree

    d, _ = cKDTree(pixels).query(pixels, k=2)
    nn = float(np.median(d[:, 1]))
    return spacing_um / nn if nn > 0 else None


def resolve_pixel_size(evidence: PixelSizeEvidence, technology: str, obs: pd.DataFrame | None,
                       where: str, spacing_um: float | None = None) -> tuple[PixelSize, list[str]]:
    """Combine the evidence into the trusted pixel size; return it and any warnings.

    ``obs`` holds spot centres (``pxl_col_in_fullres``/``pxl_row_in_fullres``, array coordinates) for a grid
    estimate; ``None`` for sources without a spot grid (Xenium, multiplex, whole slides)."""
    from hestdata.units import check_pixel_size_um

    if evidence.user is not None:
        check_pixel_size_um(evidence.user, where)
    estimated, estimated_from = evidence.estimated, evidence.estimated_from
    warnings: list[str] = []
    g = None
    if obs is not None:
        pix = obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
        phys = grid_positions_um(technology, obs, spacing_um)
        g = estimate_from_grid(phys, pix) if phys is not None else None
        how = f"{technology} spot grid (affine fit of {len(pix)} spots on array coordinates)"
    if g is None and spacing_um and obs is not None:
        g = estimate_from_neighbours(pix, spacing_um)
        how = f"median nearest-neighbour spacing of {len(pix)} spots = {spacing_um:g} µm"
    if g is not None:
        if estimated is not None and abs(g - estimated) / g * 100 > DISAGREEMENT_LIMIT_PCT:
            warnings.append(f"{where}: spot-grid pixel size {g:.4f} µm/px differs from the {estimated_from} "
                            f"estimate {estimated:.4f} µm/px by {abs(g - estimated) / g * 100:.1f} %; the grid is used")
        estimated, estimated_from = g, how
    if evidence.user is not None:
        value, trusted = float(evidence.user), "user"
    elif evidence.embedded is not None:
        value, trusted = float(evidence.embedded), "embedded"
    elif estimated is not None:
        value, trusted = float(estimated), "estimated"
    else:
        raise InputError(where, "pixel size unknown: nothing embedded and too few spots to estimate it",
                         "pass --pixel-size-um")
    check_pixel_size_um(value, where)
    disagreement = None
    ref = evidence.embedded if trusted == "user" and evidence.embedded is not None else estimated
    if trusted != "estimated" and ref is not None:
        disagreement = abs(value - ref) / ref * 100.0
        if disagreement > DISAGREEMENT_LIMIT_PCT:
            warnings.append(f"{where}: pixel size {trusted} {value:.4f} µm/px disagrees with "
                            f"{'embedded' if ref is evidence.embedded else 'estimated'} {ref:.4f} µm/px by "
                            f"{disagreement:.1f} % (> {DISAGREEMENT_LIMIT_PCT:g} %)")
    ps = PixelSize(
        value=value, trusted=trusted, embedded=evidence.embedded, estimated=estimated,  # type: ignore[arg-type]
        estimated_from=estimated_from, user=evidence.user,
        disagreement_pct=None if disagreement is None else round(disagreement, 3),
        flagged=bool(disagreement is not None and disagreement > DISAGREEMENT_LIMIT_PCT),
    )
    return ps, warnings
