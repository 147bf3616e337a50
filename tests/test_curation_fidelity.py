"""Curation that trusts physical evidence: HEST-1k's x10 TIFF tags, the wrong image, gene ids that join."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from tests.conftest import her2st_inputs, shared
from tests.hest_layout import HEST_MPP as LAYOUT_MPP
from tests.hest_layout import add_section, write_csv

HID = "SPA_C2"
HEST_MPP = 0.696  # HEST-1k's pixel_size_um_estimated for her2st C2 (the numbers)
assert HEST_MPP == LAYOUT_MPP["C2"]


@pytest.fixture(scope="module")
def hest_c2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """her2st C2 in the HEST-1k layout as HEST's release code writes it, TIFF resolution tags x10 off."""
    root = tmp_path_factory.mktemp("hest_c2") / "hest_data"
    root.mkdir(parents=True)
    write_csv(root, [add_section(root, "C2", HID)])
    return root


def test_hest1k_x10_tags_lose_to_hests_metadata(hest_c2, tmp_path):
    s = hestdata.read_hest1k(hest_c2, HID)
    assert s.pixel_size.embedded == pytest.approx(HEST_MPP / 10, rel=1e-3)  # what the TIFF tags claim
    path = hestdata.convert(s, tmp_path / "root")
    ps = hestdata.read_metadata(path).pixel_size_um
    assert ps.trusted == "estimated" and ps.value == pytest.approx(HEST_MPP)
    assert ps.embedded == pytest.approx(HEST_MPP / 10, rel=1e-3) and ps.flagged and "x10" in ps.unit_confusion
    assert "spot grid" in ps.estimated_from  # the grid confirmed HEST's value within 5 %
    m = hestdata.read_metadata(path)
    assert any("likely a unit confusion: x10" in w for w in m.qc.warnings)
    ours = hestdata.open_sample(path).patches("224px_0.5um")["images"][:]
    rows = hestdata.open_sample(path).patches("224px_0.5um")["obs_index"][:]
    with h5py.File(hest_c2 / "patches" / f"{HID}.h5") as f:
        ref = f["img"][:]
        order = {b.decode(): i for i, b in enumerate(f["barcode"][:])}
    names = hestdata.open_sample(path).sdata.tables["expression"].obs_names
    ref = ref[[order[names[r]] for r in rows]]
    diff = np.abs(ours.astype(float) - ref.astype(float)).mean()
    assert ours.shape == ref.shape and diff < 6.0, diff  # same tissue at the same scale as HEST's own crops
    rep = hestdata.validate(tmp_path / "root")
    assert rep.ok and not rep.strict_ok and any("pixel size flagged" in w and "x10" in w for w in rep.warnings)


def test_wrong_image_is_refused_with_numbers(tmp_path):
    counts, spots, _ = her2st_inputs("B4")
    c2_image = her2st_inputs("C2")[2]
    s = hestdata.read_st(counts, spots=spots, image=c2_image, sample_id="b4_on_c2")
    root = tmp_path / "root"
    with pytest.raises(hestdata.InputError) as e:
        hestdata.convert(s, root, patches=[])
    msg = str(e.value)
    assert str(c2_image) in msg and "do not agree with this image" in msg and "of the 283 on it sit on Otsu" in msg
    assert "wrong image" in msg and "--allow-image-mismatch" in msg
    assert not root.exists()  # a refused first conversion leaves no root behind
    path = hestdata.convert(s, root, patches=[], allow_image_mismatch=True)
    a = hestdata.read_metadata(path).qc.image_spot_agreement
    assert a.mismatch and a.accepted_anyway and a.n_on_otsu_tissue / a.n_in_tissue <= a.chance_limit
    rep = hestdata.validate(root)
    assert rep.ok and any("do not agree with the image" in w for w in rep.warnings)
    r = CliRunner().invoke(app, ["validate", str(root), "--strict"])
    assert r.exit_code == 1 and "warning(s) (--strict)" in r.output


