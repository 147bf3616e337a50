"""Small synthetic samples the tests generate (real fixtures live in ../shared/data)."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from hestdata.model import PixelSizeEvidence, RasterImage, SpotSample


def synthetic_sample(sample_id: str = "synth", n: int = 12, pixel_size_um: float = 0.5, seed: int = 0,
                     genes: tuple[str, ...] = ("TP53", "MKI67", "FAM132A")) -> SpotSample:
    """A textured image with a black cross centred on each spot, on a square 100 µm grid (4 spots a row)."""
    rng = np.random.default_rng(seed)
    h = w = 400 + 200 * (n // 4 + 2)
    img = np.full((h, w, 3), 235, np.uint8)
    img[200:h - 200, 200:w - 200] = rng.integers(120, 200, size=(h - 400, w - 400, 3), dtype=np.uint8)  # "tissue"
    rows, cols = np.divmod(np.arange(n), 4)
    x_px = 400 + cols * 200.0 + 0.5 * (rows % 2)
    y_px = 400 + rows * 200.0
    for x, y in zip(x_px, y_px, strict=True):
        xi, yi = int(round(x)), int(round(y))
        img[yi - 1:yi + 1, xi - 10:xi + 10] = 0
        img[yi - 10:yi + 10, xi - 1:xi + 1] = 0
    obs = pd.DataFrame({"in_tissue": 1, "array_row": rows, "array_col": cols,
                        "pxl_row_in_fullres": y_px, "pxl_col_in_fullres": x_px},
                       index=[f"s{i}" for i in range(n)])
    ids = {"TP53": "ENSG00000141510"}
    var = pd.DataFrame({"gene_id": [ids.get(g, "") for g in genes], "feature_type": "Gene Expression"},
                       index=list(genes))
    X = rng.poisson(3, size=(n, len(genes))).astype(np.int64)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    return SpotSample(sample_id=sample_id, technology="visium_hd", expression=adata,
                  image=RasterImage(img, Path("synthetic.png"), "fullres"),
                  pixel_size=PixelSizeEvidence(embedded=pixel_size_um, embedded_from="test"),
                  spot_shape="square", spot_diameter_um=100.0, inter_spot_distance_um=100.0, grid_layout="square",
                  source_files=[Path("synthetic")])


PLANTED_GENES = ("ERBB2", "ESR1", "PGR", "MKI67")  # encoded in the image
NOISE_GENES = ("ACTB", "GAPDH", "CD74", "KRT19", "COL1A1", "VIM")  # not


def planted_sample(sample_id: str, seed: int, n_side: int = 8, shuffle_pairs: bool = False) -> SpotSample:
    """Spots on a 100 µm grid at 2 µm/px whose 100 µm squares carry their spot's expression: red, green and blue
    levels encode ERBB2, ESR1 and PGR, the amplitude of a fine texture encodes MKI67; six other genes are noise.
    ``shuffle_pairs`` permutes the expression rows across the spots (same image, same marginals, no link)."""
    rng = np.random.default_rng(seed)
    n = n_side * n_side
    u = rng.uniform(size=(n, 4))
    side = 50 * (n_side + 2)
    img = np.full((side, side, 3), 235, np.uint8)
    rows, cols = np.divmod(np.arange(n), n_side)
    y_px, x_px = 100 + rows * 50.0 + 25, 100 + cols * 50.0 + 25
    for i in range(n):
        y0, x0 = int(y_px[i]) - 25, int(x_px[i]) - 25
        block = np.empty((50, 50, 3))
        block[:] = 60 + 150 * u[i, :3]
        block += rng.normal(0, 4 + 40 * u[i, 3], size=(50, 50, 1))
        img[y0:y0 + 50, x0:x0 + 50] = np.clip(block, 0, 255).astype(np.uint8)
    lam = np.column_stack([2 + 40 * u, np.full((n, len(NOISE_GENES)), 8.0)])
    X = rng.poisson(lam).astype(np.int64)
    if shuffle_pairs:
        X = X[rng.permutation(n)]
    obs = pd.DataFrame({"in_tissue": 1, "array_row": rows, "array_col": cols,
                        "pxl_row_in_fullres": y_px, "pxl_col_in_fullres": x_px},
                       index=[f"{sample_id}_s{i}" for i in range(n)])
    genes = [*PLANTED_GENES, *NOISE_GENES]
    var = pd.DataFrame({"gene_id": "", "feature_type": "Gene Expression"}, index=genes)
    return SpotSample(sample_id=sample_id, technology="visium_hd", expression=ad.AnnData(X=X, obs=obs, var=var),
                      image=RasterImage(img, Path("planted.png"), "fullres"),
                      pixel_size=PixelSizeEvidence(embedded=2.0, embedded_from="test"),
                      spot_shape="square", spot_diameter_um=100.0, inter_spot_distance_um=100.0,
                      grid_layout="square", source_files=[Path("planted")])
