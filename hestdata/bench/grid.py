"""Feature grids (TITAN-style slide encoders): patch features arranged by position on a regular grid.

A grid of geometry ``512px_0.5um`` covers a sample's image with square cells of 256 µm anchored at its origin:
cell ``(row, col)`` is the box ``[col·s, (col+1)·s) × [row·s, (row+1)·s)`` µm (``s`` = cell side), so positions map
back to µm exactly — integer multiples of ``s``. Cells whose Otsu tissue fraction (the conversion's algorithm on
the stored thumbnail level) is under ``min_tissue_fraction`` are *empty*: masked, not embedded, features zero.
Cells are cut from the stored pyramid level closest to the target (Lanczos over the exact box), band by band on
threads (:mod:`hestdata.curation.bands`), and embedded in batches.

The grid is cached beside the patch embeddings: ``<cache>/<fingerprint16>/<sample>-grid-<geometry>-<digest16>.zarr``
with ``features`` (rows, cols, D) float32, ``mask`` (rows, cols) bool and attrs ``cell_um``, ``origin_um``,
``geometry``; ``digest`` is the image's manifest digest. :func:`export_grid_trident` writes TRIDENT's layout with
the grid indices added, which TITAN-style encoders read (``coords / patch_size_level0`` = the indices, exactly).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.store import layout as L
from hestdata.units import PatchGeometry

DEFAULT_GRID = "512px_0.5um"
MIN_TISSUE_FRACTION = 0.1


@dataclass
class FeatureGrid:
    """Features of one sample on a regular grid."""

    features: np.ndarray  # (rows, cols, D) float32, zero where empty
    mask: np.ndarray  # (rows, cols) bool, True where the cell holds tissue
    cell_um: float
    geometry: str
    origin_um: tuple[float, float] = (0.0, 0.0)

    def indices(self) -> np.ndarray:
        """(N, 2) (row, col) of the non-empty cells, row-major."""
        return np.argwhere(self.mask).astype(np.int64)

    def top_left_um(self) -> np.ndarray:
        """(N, 2) (x, y) µm of the non-empty cells' top-left corners: ``origin + (col, row) · cell_um``."""
        rc = self.indices()
        return np.asarray(self.origin_um) + rc[:, ::-1].astype(np.float64) * self.cell_um


def plan_grid(sample: Any, geometry: PatchGeometry, min_tissue_fraction: float = MIN_TISSUE_FRACTION
              ) -> tuple[np.ndarray, float, float]:
    """The tissue mask of the grid cells of a sample (a :class:`hestdata.store.root.StoredSample` or its folder),
    the image's level-0 µm/px, and the cell side in µm."""
    from hestdata.curation.levels import thumbnail_level
    from hestdata.curation.tissue import segment_tissue
    from hestdata.store.root import StoredSample

    sample = StoredSample.of(sample)
    meta = sample.metadata
    if meta.image is None:
        raise ValueError(f"{sample.path}: no H&E image to tile")
    ps = meta.pixel_size_um.value
    s = geometry.field_of_view_um
    n_rows = int(np.ceil(meta.image.height_px * ps / s))
    n_cols = int(np.ceil(meta.image.width_px * ps / s))
    img = sample.image(L.IMAGE_HE)
    n_levels = len([k for k in img.array_keys() if k.startswith("s")])
    t = thumbnail_level([tuple(img[f"s{k}"].shape[1:]) for k in range(n_levels)], 2048)  # as the conversion chose
    thumb = np.moveaxis(img[f"s{t}"][:], 0, -1)
    tissue = segment_tissue(thumb, ps * 2 ** t)
    rr, cc = np.mgrid[0:n_rows, 0:n_cols]
    x0, y0 = cc.ravel() * s, rr.ravel() * s
    frac = tissue.box_fraction(x0, y0, x0 + s, y0 + s)
    return (frac >= min_tissue_fraction).reshape(n_rows, n_cols), ps, s


def render_cells(sample: Any, geometry: PatchGeometry, mask: np.ndarray, pixel_size_um: float,
                 batch_size: int, workers: int | None = None) -> Any:
    """``(start, batch)`` of the non-empty cells' images (row-major), cut from the stored pyramid."""
    from hestdata.curation.bands import render_bands
    from hestdata.curation.levels import finest_level_for
    from hestdata.curation.patches import resample, window_boxes
    from hestdata.raster import ZarrRaster
    from hestdata.store.root import StoredSample

    sample = StoredSample.of(sample)
    img = sample.image(L.IMAGE_HE)
    n_levels = len([k for k in img.array_keys() if k.startswith("s")])
    lvl = finest_level_for(pixel_size_um, geometry.pixel_size_um, [2.0 ** k for k in range(n_levels)])
    lps = pixel_size_um * 2 ** lvl
    s = geometry.field_of_view_um
    rc = np.argwhere(mask)
    centres = np.column_stack([(rc[:, 1] + 0.5) * s, (rc[:, 0] + 0.5) * s]) / lps
    p = geometry.patch_size_px
    boxes, exact = window_boxes(centres, s / lps, p)
    level = ZarrRaster(img[f"s{lvl}"], f"{sample.path}/images/{L.IMAGE_HE}/s{lvl}")
    return render_bands(level, boxes, lambda crop, i: resample(crop, tuple(exact[i]), p), (p, p, 3), batch_size,
                        workers)


