"""The her2st sections: the project's first real paired dataset."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import spatialdata

import hestdata
from tests.conftest import HER2ST, her2st_inputs


@pytest.mark.parametrize("section", [s for _, s, _, _ in HER2ST])
def test_her2st_section(her2st_root, section):
    counts, spots, _ = her2st_inputs(section)
    path = her2st_root / "samples" / f"her2st_{section}.zarr"
    sdata = spatialdata.read_zarr(path)
    meta = hestdata.read_metadata(path)
    assert meta.pixel_size_um.trusted == "estimated"
    assert meta.pixel_size_um.value == pytest.approx(0.690, rel=0.02)
    src = pd.read_csv(counts, sep="\t", index_col=0)
    tab = sdata.tables["expression"]
    assert tab.n_obs == len(src)
    assert list(tab.obs_names) == list(src.index.astype(str))
    assert np.array_equal(tab.X.toarray(), src.to_numpy())  # exact raw counts
    assert tab.X.dtype.kind == "i"
    assert list(tab.var["original_name"]) == list(src.columns)
    # every counted spot paired with a patch
    pq = meta.qc.patches["224px_0.5um"]
    assert pq.n_patches == tab.n_obs
    assert pq.n_skipped_off_image == pq.n_skipped_low_tissue == 0
    g = hestdata.open_sample(path).patches("224px_0.5um")
    assert np.array_equal(np.sort(g["obs_index"][:]), np.arange(tab.n_obs))  # scan order, each row once
    # spot coordinates equal the spot file's pixel coordinates
    sp = pd.read_csv(spots, sep="\t")
    sp.index = sp["x"].astype(str) + "x" + sp["y"].astype(str)
    sp = sp.loc[tab.obs_names]
    assert np.array_equal(tab.obs["pxl_col_in_fullres"].to_numpy(), sp["pixel_x"].to_numpy(float))
    assert np.array_equal(tab.obs["pxl_row_in_fullres"].to_numpy(), sp["pixel_y"].to_numpy(float))
    assert meta.qc.n_positions_without_counts == len(pd.read_csv(spots, sep="\t")) - len(src)
    assert meta.species == "Homo sapiens"
    assert "tissue" in sdata.shapes and 0.05 < meta.qc.tissue_fraction < 0.9


def test_her2st_catalog(her2st_root):
    cat = hestdata.open_catalog(her2st_root)
    assert sorted(cat["id"].to_list()) == ["her2st_B4", "her2st_C2", "her2st_C3"]
    assert set(cat["technology"]) == {"st"}
    assert cat.filter(cat["patient"] == "C").height == 2
    assert (cat["n_patches"] == cat["n_obs"]).all()
    rep = hestdata.validate(her2st_root)
    assert rep.ok, rep.violations
