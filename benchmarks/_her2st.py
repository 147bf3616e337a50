"""The loader benchmarks' data: real her2st H&E patches, built from a clean checkout and ../shared/data.

Each her2st section (B4, C2, C3) is converted with its spots, plus a *dense-grid* sample over the same image: a
square grid of 112 µm patch centres over the whole section (so a root holds a few thousand real tissue patches,
224 px at 0.5 µm/px, JPEG q90), with Poisson counts for 200 of the section's genes. A dense grid is not spot
data: by construction it covers background as much as tissue, so the image-spot agreement check (which asks
spots marked in tissue to sit on tissue better than chance) does not apply, and it is converted with
``allow_image_mismatch`` and says so in its provenance; patches whose box holds less than 15 % tissue are skipped
as for any unmarked spot.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HESTDATA_SHARED_DATA", REPO.parent / "shared" / "data")) / "st_legacy" / "her2st"
SECTIONS = {"B4": "B/B4/BT10737_D2_HE.jpg", "C2": "C/C2/5714_HE_BT_C2.jpg", "C3": "C/C3/5714_HE_BT_D1.jpg"}
GRID_PITCH_UM = 112.0
HER2ST_PIXEL_SIZE_UM = 0.69  # what the spot grid of these sections gives (docs/store.md, "Pixel size")


def build_root(root: Path, sections: list[str] | None = None, grid: bool = True) -> Path:
    """``root`` holding the given sections (default all three) and, with ``grid``, their dense grids; a root that
    already exists is returned as it is."""
    import anndata as ad
    import pandas as pd

    import hestdata
    from hestdata.model import PixelSizeEvidence, SpotSample
    from hestdata.sources.images import load_image
    from hestdata.store import layout as L

    if L.local_format(root) is not None:
        return root
    rng = np.random.default_rng(0)
    for sec in sections or list(SECTIONS):
        img = SECTIONS[sec]
        s = hestdata.read_st(DATA / "ST-cnts" / f"{sec}.tsv.gz", spots=DATA / "ST-spotfiles" / f"{sec}_selection.tsv",
                             image=DATA / "ST-imgs" / img, sample_id=f"her2st_{sec}")
        hestdata.convert(s, root, metadata={"organ": "breast"})
        if not grid:
            continue
        image = load_image(DATA / "ST-imgs" / img)
        step = GRID_PITCH_UM / HER2ST_PIXEL_SIZE_UM
        ys, xs = np.mgrid[step / 2:image.height_px - step / 2:step, step / 2:image.width_px - step / 2:step]
        n = ys.size
        obs = pd.DataFrame({"in_tissue": 0, "array_row": -1, "array_col": -1,
                            "pxl_row_in_fullres": ys.ravel(), "pxl_col_in_fullres": xs.ravel()},
                           index=[f"g{i}" for i in range(n)])
        genes = s.expression.var_names[:200]
        var = pd.DataFrame({"gene_id": "", "feature_type": "Gene Expression"}, index=genes)
        X = rng.poisson(1.0, size=(n, len(genes))).astype(np.int32)
        dense = SpotSample(sample_id=f"grid_{sec}", technology="st", expression=ad.AnnData(X=X, obs=obs, var=var),
                           image=image, pixel_size=PixelSizeEvidence(user=HER2ST_PIXEL_SIZE_UM),
                           spot_diameter_um=100, inter_spot_distance_um=200, source_files=[DATA / "ST-imgs" / img])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", hestdata.HestdataWarning)  # the mismatch warning is the point
            hestdata.convert(dense, root, allow_image_mismatch=True,
                             metadata={"organ": "breast", "synthetic": True,
                                       "provenance": f"dense {GRID_PITCH_UM:g} µm grid over a real her2st H&E "
                                                     "(not spot data; counts simulated)"})
    return root