def _grid_key(base: Path, sample: Any, geometry: str) -> Path:
    d = sample.digest(f"images/{L.IMAGE_HE}")
    return base / f"{sample.id}-grid-{geometry}-{d[:16]}.zarr"


def read_grid(path: Path) -> FeatureGrid:
    import zarr

    g = zarr.open_group(str(path), mode="r")
    a = dict(g.attrs)
    return FeatureGrid(g["features"][:], g["mask"][:].astype(bool), float(a["cell_um"]), str(a["geometry"]),
                       tuple(a["origin_um"]))  # type: ignore[arg-type]


def _write_grid(key: Path, grid: FeatureGrid, encoder: Any, sid: str) -> None:
    import zarr

    key.parent.mkdir(parents=True, exist_ok=True)
    tmp = key.parent / f".tmp-{uuid.uuid4().hex[:8]}.zarr"
    try:
        g = zarr.open_group(str(tmp), mode="w")
        g.create_array("features", data=grid.features, chunks=(max(1, grid.features.shape[0]),) + grid.features.shape[1:])
        g.create_array("mask", data=grid.mask)
        g.attrs.update({"cell_um": grid.cell_um, "origin_um": list(grid.origin_um), "geometry": grid.geometry,
                        "encoder": encoder.name, "fingerprint": encoder.fingerprint, "sample": sid})
        os.replace(tmp, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def embed_grid(root: str | Path, encoder: Any, sample_ids: list[str], *, grid: str = DEFAULT_GRID,
               batch_size: int = 32, device: Any = None, cache_dir: str | Path | None = None,
               min_tissue_fraction: float = MIN_TISSUE_FRACTION, workers: int | None = None,
               on_sample: Any = None) -> dict[str, FeatureGrid]:
    """A :class:`FeatureGrid` per sample (cached; local roots)."""
    import torch

    from hestdata.store.root import Root

    r = Root.open(root)
    geom = PatchGeometry.parse(grid)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    encoder.to(dev)
    base = Path(cache_dir) if cache_dir else r.path / "embeddings"
    base = base / encoder.fingerprint[:16]
    out: dict[str, FeatureGrid] = {}
    for sid in sample_ids:
        sample = r.sample(sid)
        key = _grid_key(base, sample, geom.name)
        if key.exists():
            out[sid] = read_grid(key)
            if on_sample:
                on_sample(sid, True)
            continue
        mask, ps, s = plan_grid(sample, geom, min_tissue_fraction)
        feats: np.ndarray | None = None
        for start, batch in render_cells(sample, geom, mask, ps, batch_size, workers):
            x = torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous().to(dev)
            z = encoder(x).cpu().numpy().astype(np.float32)
            if feats is None:
                feats = np.zeros((int(mask.sum()), z.shape[1]), np.float32)
            feats[start:start + len(z)] = z
        d = feats.shape[1] if feats is not None else 0
        full = np.zeros(mask.shape + (d,), np.float32)
        if feats is not None:
            full[mask] = feats
        out[sid] = FeatureGrid(full, mask, s, geom.name)
        _write_grid(key, out[sid], encoder, sid)
        if on_sample:
            on_sample(sid, False)
    return out


def export_grid_trident(root: str | Path, grids: dict[str, FeatureGrid], encoder: Any, dest: str | Path) -> list[Path]:
    """TRIDENT's ``features_<encoder>/<slide>.h5`` for the non-empty cells of each grid, plus ``grid_index``
    (row, col) and ``coords_um`` (top-left µm). ``coords`` are ``(col, row) · patch_size_level0`` level-0 pixels
    with ``patch_size_level0 = round(cell_um / µm per px)``: integers whose quotient by ``patch_size_level0`` is the
    grid index exactly (the µm position, ``index · cell_um``, is exact in ``coords_um``)."""
    import re

    from hestdata.bench.export import _write_h5
    from hestdata.store.root import Root

    r, out = Root.open(root), Path(dest)
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder.name)
    written = []
    for sid, g in grids.items():
        meta = r.sample(sid).metadata
        l0 = meta.pixel_size_um.value
        geom = PatchGeometry.parse(g.geometry)
        step = int(round(g.cell_um / l0))
        rc = g.indices()
        mag0 = float(re.sub(r"[^0-9.]", "", meta.magnification)) if meta.magnification else 10.0 / l0
        path = out / f"features_{safe}" / f"{sid}.h5"
        _write_h5(path, {"features": g.features[g.mask].astype(np.float32),
                         "coords": (rc[:, ::-1] * step).astype(np.int64), "grid_index": rc,
                         "coords_um": g.top_left_um()},
                  {"encoder": encoder.name, "grid_shape": list(g.mask.shape), "cell_um": g.cell_um},
                  {"coords": {"patch_size": geom.patch_size_px, "patch_size_level0": step,
                              "level0_magnification": mag0, "target_magnification": mag0 * l0 / geom.pixel_size_um,
                              "overlap": 0, "level0_width": meta.image.width_px if meta.image else 0,
                              "level0_height": meta.image.height_px if meta.image else 0, "name": sid}})
        written.append(path)
    return written
