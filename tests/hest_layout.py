"""Build a HEST-1k layout (as HEST-Library's release code writes it) from the shared her2st sections.

``st/<id>.h5ad``, ``wsis/<id>.tif`` (tiled, resolution tags x10 off as HEST's ``tiff_save`` writes them),
``metadata/<id>.json`` (bare NaN tokens), ``patches/<id>.h5`` (HEST's crops), ``HEST_v1_1_0.csv`` (UTF-8 BOM).
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
from PIL import Image

from tests.conftest import her2st_inputs

HEST_MPP = {"C2": 0.696, "C3": 0.6892, "B4": 0.6913}  # HEST-1k's pixel_size_um_estimated per section
CSV_COLUMNS = ["dataset_title", "id", "organ", "species", "patient", "st_technology", "oncotree_code",
               "pixel_size_um_embedded", "pixel_size_um_estimated", "license"]


def add_section(root: Path, section: str, hid: str, *, patches: bool = True, scale: int = 1) -> dict:
    """Write one her2st section as HEST sample ``hid`` (``scale`` > 1: the image reduced that many times, for
    fast tests; spot coordinates and pixel size follow); return its CSV row."""
    import tifffile

    mpp = HEST_MPP[section] * scale
    counts, spots, image = her2st_inputs(section)
    for sub in ("st", "wsis", "metadata", "patches"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cnt = pd.read_csv(counts, sep="\t", index_col=0)
    sp = pd.read_csv(spots, sep="\t")
    sp.index = [f"{x}x{y}" for x, y in zip(sp["x"], sp["y"], strict=True)]
    sp = sp.loc[cnt.index.intersection(sp.index)]
    cnt = cnt.loc[sp.index]
    a = ad.AnnData(X=cnt.to_numpy(np.float32), obs=pd.DataFrame(index=sp.index), var=pd.DataFrame(index=cnt.columns))
    a.obs["in_tissue"] = 1
    a.obs["array_col"], a.obs["array_row"] = sp["x"].to_numpy(), sp["y"].to_numpy()
    xy = sp[["pixel_x", "pixel_y"]].to_numpy(np.float64) / scale
    a.obs["pxl_col_in_fullres"], a.obs["pxl_row_in_fullres"] = xy[:, 0], xy[:, 1]
    a.obsm["spatial"] = xy
    a.uns["spatial"] = {"ST": {"scalefactors": {"spot_diameter_fullres": 100 / mpp,
                                                "tissue_downscaled_fullres_scalef": 0.025}}}
    a.write_h5ad(root / "st" / f"{hid}.h5ad")
    pil_full = Image.open(image).convert("RGB")
    img = np.asarray(pil_full.reduce(scale) if scale > 1 else pil_full)
    wrong = 1e4 / (mpp / 10)  # HEST's tiff_save: pixels per cm handed over where per mm is expected
    with tifffile.TiffWriter(root / "wsis" / f"{hid}.tif", bigtiff=True) as tw:
        tw.write(img, tile=(256, 256), resolution=(wrong, wrong), resolutionunit="CENTIMETER", subifds=1,
                 photometric="rgb", compression="jpeg")
        tw.write(img[::4, ::4], tile=(256, 256), subfiletype=1, photometric="rgb", compression="jpeg")
    row = {"dataset_title": "her2st", "id": hid, "organ": "Breast", "species": "Homo sapiens", "patient": section[0],
           "st_technology": "Spatial Transcriptomics", "oncotree_code": "IDC", "pixel_size_um_embedded": mpp / 10,
           "pixel_size_um_estimated": mpp, "license": "CC BY 4.0"}
    (root / "metadata" / f"{hid}.json").write_text(json.dumps(row)[:-1] + ', "treatment_comment": NaN}')
    if patches:
        win = round(224 * 0.5 / mpp)  # HEST's patches: top-left = centre - win // 2, bilinear to 224
        pil = Image.fromarray(img)
        tl = [(int(x - win // 2), int(y - win // 2)) for x, y in a.obsm["spatial"]]
        crops = [np.asarray(pil.crop((x0, y0, x0 + win, y0 + win)).resize((224, 224), Image.BILINEAR)) for x0, y0 in tl]
        with h5py.File(root / "patches" / f"{hid}.h5", "w") as f:
            f.create_dataset("img", data=np.stack(crops)).attrs["patch_size_target"] = 224
            f["barcode"] = np.array(a.obs_names, dtype="S")
            f["coords"] = np.array(tl, dtype=np.int64)
    return row


def write_csv(root: Path, rows: list[dict]) -> None:
    df = pd.DataFrame(rows, columns=CSV_COLUMNS)
    (root / "HEST_v1_1_0.csv").write_bytes(b"\xef\xbb\xbf" + df.to_csv(index=False).encode())
