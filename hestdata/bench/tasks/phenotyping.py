"""KRONOS-style cell phenotyping on multiplex images: cell-centred patches from a segmentation, KRONOS's
per-marker normalisation, an encoder over (cells, markers, px, px), then a linear probe with balanced class
weights (and kNN) scored by macro-F1, balanced accuracy and AUROC over spatial folds.

* Patches: ``size_px`` (64) square windows centred on each cell's centroid, zero outside the image.
* Normalisation (KRONOS): each marker divided by its scale — the dtype's maximum for integer images (65535 for
  uint16), for float images (IMC counts) the marker's maximum over the images — then standardised with that
  marker's mean and std on the 0–1 scale over every pixel of the images (label-free statistics; KRONOS's own come
  from its pretraining data, ours from the cohort).
* Folds: ``n_folds`` (4) spatial blocks per image — contiguous stripes of cells along the image's longer axis,
  never a shuffled split, which would put a cell's neighbours on both sides.
* Encoders: any callable on a float32 torch or numpy array (cells, markers, px, px) returning (cells, d); the
  weight-free baseline :func:`marker_means` gives each marker's mean and std within the cell's disc.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def cell_centred_patches(image: np.ndarray, centres_px: np.ndarray, size_px: int = 64) -> np.ndarray:
    """(n, markers, size, size) float32 windows of a (markers, y, x) image centred on each (x, y) centroid (px),
    zero where the window leaves the image."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim != 3:
        raise ValueError(f"expected a (markers, y, x) image, got shape {img.shape}")
    c, h, w = img.shape
    half = size_px // 2
    pad = np.zeros((c, h + 2 * size_px, w + 2 * size_px), dtype=np.float32)
    pad[:, size_px:size_px + h, size_px:size_px + w] = img
    out = np.zeros((len(centres_px), c, size_px, size_px), dtype=np.float32)
    for i, (x, y) in enumerate(np.asarray(centres_px, dtype=np.float64)):
        x0, y0 = int(np.floor(x)) - half + size_px, int(np.floor(y)) - half + size_px
        if -size_px < x0 - size_px < w and -size_px < y0 - size_px < h:
            out[i] = pad[:, y0:y0 + size_px, x0:x0 + size_px]
    return out


def marker_scale(images: Sequence[np.ndarray]) -> np.ndarray:
    """Per-marker divisor of KRONOS's first step: the integer dtype's maximum, or (float images) the marker's
    maximum over ``images`` (never 0)."""
    dt = np.asarray(images[0]).dtype
    n = np.asarray(images[0]).shape[0]
    if np.issubdtype(dt, np.integer):
        return np.full(n, float(np.iinfo(dt).max))
    mx = np.max([np.asarray(im, dtype=np.float64).reshape(n, -1).max(axis=1) for im in images], axis=0)
    return np.where(mx > 0, mx, 1.0)


