"""Curation units: pixel size, genes, pyramid, tissue."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hestdata.curation.genes import infer_species, unify_genes
from hestdata.curation.pixel_size import SpotGrid, estimate_from_grid, resolve_pixel_size
from hestdata.curation.pyramid import downsample2x, iter_pyramid, pyramid_shapes
from hestdata.curation.tissue import mask_to_polygons, segment_tissue
from hestdata.errors import InputError
from hestdata.model import PixelSizeEvidence

VISIUM_GRID = SpotGrid("hexagonal", 100.0)


def _visium_obs(ps: float, angle_deg: float) -> pd.DataFrame:
    rows, cols = np.meshgrid(np.arange(10), np.arange(0, 20))
    keep = (rows + cols) % 2 == 0
    rows, cols = rows[keep], cols[keep]
    x_um, y_um = cols * 50.0, rows * 50.0 * math.sqrt(3)
    a = math.radians(angle_deg)
    x = (x_um * math.cos(a) - y_um * math.sin(a)) / ps + 1000
    y = (x_um * math.sin(a) + y_um * math.cos(a)) / ps + 1000
    return pd.DataFrame({"array_row": rows, "array_col": cols, "pxl_col_in_fullres": x, "pxl_row_in_fullres": y})


@pytest.mark.parametrize("angle", [0.0, 7.5, 90.0])
def test_grid_estimate_is_rotation_invariant(angle):
    obs = _visium_obs(0.3774, angle)
    ps, warns = resolve_pixel_size(PixelSizeEvidence(), VISIUM_GRID, obs, "t")
    assert ps.trusted == "estimated" and ps.value == pytest.approx(0.3774, rel=1e-6)
    assert warns == []


def test_grid_estimate_ignores_outliers():
    obs = _visium_obs(0.5, 0)
    obs.loc[0, "pxl_col_in_fullres"] += 500
    assert estimate_from_grid(np.column_stack([obs.array_col * 50.0, obs.array_row * 50.0 * math.sqrt(3)]),
                              obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()) == pytest.approx(0.5, rel=1e-3)


def test_embedded_vs_estimated_disagreement_is_flagged():
    obs = _visium_obs(0.5, 0)
    ps, warns = resolve_pixel_size(PixelSizeEvidence(embedded=0.55), VISIUM_GRID, obs, "img.tif")
    # physical evidence (the 100 µm spot grid) beats image tags that disagree by more than 5 %; both recorded
    assert ps.trusted == "estimated" and ps.value == pytest.approx(0.5) and ps.embedded == 0.55
    assert ps.flagged and ps.disagreement_pct == pytest.approx(10.0) and ps.unit_confusion is None
    assert warns and "disagrees" in warns[0] and "estimated" in warns[0]
    ok, warns = resolve_pixel_size(PixelSizeEvidence(embedded=0.51), VISIUM_GRID, obs, "img.tif")
    assert ok.trusted == "embedded" and ok.value == 0.51 and not ok.flagged and warns == []  # within 5 %: tags
    tenx, warns = resolve_pixel_size(PixelSizeEvidence(embedded=0.05), VISIUM_GRID, obs, "img.tif")
    assert tenx.trusted == "estimated" and tenx.value == pytest.approx(0.5) and "x10" in tenx.unit_confusion
    assert "likely a unit confusion: x10" in warns[0]
    inch, _ = resolve_pixel_size(PixelSizeEvidence(embedded=0.5 * 2.54), VISIUM_GRID, obs, "img.tif")
    assert "x2.54" in inch.unit_confusion
    # no physical evidence (a slide, a multiplex image): the tags are trusted
    wsi, warns = resolve_pixel_size(PixelSizeEvidence(embedded=0.25), None, None, "s.svs")
    assert wsi.trusted == "embedded" and wsi.value == 0.25 and not wsi.flagged and warns == []


def test_user_pixel_size_wins_and_bad_values_fail():
    obs = _visium_obs(0.5, 0)
    ps, _ = resolve_pixel_size(PixelSizeEvidence(user=0.5), VISIUM_GRID, obs, "x")
    assert ps.trusted == "user"
    for bad in (0, -1, float("inf")):
        with pytest.raises(InputError, match="pixel size"):
            resolve_pixel_size(PixelSizeEvidence(user=bad), VISIUM_GRID, obs, "x")


def test_unknown_pixel_size_is_an_error():
    obs = pd.DataFrame({"array_row": [-1], "array_col": [-1], "pxl_col_in_fullres": [1.0], "pxl_row_in_fullres": [1.0]})
    with pytest.raises(InputError, match="pixel size unknown"):
        resolve_pixel_size(PixelSizeEvidence(), VISIUM_GRID, obs, "x")


def test_gene_unification_rules():
    var = pd.DataFrame({"gene_id": ["", "ENSG00000141510", "", "", "", "ENSG00000000003", "ENSG00000000005"],
                        "feature_type": ["Gene Expression"] * 6 + ["Antibody Capture"]},
                       index=["TP53", "ENSG00000141510", "FAM132A", "tp53x", "NOTAGENE", "TSPAN6", "CD3"])
    new, qc, species = unify_genes(var, None, "f.h5")
    assert species == "Homo sapiens"
    assert new["original_name"].tolist() == list(var.index)
    # TP53 approved; the Ensembl-id feature maps to TP53 too and is suffixed, never dropped
    assert new.index[0] == "TP53" and new.index[1] == "TP53_ENSG00000141510"
    assert new.index[2] == "C1QTNF12" and new["mapped_by"].iloc[2] == "previous_symbol"
    assert new.index[4] == "NOTAGENE" and new["mapped_by"].iloc[4] == "unmapped"
    assert new.index[6] == "CD3" and new["mapped_by"].iloc[6] == "kept"  # non-gene features keep their names
    assert qc.n_duplicates_resolved == 1 and qc.n_unmapped >= 1
    assert new.index.is_unique


def test_species_inference():
    assert infer_species(["Gnai3", "Pbsn", "Cdc45", "Scml2", "Apoh"], [""] * 5) == "Mus musculus"
    assert infer_species(["A"], ["ENSMUSG00000000001"]) == "Mus musculus"
    assert infer_species(["TP53", "EGFR", "KRAS", "MYC", "BRCA1"], [""] * 5) == "Homo sapiens"
    assert infer_species(["foo", "bar", "baz"], [""] * 3) == "unknown"


def test_cascaded_pyramid_equals_level_by_level():
    a = np.random.default_rng(0).integers(0, 255, (1001, 777, 3), dtype=np.uint8)
    shapes = pyramid_shapes(1001, 777, 8)
    out = [np.zeros(s + (3,), np.uint8) for s in shapes]
    seen = [np.zeros(s[0], int) for s in shapes]
    for k, r, s in iter_pyramid(a, len(shapes), strip_rows=32):
        out[k][r:r + len(s)] = s
        seen[k][r:r + len(s)] += 1
    ref = a
    for k in range(1, len(shapes)):
        ref = downsample2x(ref)
        assert np.array_equal(ref, out[k])
    assert all((s == 1).all() for s in seen)
    u16 = np.arange(16, dtype=np.uint16).reshape(4, 4, 1) * 1000
    assert downsample2x(u16)[0, 0, 0] == round((0 + 1000 + 4000 + 5000) / 4)


def test_tissue_mask_and_polygons_keep_large_holes():
    img = np.full((400, 400, 3), 240, np.uint8)
    img[50:350, 50:350] = (180, 90, 160)  # stained square
    img[130:270, 130:270] = 240  # a 140x140 px hole = 0.49 mm² at 5 µm/px -> kept as a hole
    img[80:84, 80:84] = 240  # tiny hole -> filled
    tm = segment_tissue(img, 5.0)
    assert tm.mask[60, 60] and tm.mask[82, 82] and not tm.mask[200, 200] and not tm.mask[10, 10]
    polys = mask_to_polygons(tm)
    assert len(polys) == 1 and len(polys[0].interiors) == 1
    assert polys[0].area == pytest.approx((300 * 300 - 140 * 140) * 25, rel=0.03)
    frac = tm.box_fraction(np.array([300.0, 1000.0]), np.array([300.0, 1000.0]),
                           np.array([550.0, 1250.0]), np.array([550.0, 1250.0]))
    assert frac[0] == pytest.approx(1.0) and frac[1] == pytest.approx(0.0)


def test_disk_closing_equals_scipys_binary_closing():
    """The distance-transform closing used for tissue masks is scipy's binary_closing by skimage's disk, border
    counted as background, pixel for pixel (random masks, masks touching the border, blobs far from every border
    (the transform runs on the box around them), empty masks, radii 1-15)."""
    from scipy import ndimage
    from skimage import morphology

    from hestdata.curation.tissue import disk_closing

    rng = np.random.default_rng(0)
    for trial in range(12):
        h, w = rng.integers(20, 200, 2)
        m = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(1, 6)) > rng.uniform(0.45, 0.55)
        if trial % 3 == 0:
            m[:3], m[:, -2:] = True, True
        elif trial % 3 == 1:  # blobs in the middle only, at distances around the radius from each other
            keep = np.zeros_like(m)
            keep[h // 3:2 * h // 3, w // 4:3 * w // 4] = True
            m &= keep
        if trial == 11:
            m[:] = False
        for r in (1, 4, 15):
            want = ndimage.binary_closing(m, structure=morphology.disk(r), border_value=0)
            assert (disk_closing(m, r) == want).all(), (trial, r)
