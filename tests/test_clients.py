"""The tools our users already have, on our stores: squidpy builds its spatial graph from the table as written
(obsm['spatial'] in µm) and finds the physics of the array, and spatialdata-plot renders the H&E with the spots.

These need the ``clients`` extra (squidpy, spatialdata-plot: ``nox -s clients``) and are skipped without it."""

from __future__ import annotations

import numpy as np
import pytest

sq = pytest.importorskip("squidpy")
pytest.importorskip("spatialdata_plot")


def test_squidpy_spatial_graph_matches_the_spot_pitch(her2st_root):
    import spatialdata as sd

    import hestdata.store.codecs  # noqa: F401

    sdata = sd.read_zarr(her2st_root / "samples" / "her2st_C3.zarr")
    table = sdata.tables["expression"]
    sq.gr.spatial_neighbors(table, coord_type="generic", radius=250.0)  # µm: legacy ST spots are 200 µm apart
    degree = np.asarray(table.obsp["spatial_connectivities"].sum(axis=1)).ravel()
    assert np.median(degree) == 4  # a square array: four neighbours at the 200 µm pitch inside the tissue
    d = table.obsp["spatial_distances"].data
    assert 180 < np.median(d) < 220  # the centre-to-centre pitch, in µm
    sq.gr.spatial_autocorr(table, mode="moran", genes=["ERBB2", "GAPDH"], n_perms=None)
    assert set(table.uns["moranI"].index) == {"ERBB2", "GAPDH"}


def test_spatialdata_plot_renders_image_and_spots(her2st_root, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import spatialdata as sd
    import spatialdata_plot  # noqa: F401

    import hestdata.store.codecs  # noqa: F401

    sdata = sd.read_zarr(her2st_root / "samples" / "her2st_C3.zarr")
    out = tmp_path / "c3.png"
    (sdata.pl.render_images("he").pl.render_shapes("spots", color="ERBB2", table_name="expression")
     .pl.show(coordinate_systems="global", save=str(out)))
    from PIL import Image

    im = np.asarray(Image.open(out).convert("RGB"))
    assert im.std() > 10
