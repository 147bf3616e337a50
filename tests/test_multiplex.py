"""Multiplex sources: IMC (shared Bodenmiller mock data), QPTIFF and markers.csv written by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import spatialdata
import tifffile
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from hestdata.curation.markers import resolve
from hestdata.sources.multiplex import read_multiplex
from tests.conftest import shared

ROI = "20210305_NE_mockData2_s0_a1_ac.ome.tiff"


def _imc() -> tuple[Path, Path]:
    d = shared("multiplex", "imc_bodenmiller", "analysis")
    return d / "ometiff" / "20210305_NE_mockData2" / ROI, d / "cpout" / "panel.csv"


def test_imc_roi_markers_stats_and_store(tmp_path):
    img, panel = _imc()
    mapping = tmp_path / "map.csv"
    mapping.write_text("channel,marker\n107Ag,-\n")  # Ag107 is a background metal, not a marker
    root = tmp_path / "root"
    r = CliRunner().invoke(app, ["convert", "multiplex", str(img), "--out", str(root), "--id", "imc_roi1",
                                 "--panel", str(panel), "--mapping", str(mapping), "--patch", "16px_1um"])
    assert r.exit_code == 0, r.output
    path = root / "samples" / "imc_roi1.zarr"
    meta = hestdata.read_metadata(path)
    assert [m.name for m in meta.markers] == ["CYTOKERATIN 5", "LAMININ", "YBX1", "H3K27AC"]  # metal tags via panel
    assert meta.dropped_channels == ["107Ag"] and meta.technology == "imc"
    assert meta.pixel_size_um.value == 1.0 and meta.markers[3].nuclear
    src = tifffile.imread(img)  # (5, 87, 103) float32
    for m in meta.markers:
        ch = src[m.channel_index + 1].astype(np.float64)  # channel 0 (Ag107) was dropped
        v = ch / ch.max()
        assert m.scale == pytest.approx(ch.max())
        assert (m.mean, m.std) == (pytest.approx(v.mean()), pytest.approx(v.std()))
        assert (m.p1, m.p99) == (pytest.approx(np.percentile(v, 1)), pytest.approx(np.percentile(v, 99)))
    sd = spatialdata.read_zarr(path)
    assert list(sd.images["if"]["scale0"]["image"].coords["c"].values) == [m.name for m in meta.markers]
    assert np.array_equal(sd.images["if"]["scale0"]["image"].values, src[1:])  # lossless, native dtype
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    # the loader serves normalised (C, H, W) float patches with marker ids, across panels by name
    ds = hestdata.PatchDataset(root, patch="16px_1um", markers=["LAMININ", "CD3", "H3K27AC"])
    item = ds[7]
    assert item["image"].shape == (3, 16, 16) and item["marker_mask"].tolist() == [True, False, True]
    assert item["marker_ids"].tolist() == [resolve("LAMININ").marker_id, resolve("CD3").marker_id,
                                           resolve("H3K27AC").marker_id]
    raw = hestdata.open_sample(path).patches("16px_1um")["images"][7]  # plain zarr, no hestdata codec
    lam = meta.markers[1]
    np.testing.assert_allclose(item["image"][0].numpy(), (raw[1] / lam.scale - lam.mean) / lam.std, rtol=1e-5)
    assert float(item["image"][1].abs().sum()) == 0.0


def test_unknown_marker_and_channel_count_errors(tmp_path):
    img, panel = _imc()
    with pytest.raises(hestdata.InputError, match=r"unknown marker '107Ag' \(metal Ag107\)") as e:
        read_multiplex(img, sample_id="x", panel=panel)
    assert ROI in str(e.value) and "mapping" in str(e.value)
    with pytest.raises(hestdata.InputError, match="closest: CD3"):
        resolve("CD3x")
    bad = tmp_path / "markers.csv"
    bad.write_text("channel_number,marker_name\n1,DAPI\n2,CD3\n")
    with pytest.raises(hestdata.InputError, match="2 channel name"):
        read_multiplex(img, sample_id="x", markers_csv=bad, pixel_size_um=1.0)


def _qpi_xml(name: str, kind: str = "FullResolution") -> str:
    return ("<?xml version=\"1.0\" encoding=\"utf-16\"?><PerkinElmer-QPI-ImageDescription><DescriptionVersion>2"
            f"</DescriptionVersion><ImageType>{kind}</ImageType><Name>{name}</Name><Biomarker>{name}</Biomarker>"
            "</PerkinElmer-QPI-ImageDescription>")


def test_qptiff_vendor_xml_channels(tmp_path):
    rng = np.random.default_rng(0)
    chans = {"DAPI": 3000, "PD-L1": 800, "CD8": 1500}
    path = tmp_path / "slide.qptiff"
    res = 1e4 / 0.5
    with tifffile.TiffWriter(path) as tw:
        for name, level in chans.items():
            tw.write(rng.poisson(level, size=(64, 80)).astype(np.uint16), description=_qpi_xml(name),
                     resolution=(res, res), resolutionunit="CENTIMETER", metadata=None)
        tw.write(np.zeros((16, 20, 3), np.uint8), description=_qpi_xml("thumb", "Thumbnail"), metadata=None)
    ms = read_multiplex(path, sample_id="qp")
    assert [m.name for m in ms.markers] == ["DAPI", "PD-L1", "CD8"] and ms.image.shape == (3, 64, 80)
    assert ms.image.dtype == np.uint16 and ms.pixel_size.embedded == pytest.approx(0.5)

    p = hestdata.convert(ms, tmp_path / "root", patches=["32px_0.5um"])
    meta = hestdata.read_metadata(p)
    assert meta.markers[0].scale == 65535.0 and meta.qc.patches["32px_0.5um"].n_patches == 4  # 2 x 2 whole tiles


def test_markers_csv_for_a_plain_tiff(tmp_path):
    path = tmp_path / "cycif.tif"
    mc = tmp_path / "markers.csv"
    mc.write_text("cycle,marker_name\n1,Hoechst\n1,CD45\n")
    tifffile.imwrite(path, np.ones((2, 40, 40), np.uint16), resolution=(1e4 / 0.65, 1e4 / 0.65),
                     resolutionunit="CENTIMETER")
    with pytest.raises(hestdata.InputError, match="blank: all 2 channel"):  # constant everywhere: not a measurement
        read_multiplex(path, sample_id="c", markers_csv=mc)
    img = np.random.default_rng(0).integers(0, 4000, (2, 40, 40)).astype(np.uint16)
    tifffile.imwrite(path, img, resolution=(1e4 / 0.65, 1e4 / 0.65), resolutionunit="CENTIMETER")
    ms = read_multiplex(path, sample_id="c", markers_csv=mc)
    assert [m.name for m in ms.markers] == ["HOECHST", "CD45"] and ms.pixel_size.embedded == pytest.approx(0.65)
