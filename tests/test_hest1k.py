"""HEST-1k import on a small HEST-layout fixture built from the shared squidpy Visium crop."""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from tests.conftest import shared

HID = "SQCROP1"
MPP = 100 / 137  # the crop's real pixel size (neighbouring spots 137 px = 100 µm apart)


@pytest.fixture(scope="module")
def hest_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import tifffile

    d = shared("visium", "squidpy_mouse_brain_crop")
    root = tmp_path_factory.mktemp("hest") / "hest_data"
    for sub in ("st", "wsis", "metadata", "patches"):
        (root / sub).mkdir(parents=True)
    a = ad.read_h5ad(d / "test_data.h5ad")
    a.obs["pxl_col_in_fullres"] = a.obsm["spatial"][:, 0]
    a.obs["pxl_row_in_fullres"] = a.obsm["spatial"][:, 1]
    a.uns["spatial"] = {"ST": {"scalefactors": {"spot_diameter_fullres": 55 / MPP,
                                                "tissue_downscaled_fullres_scalef": 0.1}}}
    a.write_h5ad(root / "st" / f"{HID}.h5ad")
    img = np.asarray(Image.open(d / "test_img.jpg").convert("RGB"))
    res = 1e4 / MPP
    with tifffile.TiffWriter(root / "wsis" / f"{HID}.tif", bigtiff=False) as tw:
        tw.write(img, tile=(256, 256), resolution=(res, res), resolutionunit="CENTIMETER", subifds=1,
                 photometric="rgb", compression="jpeg")
        tw.write(img[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb", compression="jpeg")
    meta = {"id": HID, "organ": "Brain", "species": "Mus musculus", "st_technology": "Visium",
            "oncotree_code": None, "patient": "mouse1", "disease_state": "Healthy", "preservation_method": "Fresh Frozen",
            "license": "CC BY 4.0", "dataset_title": "squidpy crop (test)", "study_link": "https://example.org",
            "pixel_size_um_embedded": MPP, "pixel_size_um_estimated": MPP * 1.01}
    (root / "metadata" / f"{HID}.json").write_text(json.dumps(meta))
    # HEST-style patches: top-left = centre - window // 2, bilinear resize to 224
    win = round(224 * 0.5 / MPP)
    pil = Image.fromarray(img)
    patches, coords = [], []
    for x, y in a.obsm["spatial"]:
        x0, y0 = int(x - win // 2), int(y - win // 2)
        patches.append(np.asarray(pil.crop((x0, y0, x0 + win, y0 + win)).resize((224, 224), Image.BILINEAR)))
        coords.append((x0, y0))
    with h5py.File(root / "patches" / f"{HID}.h5", "w") as f:
        ds = f.create_dataset("img", data=np.stack(patches))
        ds.attrs["patch_size_target"] = 224
        f["coords"] = np.array(coords, dtype=np.int64)
        f["barcode"] = np.array(a.obs_names, dtype="S")
    return root


def test_hest1k_import_recut(hest_dir, tmp_path):
    s = hestdata.read_hest1k(hest_dir, HID)
    path = hestdata.convert(s, tmp_path / "root")
    meta = hestdata.read_metadata(path)
    assert meta.id == HID and meta.technology == "visium" and meta.species == "Mus musculus"
    assert meta.organ == "Brain" and meta.patient == "mouse1" and meta.preservation == "fresh frozen"
    assert meta.pixel_size_um.trusted == "embedded" and meta.pixel_size_um.value == pytest.approx(MPP, rel=1e-3)
    assert not meta.pixel_size_um.flagged
    assert meta.qc.patches["224px_0.5um"].n_patches == 49
    assert meta.image.n_levels >= 2


def test_hest1k_import_hest_patches_via_cli(hest_dir, tmp_path):
    root = tmp_path / "root"
    r = CliRunner().invoke(app, ["convert", "hest1k", str(hest_dir), "--out", str(root), "--patches-from", "hest"])
    assert r.exit_code == 0, r.output
    o = hestdata.open_sample(root / "samples" / f"{HID}.zarr")
    stored = o.patches("224px_0.5um")["images"][:]
    with h5py.File(hest_dir / "patches" / f"{HID}.h5") as f:
        ref = f["img"][:]
    assert stored.shape == ref.shape
    assert np.abs(stored.astype(float) - ref.astype(float)).mean() < 3.0  # JPEG q90 of the same pixels
    assert hestdata.open_catalog(root)["id"].to_list() == [HID]
    bad = CliRunner().invoke(app, ["convert", "hest1k", str(hest_dir), "--out", str(root), "--id", "NOPE"])
    assert bad.exit_code == 1 and "NOPE" in bad.output
