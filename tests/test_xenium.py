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
        hestdata.convert(xs, tmp_path / "root")
    assert not (tmp_path / "root" / "samples" / "x.zarr").exists()


def test_missing_boundaries_is_an_error(tmp_path):
    d = shared("xenium", "sfe_jurkat_raji")
    copy = Path(shutil.copytree(d, tmp_path / "run"))
    for p in copy.glob("nucleus_boundaries.*"):
        p.chmod(0o644)
        p.unlink()
    with pytest.raises(hestdata.InputError, match="nucleus_boundaries"):
        read_xenium(copy, sample_id="x", pixel_size_um=PS, image_origin_um=ORIGIN)


def test_registered_he_gives_cell_and_pseudospot_pairs(tmp_path):
    """A synthetic H&E registered with a rotation: cell patches are centred on the cells, pairs stream."""
    from PIL import Image, ImageDraw

    d = shared("xenium", "sfe_jurkat_raji")
    xs0 = read_xenium(d, sample_id="x", pixel_size_um=PS, image_origin_um=ORIGIN)
    theta = np.deg2rad(5.0)
    a = np.array([[0.5 * np.cos(theta), -0.5 * np.sin(theta), 990.0],
                  [0.5 * np.sin(theta), 0.5 * np.cos(theta), 985.0], [0, 0, 1]])  # H&E px -> µm
    inv = np.linalg.inv(a)
    rng = np.random.default_rng(0)
    he = Image.fromarray(rng.integers(150, 230, size=(900, 900, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(he)
    cells = xs0.cells.obs[["x_um", "y_um"]].to_numpy()[:10]
    for x, y in cells:
        px, py, _ = inv @ np.array([x, y, 1.0])
        draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=(0, 0, 0))
    he_path = tmp_path / "he.png"
    he.save(he_path)
    root = tmp_path / "root"
    affine = ",".join(f"{v:.10f}" for v in a[:2].ravel())
    labels = tmp_path / "cell_labels.csv"  # per-cell labels keyed by cell id: the dotted cells and the others
    labels.write_text("cell_id,label\n" + "".join(f"{c},{'dotted' if i < 10 else 'plain'}\n"
                                                  for i, c in enumerate(xs0.cells.obs_names)))
    r = CliRunner().invoke(app, ["convert", "xenium", str(d), "--out", str(root), "--id", "xr",
                                 "--pixel-size-um", str(PS), "--image-origin-um", "1000,1000",
                                 "--he-image", str(he_path), "--he-affine-um", affine, "--patch", "64px_0.5um",
                                 "--labels", str(labels)])
    assert r.exit_code == 0, r.output
    path = root / "samples" / "xr.zarr"
    cell_ds = hestdata.PatchDataset(root, patch="cells-64px_0.5um", decode="cpu", labels="label")
    assert cell_ds.classes == ["dotted", "plain"] and hestdata.read_metadata(path).qc.labels.n_spots_labelled == 526
    got = {cell_ds[i]["obs_id"]: int(cell_ds[i]["label"]) for i in range(len(cell_ds))}
    assert all(v == (0 if k in set(xs0.cells.obs_names[:10]) else 1) for k, v in got.items())
    # cell classification over two "patients" (the same run converted twice): the dotted cells are found
    r = CliRunner().invoke(app, ["convert", "xenium", str(d), "--out", str(root), "--id", "xr2",
                                 "--pixel-size-um", str(PS), "--image-origin-um", "1000,1000", "--meta", "patient=P2",
                                 "--he-image", str(he_path), "--he-affine-um", affine, "--patch", "64px_0.5um",
                                 "--labels", str(labels)])
    assert r.exit_code == 0, r.output
    task = tmp_path / "cells.yaml"
    task.write_text("name: dotted_cells\ntype: cell_classification\nsamples: \"technology = 'xenium'\"\n"
                    "group_by: id\nlabel: label\npatch: cells-64px_0.5um\noptions: {shots: [4], shot_seeds: 2, "
                    "n_boot: 50}\n")
    rows = {x["metric"]: x for x in hestdata.run_benchmark(root, "color-stats", task, cache_dir=tmp_path / "c")}
    assert rows["linear_balanced_accuracy"]["folds"] == ["xr", "xr2"] and rows["linear_macro_auroc_pooled"]["mean"] > 0.9
    task.write_text(task.read_text().replace("patch: cells-64px_0.5um", "patch: 64px_0.5um"))
    from hestdata.errors import InputError

    with pytest.raises(InputError, match="cells-<geometry>"):
        hestdata.run_benchmark(root, "color-stats", task)
    meta = hestdata.read_metadata(path)
    assert set(meta.qc.patches) == {"cells-64px_0.5um", "pseudospots_55um-64px_0.5um"}
    assert meta.qc.patches["cells-64px_0.5um"].n_patches == 526
    g = hestdata.open_sample(path).patches("cells-64px_0.5um")
    imgs = g["images"][:10].astype(float).mean(axis=3)
    assert (imgs[:, 30:34, 30:34].mean(axis=(1, 2)) < 60).all()  # the dot sits at the patch centre
    sd = spatialdata.read_zarr(path)
    from spatialdata.transformations import get_transformation

    tr = get_transformation(sd.images["he"], "global")
    m = tr.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    np.testing.assert_allclose(m, a, atol=1e-8)
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    ds = hestdata.PatchDataset(root, patch="pseudospots_55um-64px_0.5um", decode="cpu")
    batch = next(iter(hestdata.make_loader(ds, batch_size=16, shuffle=False)))
    tab = sd.tables["expression_pseudospots_55um"]
    assert ds.genes == list(tab.var_names)
    rows = hestdata.open_sample(path).patches("pseudospots_55um-64px_0.5um")["obs_index"][:16]  # scan order
    np.testing.assert_allclose(batch["expression"].numpy(), np.log1p(tab.X[rows].toarray()), rtol=1e-6)
    assert batch["obs_id"][:3] == list(tab.obs_names[rows[:3]])


def test_10x_alignment_csv_composes_with_pixel_size_and_origin(tmp_path):
    from hestdata.convert.cells import he_to_um
    from hestdata.sources.xenium import read_alignment

    csv = tmp_path / "align.csv"
    csv.write_text("2.0,0,10\n0,2.0,20\n0,0,1\n")
    m = read_alignment(csv)
    d = shared("xenium", "sfe_jurkat_raji")
    xs = read_xenium(d, sample_id="x", pixel_size_um=PS, image_origin_um=ORIGIN)
    xs.he_affine, xs.he_affine_kind = m, "morphology_px"
    a = he_to_um(xs, PS)
    np.testing.assert_allclose(a @ [0, 0, 1], [1000 + 10 * PS, 1000 + 20 * PS, 1])
    np.testing.assert_allclose(a @ [1, 0, 1] - a @ [0, 0, 1], [2 * PS, 0, 0])
    (tmp_path / "bad.csv").write_text("1,2\n3,4\n")
    with pytest.raises(hestdata.InputError, match="3x3"):
        read_alignment(tmp_path / "bad.csv")
