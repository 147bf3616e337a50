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
