"""KRONOS-style cell phenotyping on the shared IMC ROIs: cell-centred patches, KRONOS's per-marker
normalisation, spatial folds, a balanced linear probe; a planted marker-defined class is found, shuffled labels
and a constant encoder sit at chance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hestdata.bench.tasks.phenotyping import (
    cell_centred_patches,
    cell_phenotyping_protocol,
    kronos_normalise,
    marker_means,
    marker_scale,
    marker_stats,
    segment_cells,
    spatial_folds,
)
from hestdata.sources.multiplex import read_multiplex

IMC = Path(__file__).resolve().parents[2] / "shared" / "data" / "multiplex" / "imc_bodenmiller" / "analysis"


@pytest.fixture(scope="module")
def rois(tmp_path_factory):
    mapping = tmp_path_factory.mktemp("map") / "mapping.csv"
    mapping.write_text("channel,marker\n107Ag,-\n")  # Ag107 is a background metal, not a marker
    out = []
    for f in sorted((IMC / "ometiff").glob("*/*_ac.ome.tiff")):
        s = read_multiplex(f, sample_id=f.stem.split(".")[0], panel=IMC / "cpout" / "panel.csv", mapping=mapping)
        out.append((s.image.astype(np.float32), [m.name for m in s.markers]))
    assert len(out) == 3
    return out


def _planted(rois, seed=0):
    """Cells = peaks of the Cytokeratin 5 channel (the mock data's most cell-like); half of them get a YBX1 blob
    (sigma 1.5 px, 3 x the channel's 99th percentile): the class 'YBX1+'."""
    rng = np.random.default_rng(seed)
    images, centres, labels = [], [], []
    for img, names in rois:
        ck5, ybx = names.index("CYTOKERATIN 5"), names.index("YBX1")
        c = segment_cells(img, ck5, min_distance_px=3)
        lab = rng.permutation(np.arange(len(c)) % 2)
        im = img.copy()
        yy, xx = np.mgrid[:im.shape[1], :im.shape[2]]
        amp = 3 * np.percentile(img[ybx], 99)
        for (x, y), pos in zip(c, lab, strict=True):
            if pos:
                im[ybx] += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5**2))
        images.append(im)
        centres.append(c)
        labels.append(np.where(lab == 1, "YBX1+", "YBX1-"))
    return images, centres, labels


def test_planted_marker_class_is_found_and_chance_otherwise(rois):
    images, centres, labels = _planted(rois)
    assert sum(len(c) for c in centres) > 200
    def enc(x):  # the mock ROIs' "cells" are 3 px apart: the disc must stay inside one
        return marker_means(x, radius_px=2.0)

    res = cell_phenotyping_protocol(images, centres, labels, enc)
    assert res.mean("balanced_accuracy") > 0.85 and res.mean("auroc") > 0.9 and res.mean("macro_f1") > 0.85
    rng = np.random.default_rng(1)
    shuffled = cell_phenotyping_protocol(images, centres, [rng.permutation(lab) for lab in labels], enc)
    assert abs(shuffled.mean("balanced_accuracy") - 0.5) < 0.12 and abs(shuffled.mean("auroc") - 0.5) < 0.12
    const = cell_phenotyping_protocol(images, centres, labels, encoder=lambda x: np.zeros((len(x), 4)))
    assert const.mean("balanced_accuracy") == pytest.approx(0.5) and const.mean("auroc") == pytest.approx(0.5)
    assert {r["test_group"] for r in res.rows} == {"fold0", "fold1", "fold2", "fold3"}


def test_patches_normalisation_and_spatial_folds():
    img = np.arange(2 * 20 * 30, dtype=np.uint16).reshape(2, 20, 30)
    p = cell_centred_patches(img, np.array([[10.0, 5.0], [29.0, 19.0], [100.0, 100.0]]), size_px=8)
    assert p.shape == (3, 2, 8, 8)
    assert p[0, 1, 4, 4] == img[1, 5, 10]  # the centre pixel is the cell's
    assert (p[1, :, 5:, :] == 0).all() and p[1, 0, 4, 4] == img[0, 19, 29]  # off the image: zero
    assert not p[2].any()
    scale = marker_scale([img])
    assert (scale == 65535).all()  # KRONOS: x / dtype max
    mean, std = marker_stats([img], scale)
    z = kronos_normalise(p[:1], scale, mean, std)
    assert z[0, 1, 4, 4] == pytest.approx((img[1, 5, 10] / 65535 - mean[1]) / std[1], rel=1e-5)
    fl = marker_scale([img.astype(np.float32)])
    assert fl[1] == img[1].max()  # float images: each marker's maximum
    rng = np.random.default_rng(0)
    cen = rng.uniform(0, 100, size=(200, 2)) * np.array([3.0, 1.0])  # wide images: stripes along x
    which = np.repeat(["a", "b"], 100)
    f = spatial_folds(cen, 4, which)
    for g in ("a", "b"):
        for k in range(4):
            assert ((f == f"fold{k}") & (which == g)).sum() == 25  # every image in every fold, equal counts
    for k in range(3):  # stripes: every cell of fold k lies left of every cell of fold k+1 in its image
        a, b = cen[(f == f"fold{k}") & (which == "a"), 0], cen[(f == f"fold{k + 1}") & (which == "a"), 0]
        assert a.max() <= b.min()
