"""Visium-family readers on the real fixtures: counts exact, coordinates exact, patches match the image."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import spatialdata
from PIL import Image

import hestdata
from hestdata.sources.tenx import read_10x_h5
from tests.conftest import leftovers, shared


def test_squidpy_anndata_49_spots_49_patches_match_direct_crop(squidpy_sample):
    d = shared("visium", "squidpy_mouse_brain_crop")
    src = ad.read_h5ad(d / "test_data.h5ad")
    o = hestdata.open_sample(squidpy_sample)
    assert isinstance(o.sdata, spatialdata.SpatialData)
    meta = o.metadata
    # neighbouring spots are 137 px apart = 100 µm -> 0.730 µm/px (the shared README's 0.615 assumed that
    # spot_diameter_fullres spans 55 µm; Space Ranger defines it for a 65 µm reference spot: 89.4 px -> 0.727)
    assert meta.pixel_size_um.value == pytest.approx(100 / 137, rel=0.005)
    assert meta.pixel_size_um.estimated_from.startswith("median nearest-neighbour")
    assert meta.qc.counts_integer is False  # log-normalised source, stored as given and flagged
    assert meta.qc.patches["224px_0.5um"].n_patches == 49
    table = o.sdata.tables["expression"]
    assert np.allclose(table.X.toarray(), src.X.toarray())
    g = o.patches("224px_0.5um")
    patches = g["images"][:]
    idx = g["obs_index"][:]
    assert patches.shape == (49, 224, 224, 3)
    img = Image.open(d / "test_img.jpg").convert("RGB")
    window = 224 * 0.5 / meta.pixel_size_um.value
    diffs = []
    for k, row in enumerate(idx):
        x, y = src.obsm["spatial"][row]
        ref = img.resize((224, 224), Image.Resampling.BILINEAR,
                         box=(x - window / 2, y - window / 2, x + window / 2, y + window / 2))
        diffs.append(np.abs(np.asarray(ref, dtype=float) - patches[k].astype(float)).mean())
    # JPEG q90 + Lanczos vs bilinear on the same exact box: a few grey levels at most
    assert max(diffs) < 6.0, max(diffs)
    assert np.mean(diffs) < 4.0


def test_squidpy_outs_black_hires_detected_and_lowres_used(tmp_path):
    d = shared("visium", "squidpy_mouse_brain_crop")
    with pytest.warns(UserWarning, match="blank"):
        s = hestdata.read_visium(d, sample_id="squidpy_outs")
    assert s.image is not None and s.image.kind == "lowres"
    path = hestdata.convert(s, tmp_path / "root", patches=[])
    meta = hestdata.read_metadata(path)
    assert any("hires image is blank" in w for w in meta.qc.warnings)
    # an explicitly given blank image is an error
    with pytest.raises(hestdata.InputError, match="blank"):
        hestdata.read_visium(d, sample_id="x", image=d / "spatial" / "tissue_hires_image.png")


def test_seurat_lowres_only_converts_and_refuses_fine_patches(tmp_path):
    d = shared("visium", "seurat_mouse_brain_anterior")
    root = tmp_path / "root"
    s = hestdata.read_visium(d, sample_id="seurat_anterior")
    with pytest.raises(hestdata.InputError) as exc:
        hestdata.convert(s, root)  # default 224px_0.5um
    assert leftovers(root) == []
    path = hestdata.convert(s, root, patches=[])
    o = hestdata.open_sample(path)
    best = o.metadata.image.pixel_size_um  # lowres: full-res µm/px / tissue_lowres_scalef
    assert best == pytest.approx(o.metadata.pixel_size_um.value / 0.051635113)
    msg = str(exc.value)
    assert "best available image is" in msg and f"{best:.4g} µm/px" in msg and "tissue_lowres_image.png" in msg
    fm = read_10x_h5(d / "filtered_feature_bc_matrix.h5")
    tab = o.sdata.tables["expression"]
    assert tab.X.dtype.kind == "i"
    assert (tab.X != fm.counts).nnz == 0  # counts exactly equal
    assert list(tab.obs_names) == fm.barcodes
    assert list(tab.var["original_name"]) == list(fm.features["name"])
    pos = pd.read_csv(d / "spatial" / "tissue_positions_list.csv", header=None, index_col=0)
    pos = pos.loc[tab.obs_names]
    assert np.array_equal(tab.obs["pxl_row_in_fullres"].to_numpy(), pos[4].to_numpy(float))
    assert np.array_equal(tab.obs["pxl_col_in_fullres"].to_numpy(), pos[5].to_numpy(float))
    assert np.array_equal(tab.obs["array_row"].to_numpy(), pos[2].to_numpy())
    assert o.metadata.image.kind == "lowres"
    assert o.metadata.species == "Mus musculus"
    # spots in µm, with the 55 µm diameter as radius 27.5
    spots = o.sdata.shapes["spots"]
    assert np.allclose(spots["radius"], 27.5)
    ps = o.metadata.pixel_size_um.value
    assert np.allclose(spots.geometry.x.to_numpy(), tab.obs["pxl_col_in_fullres"].to_numpy() * ps)
    # same-row neighbours are 138 px apart = 100 µm
    assert ps == pytest.approx(100 / 138, rel=0.005)
    # a coarse geometry the lowres image supports works
    path2 = hestdata.convert(s, tmp_path / "root2", patches=["32px_16um"])
    assert hestdata.read_metadata(path2).qc.patches["32px_16um"].n_patches > 1000


def test_visium_hd_bins_embedded_pixel_size(tmp_path):
    d = shared("visium_hd", "visiumio_mouse_brain")
    s = hestdata.read_visium_hd(d, sample_id="hd_brain")
    path = hestdata.convert(s, tmp_path / "root", patches=[])
    o = hestdata.open_sample(path)
    assert o.metadata.pixel_size_um.trusted == "embedded"
    assert o.metadata.pixel_size_um.value == pytest.approx(0.2738242950835738)
    fm = read_10x_h5(d / "binned_outputs" / "square_002um" / "filtered_feature_bc_matrix.h5")
    assert (o.sdata.tables["expression"].X != fm.counts).nnz == 0
    assert o.sdata.shapes["spots"].geometry.geom_type.unique().tolist() == ["Polygon"]  # 2 µm squares
    area = o.sdata.shapes["spots"].geometry.area.to_numpy()
    assert np.allclose(area, 4.0)
    # the MTX folder gives the same counts as the HDF5 file
    from hestdata.sources.tenx import read_10x_mtx

    mtx = read_10x_mtx(d / "binned_outputs" / "square_002um" / "filtered_feature_bc_matrix")
    assert (mtx.counts != fm.counts).nnz == 0 and mtx.barcodes == fm.barcodes