def marker_stats(images: Sequence[np.ndarray], scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-marker mean and std on the 0–1 scale over every pixel of ``images`` (the training images)."""
    n = len(scale)
    flat = np.concatenate([np.asarray(im, dtype=np.float64).reshape(n, -1) for im in images], axis=1) / scale[:, None]
    return flat.mean(axis=1), np.maximum(flat.std(axis=1), 1e-8)


def kronos_normalise(patches: np.ndarray, scale: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x / scale - mean) / std`` per marker (KRONOS's per-marker normalisation), float32."""
    s = np.asarray(scale, np.float32)[None, :, None, None]
    m = np.asarray(mean, np.float32)[None, :, None, None]
    d = np.asarray(std, np.float32)[None, :, None, None]
    return ((patches / s - m) / d).astype(np.float32)


def spatial_folds(centres_px: np.ndarray, n_folds: int = 4, images: Sequence[Any] | None = None) -> np.ndarray:
    """A fold label per cell: ``n_folds`` stripes of equal cell count along each image's longer axis (cells of
    ``images[i]`` are split on their own, so every image contributes to every fold)."""
    c = np.asarray(centres_px, dtype=np.float64)
    img = np.zeros(len(c), dtype=int) if images is None else np.unique(np.asarray(images).astype(str),
                                                                      return_inverse=True)[1]
    out = np.empty(len(c), dtype=object)
    for g in np.unique(img):
        idx = np.flatnonzero(img == g)
        axis = int(np.ptp(c[idx, 1]) > np.ptp(c[idx, 0]))
        order = idx[np.argsort(c[idx, axis], kind="stable")]
        for f, chunk in enumerate(np.array_split(order, n_folds)):
            out[chunk] = f"fold{f}"
    return out.astype(str)


def segment_cells(image: np.ndarray, nuclear: int, *, min_distance_px: int = 3, sigma_px: float = 1.0
                  ) -> np.ndarray:
    """(n, 2) (x, y) px centroids of nuclei in channel ``nuclear``: peaks of the Gaussian-smoothed channel
    above its Otsu threshold, at least ``min_distance_px`` apart — a stand-in where no segmentation was
    shipped (a real one, e.g. Mesmer's or cellpose's label mask, gives :func:`centroids_of_labels`)."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu

    ch = gaussian(np.asarray(image[nuclear], dtype=np.float64), sigma=sigma_px)
    if np.ptp(ch) == 0:
        raise ValueError(f"nuclear channel {nuclear} is constant: nothing to segment")
    peaks = peak_local_max(ch, min_distance=min_distance_px, threshold_abs=threshold_otsu(ch), exclude_border=False)
    return peaks[:, ::-1].astype(np.float64)  # (row, col) -> (x, y)


def centroids_of_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(cell ids, (n, 2) (x, y) px centroids) of a label mask (0 = background)."""
    from scipy import ndimage

    ids = np.unique(labels)
    ids = ids[ids != 0]
    rc = np.asarray(ndimage.center_of_mass(np.ones_like(labels), labels, ids), dtype=np.float64).reshape(-1, 2)
    return ids, rc[:, ::-1]


def marker_means(patches: Any, radius_px: float = 6.0) -> np.ndarray:
    """The weight-free baseline encoder: per marker, the mean and std within a disc of ``radius_px`` around the
    patch centre (2 x markers features)."""
    x = np.asarray(patches.numpy() if hasattr(patches, "numpy") else patches, dtype=np.float32)
    s = x.shape[-1]
    yy, xx = np.mgrid[:s, :s]
    disc = (yy - (s // 2) + 0.5) ** 2 + (xx - (s // 2) + 0.5) ** 2 <= radius_px**2
    inner = x[..., disc]
    return np.concatenate([inner.mean(-1), inner.std(-1)], axis=1)


@dataclass
class PhenotypingResult:
    rows: list[dict[str, Any]] = field(default_factory=list)  # per fold and probe

    def mean(self, key: str, probe: str = "linear") -> float:
        return float(np.nanmean([r[key] for r in self.rows if r["probe"] == probe]))


def cell_phenotyping_protocol(images: Sequence[np.ndarray], centres_px: Sequence[np.ndarray],
                              labels: Sequence[Any], encoder: Callable[[Any], Any] = marker_means, *,
                              size_px: int = 64, n_folds: int = 4, seed: int = 1, batch_size: int = 256
                              ) -> PhenotypingResult:
    """KRONOS's cell phenotyping: for each image (markers, y, x) its cells' centroids (x, y px) and labels;
    patches, KRONOS's normalisation (label-free per-marker statistics of the images), the encoder, then the
    balanced linear probe and kNN (:func:`hestdata.bench.tasks.probes.classification`) per spatial fold."""
    from hestdata.bench.tasks.probes import classification

    if not (len(images) == len(centres_px) == len(labels)):
        raise ValueError(f"{len(images)} images, {len(centres_px)} centroid arrays and {len(labels)} label arrays")
    shapes = {np.asarray(im).shape[0] for im in images}
    if len(shapes) != 1:
        raise ValueError(f"images have different marker counts: {sorted(shapes)}")
    img_of = np.concatenate([[i] * len(c) for i, c in enumerate(centres_px)])
    cen = np.concatenate([np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in centres_px])
    y = np.concatenate([np.asarray(lab).astype(str) for lab in labels])
    if len(y) != len(cen):
        raise ValueError(f"{len(y)} labels for {len(cen)} cells")
    folds = spatial_folds(cen, n_folds, img_of)
    scale = marker_scale(images)
    mean, std = marker_stats(images, scale)
    patches = np.concatenate([cell_centred_patches(im, c, size_px) for im, c in zip(images, centres_px, strict=True)])
    x = kronos_normalise(patches, scale, mean, std)
    emb = np.concatenate([np.asarray(encoder(x[s:s + batch_size]), dtype=np.float32)
                          for s in range(0, len(x), batch_size)])
    return PhenotypingResult(classification(emb, y, folds, seed=seed))
