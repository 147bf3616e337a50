"""Whole-slide images: pixel size, tiles vs OpenSlide, tissue counts, bounded memory, MIL, feature export."""

from __future__ import annotations

import math
import tracemalloc

import h5py
import numpy as np
import openslide
import pandas as pd
import pytest
from PIL import Image

import hestdata
from hestdata.errors import InputError
from hestdata.sources.wsi import open_wsi, read_wsi
from tests.conftest import shared

GEOM = "224px_1.14286um"


@pytest.fixture(scope="module")
def cmu(tmp_path_factory):
    svs = shared("wsi", "CMU-1-Small-Region.svs")
    root = tmp_path_factory.mktemp("wsi") / "root"
    path = hestdata.convert(read_wsi(svs, sample_id="cmu1"), root, metadata={"patient": "P1"})
    return svs, root, path


def test_pixel_size_and_refusals(tmp_path):
    s = open_wsi(shared("wsi", "CMU-1-Small-Region.svs"))
    assert s.pixel_size.embedded == pytest.approx(0.499) and s.magnification == "20x"
    boxes = shared("wsi", "boxes_pyramid_synthetic.tiff")
    with pytest.raises(hestdata.InputError, match="never guessed"):  # its 72-dpi tag is not a scan resolution
        open_wsi(boxes)
    b = read_wsi(boxes, sample_id="boxes", pixel_size_um=2.0)
    assert len(b.slide.level_dimensions) == 4
    path = hestdata.convert(b, tmp_path / "root", patches=["16px_4um"], min_tissue_fraction=0.0)
    meta = hestdata.read_metadata(path)
    assert meta.pixel_size_um.trusted == "user" and meta.image.width_px == 300