def test_right_images_agree(her2st_root):
    for sec in ("B4", "C2", "C3"):
        a = hestdata.read_metadata(her2st_root / "samples" / f"her2st_{sec}.zarr").qc.image_spot_agreement
        assert not a.mismatch and a.n_on_otsu_tissue / a.n_in_tissue > 0.9 > a.chance_limit


def test_spots_off_an_unrelated_image_fail_before_writing(tmp_path):
    counts, spots, _ = her2st_inputs("B4")
    crop = shared("visium", "squidpy_mouse_brain_crop", "test_img.jpg")  # 950 x 1717 px: most spots off it
    s = hestdata.read_st(counts, spots=spots, image=crop, sample_id="b4_on_crop", pixel_size_um=0.69)
    with pytest.raises(hestdata.InputError, match=r"of 283 spots marked in tissue lie off the image"):
        hestdata.convert(s, tmp_path / "root", patches=["224px_0.5um"])
    path = hestdata.convert(s, tmp_path / "root", patches=["224px_0.5um"], allow_image_mismatch=True)
    rep = hestdata.validate(tmp_path / "root")
    assert rep.ok and hestdata.read_metadata(path).qc.image_spot_agreement.accepted_anyway
    assert any("holds no patches" in w for w in rep.warnings) and any("do not agree" in w for w in rep.warnings)


def test_gene_ids_join_samples(her2st_root):
    tabs = {sid: hestdata.open_sample(her2st_root / "samples" / f"{sid}.zarr").sdata.tables["expression"]
            for sid in ("her2st_C2", "her2st_C3")}
    for sid, t in tabs.items():
        q = hestdata.read_metadata(her2st_root / "samples" / f"{sid}.zarr").qc.genes
        mapped = (t.var["mapped_by"] != "unmapped").sum()
        assert q.n_with_gene_id == (t.var["gene_ids"] != "").sum() >= 0.99 * mapped
        assert t.var.loc["TP53", "gene_ids"] == "ENSG00000141510" and t.var.loc["ERBB2", "gene_ids"] == "ENSG00000141736"
        renamed = t.var[t.var["mapped_by"] == "previous_symbol"]
        assert len(renamed) and (renamed["gene_ids"] != "").all()
    a, b = (t.var.reset_index().set_index("gene_ids") for t in tabs.values())
    shared_ids = a.index[a.index != ""].intersection(b.index[b.index != ""])
    assert len(shared_ids) > 14_000
    assert (a.loc[shared_ids, "index"] == b.loc[shared_ids, "index"]).all()  # same id, same symbol


def test_mouse_ids_kept_from_the_source(tmp_path):
    s = hestdata.read_visium(shared("visium", "seurat_mouse_brain_anterior"), sample_id="m")
    path = hestdata.convert(s, tmp_path / "root", patches=[])
    t = hestdata.open_sample(path).sdata.tables["expression"]
    assert (t.var["gene_ids"].str.startswith("ENSMUSG")).all()
    assert hestdata.read_metadata(path).qc.genes.n_with_gene_id == t.n_vars


def test_demo_sample_has_no_pixel_size_warning(tmp_path):
    from hestdata.demo import make_synthetic_visium

    outs, img = make_synthetic_visium(tmp_path / "d", seed=0)
    path = hestdata.convert(hestdata.read_visium(outs, sample_id="d", image=img), tmp_path / "root")
    m = hestdata.read_metadata(path)
    assert not m.pixel_size_um.flagged and not [w for w in m.qc.warnings if "pixel size" in w], m.qc.warnings


def test_conversion_warnings_reach_api_users(tmp_path):
    counts, spots, image = her2st_inputs("C3")
    s = hestdata.read_st(counts, spots=spots, image=image, sample_id="c3", pixel_size_um=0.69 * 10)
    with pytest.warns(hestdata.HestdataWarning, match="c3: .*pixel size .* disagrees"):
        hestdata.convert(s, tmp_path / "root", patches=[], allow_image_mismatch=True)
