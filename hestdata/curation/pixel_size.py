"""Resolve the full-resolution pixel size (µm/px): the user's, else physical evidence over image tags.

Estimates come from the spot grid (array coordinates have a known physical pitch: Visium hexagonal 100 µm
centre-to-centre, legacy ST square 200 µm) by a least-squares affine fit of pixel centres on physical grid
positions — rotation- and shear-tolerant — or, without array coordinates, from ``spot_diameter_fullres``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from hestdata.errors import InputError
from hestdata.metadata import PixelSize
from hestdata.model import PixelSizeEvidence

DISAGREEMENT_LIMIT_PCT = 5.0


@dataclass(frozen=True)
class SpotGrid:
    """The geometry of a sample's spot grid: the layout of its array coordinates and the centre-to-centre
    distance of neighbouring spots (Visium hexagonal 100 µm, legacy ST square 200 µm, Visium HD square at the
    bin size) — what a source knows of its instrument, and all the pixel-size estimate needs."""

    layout: Literal["hexagonal", "square"] | None  # None: unknown (the nearest-neighbour spacing is used)
    pitch_um: float


def grid_positions_um(grid: SpotGrid | None, obs: pd.DataFrame) -> np.ndarray | None:
    """Physical (x, y) µm of each spot from its array coordinates, or None if the grid is unknown/absent."""
    if grid is None or grid.layout is None or "array_row" not in obs or "array_col" not in obs:
        return None
    row = pd.to_numeric(obs["array_row"], errors="coerce").to_numpy(np.float64)
    col = pd.to_numeric(obs["array_col"], errors="coerce").to_numpy(np.float64)
    if not (np.isfinite(row).all() and np.isfinite(col).all()) or (row < 0).any():
        return None
    d = grid.pitch_um
    if grid.layout == "hexagonal":  # same-row neighbours differ by 2 columns
        return np.column_stack([col * d / 2, row * d / 2 * math.sqrt(3.0)])
    return np.column_stack([col * d, row * d])


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


UNIT_FACTORS = {10.0: "x10 (pixels per cm read as per mm, HEST's TIFF writer)", 2.54: "x2.54 (inch vs cm)",
                25.4: "x25.4 (inch vs mm)", 1000.0: "x1000 (nm vs µm)"}


def unit_confusion(a: float, b: float, tolerance: float = 0.03) -> str | None:
    """The unit mix-up that explains ``a`` vs ``b`` (either way round), if their ratio is near a unit factor."""
    r = max(a, b) / min(a, b)
    return next((name for f, name in UNIT_FACTORS.items() if abs(r / f - 1) <= tolerance), None)


def _grid_estimate(grid: SpotGrid | None, obs: pd.DataFrame | None) -> tuple[float | None, str | None]:
    """µm/px from the spot/bin grid (affine fit on array coordinates, else nearest-neighbour spacing)."""
    if obs is None or grid is None:
        return None, None
    pix = obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(np.float64)
    phys = grid_positions_um(grid, obs)
    g = estimate_from_grid(phys, pix) if phys is not None else None
    if g is not None:
        return g, (f"{grid.layout} spot grid of pitch {grid.pitch_um:g} µm (affine fit of {len(pix)} spots on "
                   "array coordinates)")
    g = estimate_from_neighbours(pix, grid.pitch_um)
    if g is not None:
        return g, f"median nearest-neighbour spacing of {len(pix)} spots = {grid.pitch_um:g} µm"
    return None, None


def _pct(a: float, b: float) -> float:
    return abs(a - b) / b * 100.0


def resolve_pixel_size(evidence: PixelSizeEvidence, grid: SpotGrid | None, obs: pd.DataFrame | None,
                       where: str) -> tuple[PixelSize, list[str]]:
    """Combine the evidence into the trusted pixel size; return it and any warnings.

    Policy (docs/store.md): a user value always wins; otherwise physical evidence — the spot or bin grid of
    known pitch, a HEST-1k ``pixel_size_um_estimated`` — beats image tags whenever they disagree by more than
    5 %; without physical evidence the tags are trusted (within the bounds of ``check_pixel_size_um``). Both
    values stay recorded; a disagreement near a unit factor (10, 2.54, 25.4) is named as the likely cause.

    ``obs`` holds spot centres (``pxl_col_in_fullres``/``pxl_row_in_fullres``, array coordinates) and ``grid``
    their grid's geometry for a grid estimate; ``None`` for sources without a spot grid (Xenium, multiplex,
    whole slides)."""
    from hestdata.units import check_pixel_size_um

    if evidence.user is not None:
        check_pixel_size_um(evidence.user, where)
    estimated, estimated_from = evidence.estimated, evidence.estimated_from
    warnings: list[str] = []
    g, how = _grid_estimate(grid, obs)
    if g is not None:
        if estimated is not None and _pct(g, estimated) > DISAGREEMENT_LIMIT_PCT:
            warnings.append(f"{where}: spot-grid pixel size {g:.4f} µm/px differs from the {estimated_from} "
                            f"estimate {estimated:.4f} µm/px by {_pct(estimated, g):.1f} %; the grid is used")
        estimated, estimated_from = g, how
    if evidence.published is not None:
        pub = float(evidence.published)
        if g is None or _pct(pub, g) <= DISAGREEMENT_LIMIT_PCT:
            check = f"; spot grid {g:.4f} µm/px agrees within {_pct(pub, g):.1f} %" if g is not None else ""
            estimated, estimated_from = pub, f"{evidence.published_from}{check}"
        else:
            warnings.append(f"{where}: spot-grid pixel size {g:.4f} µm/px differs from the {evidence.published_from} "
                            f"{pub:.4f} µm/px by {_pct(pub, g):.1f} %; the grid is used")
    emb = evidence.embedded
    if evidence.user is not None:
        value, trusted, ref = float(evidence.user), "user", (emb if emb is not None else estimated)
    elif emb is not None and estimated is not None and _pct(emb, estimated) > DISAGREEMENT_LIMIT_PCT:
        value, trusted, ref = float(estimated), "estimated", emb  # physical evidence beats the tags
    elif emb is not None:
        value, trusted, ref = float(emb), "embedded", estimated
    elif estimated is not None:
        value, trusted, ref = float(estimated), "estimated", None
    else:
        raise InputError(where, "pixel size unknown: nothing embedded and too few spots to estimate it",
                         "pass --pixel-size-um")
    check_pixel_size_um(value, where)
    disagreement = _pct(value, ref) if ref is not None else None
    if trusted == "estimated" and emb is not None:
        disagreement = _pct(emb, value)
    confusion = None
    if disagreement is not None and disagreement > DISAGREEMENT_LIMIT_PCT:
        other = emb if trusted != "embedded" and emb is not None else estimated
        other_name = "embedded" if other is emb else f"estimated ({estimated_from})"
        confusion = unit_confusion(value, other) if other else None
        warnings.append(f"{where}: pixel size {other_name} {other:.4g} µm/px disagrees with the {trusted} "
                        f"{value:.4g} µm/px by {disagreement:.1f} % (> {DISAGREEMENT_LIMIT_PCT:g} %); the {trusted} "
                        f"value is used" + (f"; likely a unit confusion: {confusion}" if confusion else ""))
    ps = PixelSize(
        value=value, trusted=trusted, embedded=emb, estimated=estimated,  # type: ignore[arg-type]
        estimated_from=estimated_from, user=evidence.user,
        disagreement_pct=None if disagreement is None else round(disagreement, 3),
        flagged=bool(disagreement is not None and disagreement > DISAGREEMENT_LIMIT_PCT), unit_confusion=confusion,
    )
    return ps, warnings