def test_tiles_equal_openslide_read_region(cmu):
    svs, root, path = cmu
    meta = hestdata.read_metadata(path)
    q = meta.qc.patches[GEOM]
    s = openslide.OpenSlide(str(svs))
    w_um, h_um = s.dimensions[0] * 0.499, s.dimensions[1] * 0.499
    assert q.n_patches + q.n_skipped_low_tissue + q.n_skipped_background == int(w_um // 256) * int(h_um // 256)
    assert q.n_patches > 0 and q.n_skipped_low_tissue > 0
    g = hestdata.open_sample(path).patches(GEOM)
    tiles, centres = g["images"][:], g["centers_um"][:]
    fov = 224 * (256 / 224)
    for tile, (cx, cy) in zip(tiles, centres, strict=True):
        x0, y0 = (cx - fov / 2) / 0.499, (cy - fov / 2) / 0.499
        side = fov / 0.499
        xi, yi = math.floor(x0), math.floor(y0)
        region = s.read_region((xi, yi), 0, (int(side) + 3, int(side) + 3)).convert("RGB")
        ref = np.asarray(region.resize((224, 224), Image.Resampling.LANCZOS,
                                       box=(x0 - xi, y0 - yi, x0 - xi + side, y0 - yi + side)))
        from hestdata.store.codecs import decode_jpeg, encode_jpeg

        jpeg_only = np.abs(decode_jpeg(encode_jpeg(ref, 90, "420")).astype(float) - ref).mean()
        ours = np.abs(ref.astype(float) - tile.astype(float)).mean()
        assert ours < jpeg_only + 0.5  # the stored tile is the reference up to its own JPEG q90 error


def test_memory_stays_bounded(tmp_path, cmu):
    import tifffile

    svs, _, _ = cmu
    base = np.asarray(openslide.OpenSlide(str(svs)).read_region((0, 0), 0, (2048, 2048)).convert("RGB"))
    big = tmp_path / "big.tif"
    h, w = 12288, 4096  # tall enough that the constant (a few strips in flight) is well under half of level 0

    def tiles():
        for ty in range(0, h, 256):
            for tx in range(0, w, 256):
                yield base[ty % 2048:ty % 2048 + 256, tx % 2048:tx % 2048 + 256]

    tifffile.imwrite(big, tiles(), shape=(h, w, 3), dtype=np.uint8, tile=(256, 256), photometric="rgb",
                     compression="jpeg", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    slide = open_wsi(big)
    assert slide.backend == "openslide" and slide.pixel_size.embedded == pytest.approx(0.5)
    level0 = h * w * 3
    tracemalloc.start()
    path = hestdata.convert(read_wsi(big, sample_id="big"), tmp_path / "root", min_tissue_fraction=0.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 0.5 * level0, f"peak {peak / 1e6:.0f} MB vs level 0 {level0 / 1e6:.0f} MB"
    assert hestdata.read_metadata(path).image.n_levels >= 4


def test_attention_mil_recovers_a_sparse_signal():
    from hestdata.bench.tasks.slide_mil import slide_mil_protocol

    rng = np.random.default_rng(0)
    bags, labels = {}, {}
    for i in range(40):
        x = rng.normal(size=(60, 16)).astype(np.float32)
        y = i % 2
        if y:
            x[:3, 0] += 6.0  # the label lives in 3 of 60 patches
        bags[f"p{i}"], labels[f"p{i}"] = x, y
    res = slide_mil_protocol(bags, labels, n_folds=4, epochs=30, seed=0)
    tested = [p for f in res.folds for p in f["test_patients"]]
    assert sorted(tested) == sorted(bags)  # every patient tested once: never split across folds
    assert res.mean("abmil_auroc") > 0.9
    assert res.mean("meanpool_auroc") < res.mean("abmil_auroc")
    w = res.attention["p1"]
    assert w[:3].sum() > 0.3  # attention finds the informative patches


def test_transformer_mil_learns_what_mean_pooling_cannot():
    """Both classes have the same expected bag mean: positives hold 4 patches at +6 on feature 0, negatives 8
    patches at +3. Only a model that looks at patches one by one (and compares them) can tell them apart."""
    from hestdata.bench.tasks.slide_mil import slide_mil_protocol

    rng = np.random.default_rng(3)
    bags, labels, coords = {}, {}, {}
    for i in range(40):
        x = rng.normal(size=(80, 8)).astype(np.float32)
        y = i % 2
        if y:
            x[:4, 0] += 6.0
        else:
            x[:8, 0] += 3.0
        perm = rng.permutation(80)
        bags[f"p{i}"], labels[f"p{i}"] = x[perm], y
        coords[f"p{i}"] = np.column_stack([np.arange(80) % 10, np.arange(80) // 10]).astype(float) * 112.0
    res = slide_mil_protocol(bags, labels, n_folds=4, epochs=40, seed=0, aggregator="transformer", coords=coords)
    assert {"transformer_auroc", "transformer_balanced_accuracy"} <= set(res.folds[0])
    assert res.mean("transformer_auroc") > 0.9, res.folds
    assert res.mean("meanpool_auroc") < 0.75, res.folds  # the mean carries no signal
    w = res.attention["p1"]
    assert w.shape == (80,) and np.isclose(w.sum(), 1.0, atol=1e-4)
    with pytest.raises(ValueError, match="aggregator"):
        slide_mil_protocol(bags, labels, aggregator="mean")


def test_export_stamp_and_trident(cmu, tmp_path):
    from typer.testing import CliRunner

    from hestdata.cli import app

    _, root, path = cmu
    n = hestdata.read_metadata(path).qc.patches[GEOM].n_patches
    for layout in ("stamp", "trident"):
        r = CliRunner().invoke(app, ["export", layout, str(root), str(tmp_path / "out"), "--encoder", "color-stats"])
        assert r.exit_code == 0, r.output
    stamp = next((tmp_path / "out").glob("color-stats-*/cmu1.h5"))
    with h5py.File(stamp) as f:
        assert f["feats"].dtype == np.float16 and f["feats"].shape == (n, 38)
        assert f["coords"].shape == (n, 2) and f["coords"].dtype == np.float64
        assert f.attrs["unit"] == "um" and f.attrs["tile_size_px"] == 224
        assert f.attrs["tile_size_um"] == pytest.approx(256) and f.attrs["feat_type"] == "tile"
        assert {"stamp_version", "extractor", "code_hash"} <= set(f.attrs)
        c = f["coords"][:] / 256.0
        assert np.allclose(c, np.round(c), atol=1e-6)  # top-left corners on the 256 µm grid
    trident = tmp_path / "out" / "features_color-stats" / "cmu1.h5"
    with h5py.File(trident) as f:
        assert f["features"].shape == (n, 38) and f["coords"].dtype == np.int64
        a = dict(f["coords"].attrs)
        assert a["patch_size"] == 224 and a["patch_size_level0"] == round(256 / 0.499)
        assert a["level0_magnification"] == 20 and a["level0_width"] == 2220 and a["name"] == "cmu1"


def test_slide_mil_task_and_heatmap(tmp_path):
    import yaml

    from hestdata.bench.heatmap import render_heatmap

    svs = shared("wsi", "CMU-1-Small-Region.svs")
    root = tmp_path / "root"
    for i in range(4):
        hestdata.convert(read_wsi(svs, sample_id=f"s{i}"), root, min_tissue_fraction=0.2,
                         metadata={"patient": f"P{i}", "cohort": "A" if i < 2 else "B"})
    (tmp_path / "labels.csv").write_text("PATIENT,FILENAME,MSI\nP0,s0.svs,high\nP1,s1.svs,low\nP2,s2.svs,high\n"
                                         "P3,s3.svs,low\n")
    task = tmp_path / "mil.yaml"
    task.write_text(yaml.safe_dump({"name": "toy_mil", "type": "slide_mil", "samples": "technology = 'wsi'",
                                    "group_by": "patient", "patch": GEOM, "labels": "labels.csv", "label": "MSI",
                                    "options": {"n_folds": 2, "epochs": 3}}))
    rows = hestdata.run_benchmark(root, "color-stats", task)
    per_fold = {"abmil_auroc", "abmil_balanced_accuracy", "meanpool_auroc", "meanpool_balanced_accuracy"}
    pooled = {f"{m}_pooled_{k}" for m in ("abmil", "meanpool") for k in ("auroc", "ap", "f1")}
    assert {r["metric"] for r in rows} == per_fold | pooled
    assert all(len(r["fold_values"]) == (2 if r["metric"] in per_fold else 1) for r in rows)
    figs = list((root / "figures" / "toy_mil").glob("*/roc_pr.png"))  # pooled out-of-fold ROC/PR
    assert len(figs) == 1
    assert sorted(p.name for p in figs[0].parent.glob("*.csv")) == ["pr_low.csv", "predictions.csv",
                                                                    "roc_low.csv"]  # positive: the 2nd class
    pred = pd.read_csv(figs[0].parent / "predictions.csv")
    assert sorted(pred["patient"]) == ["P0", "P1", "P2", "P3"] and set(pred["predicted"]) <= {"high", "low"}
    assert np.allclose(pred[["p_high", "p_low"]].sum(axis=1), 1.0, atol=1e-5)
    maps = sorted((root / "heatmaps" / "toy_mil").glob("*/s*.png"))
    assert [m.name for m in maps] == ["s0.png", "s1.png", "s2.png", "s3.png"]  # held-out attention, every slide
    # STAMP's deploy: trained on cohort A (P0, P1), scored unchanged on cohort B (P2, P3)
    doc = yaml.safe_load(task.read_text())
    doc["name"], doc["options"] = "toy_mil_external", {"epochs": 3, "heatmaps": False,
                                                       "deploy": {"column": "cohort", "train": "A", "test": "B"}}
    task.write_text(yaml.safe_dump(doc))
    rows = {r["metric"]: r for r in hestdata.run_benchmark(root, "color-stats", task)}
    assert rows["abmil_auroc"]["folds"] == ["0"] and 0 <= rows["abmil_pooled_auroc"]["mean"] <= 1
    ext = next((root / "figures" / "toy_mil_external").glob("*/predictions.csv"))
    assert sorted(pd.read_csv(ext)["patient"]) == ["P2", "P3"]  # only the external cohort is scored
    doc["options"]["deploy"] = {"column": "cohort", "train": "A", "test": "C"}
    task.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match="neither"):
        hestdata.run_benchmark(root, "color-stats", task)
    n = hestdata.read_metadata(root / "samples" / "s0.zarr").qc.patches[GEOM].n_patches
    png = render_heatmap(root / "samples" / "s0.zarr", GEOM, np.arange(n), tmp_path / "h.png")
    assert Image.open(png).size[0] > 100
    assert hestdata.validate(root).ok  # heatmaps are derived artefacts
