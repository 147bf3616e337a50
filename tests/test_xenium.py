"""Xenium on the shared sfe_jurkat_raji crop: no experiment.xenium, no OME physical size — both explicit."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import spatialdata
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from hestdata.convert_xenium import convert_xenium
from hestdata.sources.xenium import read_xenium
from tests.conftest import shared

# the fixture's 237 px DAPI crop covers the transcripts' 1000–1400 µm window: 8x-binned Xenium pixels
PS, ORIGIN = 0.2125 * 8, (1000.0, 1000.0)


@pytest.fixture(scope="module")
def xen(tmp_path_factory):
    d = shared("xenium", "sfe_jurkat_raji")
    root = tmp_path_factory.mktemp("xenium") / "root"
    r = CliRunner().invoke(app, ["convert", "xenium", str(d), "--out", str(root), "--id", "jurkat_raji",
                                 "--pixel-size-um", str(PS), "--image-origin-um", "1000,1000",
                                 "--pseudospot-um", "55", "--pseudospot-um", "100"])
    assert r.exit_code == 0, r.output
    return d, root / "samples" / "jurkat_raji.zarr"


def test_counts_equal_the_source_files(xen):
    d, path = xen
    sd = spatialdata.read_zarr(path)
    cells = pd.read_parquet(d / "cells.parquet")
    tx = pd.read_parquet(d / "transcripts.parquet")
    tab = sd.tables["expression"]
    assert tab.n_obs == len(cells) == len(sd.shapes["cells"]) == len(sd.shapes["nuclei"])
    assert len(sd.points["transcripts"].compute()) == len(tx)
    with h5py.File(d / "cell_feature_matrix.h5") as f:
        names = [n.decode() for n in f["matrix/features/name"][:]]
        types = [t.decode() for t in f["matrix/features/feature_type"][:]]
        import scipy.sparse as sp

        m = sp.csc_matrix((f["matrix/data"][:], f["matrix/indices"][:], f["matrix/indptr"][:]),
                          shape=tuple(f["matrix/shape"][:]))
    totals = dict(zip(names, np.asarray(m.sum(axis=1)).ravel(), strict=True))
    genes = [n for n, t in zip(names, types, strict=True) if t == "Gene Expression"]
    ours = dict(zip(tab.var["original_name"], np.asarray(tab.X.sum(axis=0)).ravel(), strict=True))
    assert set(ours) == set(genes) and all(ours[g] == totals[g] for g in genes)
    controls = tab.uns["control_features"]["name"]
    assert set(controls) == set(names) - set(genes)
    assert np.array_equal(tab.obsm["control_counts"].sum(axis=0), [totals[c] for c in controls])
    meta = hestdata.read_metadata(path)
    assert meta.pixel_size_um.trusted == "user" and meta.qc.n_transcripts == len(tx)
    assert sd.images["if"]["scale0"]["image"].shape == (1, 237, 237)
    assert hestdata.validate(path.parent.parent).ok


def test_pseudospots_sum_to_the_transcripts_inside(xen):
    d, path = xen
    sd = spatialdata.read_zarr(path)
    tx = pd.read_parquet(d / "transcripts.parquet")
    with h5py.File(d / "cell_feature_matrix.h5") as f:
        genes = {n.decode() for n, t in zip(f["matrix/features/name"][:], f["matrix/features/feature_type"][:],
                                            strict=True) if t.decode() == "Gene Expression"}
    ok = tx[tx["feature_name"].isin(genes) & (tx["qv"] >= 20)]
    for d_um in (55, 100):
        tab = sd.tables[f"expression_pseudospots_{d_um}um"]
        assert tab.X.sum() == len(ok)  # square tiling: every counted transcript is inside exactly one spot
        shapes = sd.shapes[f"pseudospots_{d_um}um"]
        for sid in tab.obs_names[:5]:
            x0, y0, x1, y1 = shapes.loc[sid].geometry.bounds
            inside = ok[(ok.x_location >= x0) & (ok.x_location < x1) & (ok.y_location >= y0) & (ok.y_location < y1)]
            assert tab[sid].X.sum() == len(inside)


def test_hex_pseudospots_count_transcripts_within_the_circles(xen):
    d, _ = xen
    from hestdata.curation.pseudospots import make_pseudospots

    xs = read_xenium(d, sample_id="x", pixel_size_um=PS, image_origin_um=ORIGIN)
    genes = list(xs.cells.var_names)
    spots = make_pseudospots(xs.transcripts, genes, 55.0, "hex", 20.0)
    t = xs.transcripts
    ok = t[t["gene"].astype(str).isin(genes) & (t["qv"] >= 20)]
    xy = ok[["x", "y"]].to_numpy()
    within = sum(int((np.hypot(*(xy - c).T) <= 27.5).sum()) for c in spots.centres_um)
    assert spots.counts.sum() == within and 0 < within < len(ok)


def test_pixel_size_and_extent_are_explicit(tmp_path):
    d = shared("xenium", "sfe_jurkat_raji")
    with pytest.raises(hestdata.InputError, match="--pixel-size-um"):
        read_xenium(d, sample_id="x")
    xs = read_xenium(d, sample_id="x", pixel_size_um=0.2125)
    with pytest.raises(hestdata.InputError, match="5260 of 5260 transcripts lie outside the morphology image"):
        convert_xenium(xs, tmp_path / "root")
    assert not (tmp_path / "root" / "samples" / "x.zarr").exists()


def test_missing_boundaries_is_an_error(tmp_path):
    d = shared("xenium", "sfe_jurkat_raji")
    copy = Path(shutil.copytree(d, tmp_path / "run"))
    for p in copy.glob("nucleus_boundaries.*"):
        p.chmod(0o644)
        p.unlink()
    with pytest.raises(hestdata.InputError, match="nucleus_boundaries"):
        read_xenium(copy, sample_id="x", pixel_size_um=PS, image_origin_um=ORIGIN)
