"""Cell-level data (issue 17): crops from another tool's segmentation on any H&E, with QC; per-slide bags of cell
crops from the slide loader; cell bags with a planted composition label feeding slide-level MIL."""

from __future__ import annotations

import json

import numpy as np
import pytest

import hestdata
from tests.conftest import her2st_inputs, shared


def _geojson(path, centres_px, r=12.0):
    feats = []
    for i, (x, y) in enumerate(centres_px):
        ang = np.linspace(0, 2 * np.pi, 13)[:-1]
        ring = [[float(x + r * np.cos(a)), float(y + r * np.sin(a))] for a in ang]
        feats.append({"type": "Feature", "id": f"c{i}", "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
                      "properties": {"classification": {"name": "Tumor" if i % 2 else "Stroma"}}})
    path.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))


def test_crops_from_a_geojson_segmentation_are_centred_and_counted(tmp_path):
    import zarr

    from hestdata.curation.patches import render_patch
    from hestdata.sources.registry import get_source

    counts, spots, image = her2st_inputs("C3")
    from PIL import Image

    with Image.open(image) as im:
        w, h = im.size
    rng = np.random.default_rng(0)
    inside = np.column_stack([rng.uniform(2000, w - 2000, 40), rng.uniform(2000, h - 2000, 40)])
    centres = np.vstack([inside, [[w + 500, h / 2], [3.0, h / 2]]])  # one off the image, one on its edge
    seg = tmp_path / "cells.geojson"
    _geojson(seg, centres)
    src = get_source("st")
    s = src.read({"counts": counts, "spots": spots, "image": image, "cells": seg}, sample_id="c3cells")
    path = hestdata.convert(s, tmp_path / "root", options={"cell_patches": ["64px_0.5um"]})
    meta = hestdata.read_metadata(path)
    q = meta.qc.patches["cells-64px_0.5um"]
    assert (q.n_patches, q.n_skipped_off_image, q.n_partial_outside_image) == (41, 1, 1)
    assert any("off the image" in m for m in meta.qc.warnings)
    import spatialdata

    sd = spatialdata.read_zarr(path)
    tab = sd.tables["segmented_cells"]
    assert tab.n_obs == 42 and set(tab.obs["label"]) == {"Tumor", "Stroma"}
    assert tab.uns["spatialdata_attrs"]["region"] == "segmented_cell_outlines"  # a regions table: queries work
    assert sd.shapes["segmented_cell_outlines"].geometry.iloc[0].geom_type == "Polygon"
    ps = meta.pixel_size_um.value
    np.testing.assert_allclose(tab.obs[["x_um", "y_um"]].to_numpy(), centres * ps, rtol=1e-9)
    g = hestdata.open_sample(path).patches("cells-64px_0.5um")
    rows = g["obs_index"][:]
    assert sorted(rows.tolist()) == [i for i in range(42) if i != 40]  # the off-image cell has no crop
    level0 = np.moveaxis(zarr.open_group(str(path), mode="r")["images"]["he"]["s0"][:], 0, -1)
    for k in (0, 7):
        cx, cy = centres[rows[k]]
        want = render_patch(level0, cx, cy, 64 * 0.5 / ps, 64).astype(float)
        assert np.abs(g["images"][k].astype(float) - want).mean() < 4  # JPEG q90 of the same crop
    assert hestdata.validate(tmp_path / "root").ok
    # the slide loader serves the slide's cells as one bag of crops
    from hestdata.loader.slides import SlideDataset

    bag = SlideDataset(tmp_path / "root", patch="cells-64px_0.5um", profiles=False).item(0)
    assert bag["image"].shape == (41, 3, 64, 64) and bag["coords_um"].shape == (41, 2)


def test_bad_segmentations_are_refused_naming_the_file(tmp_path):
    from hestdata.curation.segmentation import read_segmentation

    bare = tmp_path / "bare.csv"
    bare.write_text("x,y\n1,2\n")
    with pytest.raises(hestdata.InputError, match="unit would be a guess") as e:
        read_segmentation(bare)
    assert "bare.csv" in str(e.value)
    dup = tmp_path / "dup.csv"
    dup.write_text("cell_id,x_um,y_um\na,1,2\na,3,4\n")
    with pytest.raises(hestdata.InputError, match="duplicate"):
        read_segmentation(dup)
    line = tmp_path / "line.geojson"
    line.write_text(json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}, "properties": {}}]}))
    with pytest.raises(hestdata.InputError, match="not a cell"):
        read_segmentation(line)


def test_cell_bags_with_a_planted_composition_feed_slide_mil():
    """Sub-slides drawn from the Xenium Jurkat/Raji cells: T-rich (75 % Jurkat) vs B-rich (25 %) bags of cell
    features (log1p counts); both aggregators learn the composition, patients never split."""
    from hestdata.bench.tasks.slide_mil import slide_mil_protocol
    from hestdata.sources.xenium import read_xenium

    xs = read_xenium(shared("xenium", "sfe_jurkat_raji"), sample_id="x", pixel_size_um=0.2125)
    X = xs.cells.X.toarray() if hasattr(xs.cells.X, "toarray") else np.asarray(xs.cells.X)
    genes = list(xs.cells.var_names)
    t_score = X[:, [genes.index(g) for g in ("CD3D", "CD3E", "LEF1")]].sum(1)
    b_score = X[:, [genes.index(g) for g in ("POU2AF1", "SPIB")]].sum(1)
    jurkat, raji = np.flatnonzero(t_score > b_score), np.flatnonzero(b_score > t_score)
    assert len(jurkat) > 50 and len(raji) > 50
    feats = np.log1p(X).astype(np.float32)
    xy = xs.cells.obs[["x_um", "y_um"]].to_numpy(np.float64)
    rng = np.random.default_rng(0)
    bags, labels, coords = {}, {}, {}
    for i in range(24):
        y = i % 2
        n_t = 30 if y else 10
        idx = np.concatenate([rng.choice(jurkat, n_t), rng.choice(raji, 40 - n_t)])
        bags[f"s{i}"], labels[f"s{i}"], coords[f"s{i}"] = feats[idx], ("T-rich" if y else "B-rich"), xy[idx]
    for agg in ("abmil", "transformer"):
        res = slide_mil_protocol(bags, labels, n_folds=4, epochs=15, seed=0, aggregator=agg,
                                 **({"coords": coords} if agg == "transformer" else {}))
        assert res.mean(f"{agg}_auroc") > 0.9, (agg, res.folds)


def test_xenium_he_cell_patches_count_cells_off_and_on_the_edge():
    from hestdata.convert.cells import affine_patches
    from hestdata.raster import ArrayRaster
    from hestdata.units import PatchGeometry

    level = ArrayRaster(np.full((200, 300, 3), 128, np.uint8))
    g = PatchGeometry.parse("16px_1um")  # 1 µm/px image: patches are 16 px boxes (+3 px margin)
    centres = np.array([[150.0, 100.0], [60.0, 40.0], [2.0, 100.0], [500.0, 100.0], [150.0, -40.0]])
    rows, stream, n_off, n_edge = affine_patches(level, np.eye(3), centres, g, 1)
    assert (n_off, n_edge) == (2, 1) and sorted(rows.tolist()) == [0, 1, 2]
    batches = [b for _, b in stream]
    assert sum(len(b) for b in batches) == 3
