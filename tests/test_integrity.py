"""Nothing lost, nothing silently wrong: structural checks where data enters, crash windows, never destroying."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml

import hestdata
from hestdata.cohort.register import register_cohort
from hestdata.store.recovery import leftovers, recover_root
from tests.conftest import shared
from tests.synth import synthetic_sample

REPO = Path(__file__).resolve().parents[1]


# -- structural checks where data enters --------------------------------------------------------------------
def _visium_copy(tmp_path: Path) -> Path:
    d = tmp_path / "outs"
    shutil.copytree(shared("visium", "seurat_mouse_brain_anterior"), d)
    return d


@pytest.mark.parametrize("edit, reason", [
    (lambda g: g["indptr"].__setitem__(5, 10**9), "corrupt count matrix: indptr"),
    (lambda g: g["indices"].__setitem__(3, 10_000), "index 10000 outside [0, 100)"),
    (lambda g: g["barcodes"].__setitem__(1, g["barcodes"][0]), "duplicate barcode"),
])
def test_corrupt_10x_matrix_is_refused(tmp_path, edit, reason):
    d = _visium_copy(tmp_path)
    h5 = d / "filtered_feature_bc_matrix.h5"
    with h5py.File(h5, "r+") as f:
        edit(f["matrix"])
    with pytest.raises(hestdata.InputError) as e:
        hestdata.read_visium(d, sample_id="x")
    assert str(h5) in str(e.value) and reason in str(e.value)


def test_duplicate_obs_names_in_h5ad_are_refused(tmp_path):
    import anndata as ad

    src = shared("visium", "squidpy_mouse_brain_crop")
    a = ad.read_h5ad(src / "test_data.h5ad")
    names = a.obs_names.to_list()
    names[1] = names[0]
    a.obs_names = names
    h5ad = tmp_path / "dup.h5ad"
    a.write_h5ad(h5ad)
    with pytest.raises(hestdata.InputError, match=r"dup\.h5ad: 1 duplicate spot id"):
        hestdata.read_anndata(h5ad, image=src / "test_img.jpg", sample_id="dup")


@pytest.mark.parametrize("value, reason", [(-3, "negative count"), (np.nan, "NaN or infinite"),
                                           (np.inf, "NaN or infinite")])
def test_negative_and_non_finite_counts_are_refused(tmp_path, value, reason):
    s = synthetic_sample("bad")
    X = s.expression.X.astype(np.float64)
    X[2, 1] = value
    s.expression.X = X
    with pytest.raises(hestdata.InputError, match=reason):
        hestdata.convert(s, tmp_path / "root", patches=[])
    assert not (tmp_path / "root" / "samples" / "bad.zarr").exists()


def test_truncated_ome_tiff_is_refused(tmp_path):
    src = next(shared("multiplex", "imc_bodenmiller", "analysis", "ometiff").rglob("*_s0_a1_ac.ome.tiff"))
    data = src.read_bytes()
    cut = tmp_path / "cut.ome.tiff"
    cut.write_bytes(data[: len(data) // 2])
    panel = shared("multiplex", "imc_bodenmiller", "analysis", "cpout", "panel.csv")
    with pytest.raises(hestdata.InputError, match=r"cut\.ome\.tiff: truncated or corrupt TIFF"):
        hestdata.read_multiplex(cut, sample_id="cut", panel=panel)


def test_a_jpeg_of_the_wrong_size_is_never_served(tmp_path):
    import simplejpeg

    from hestdata.loader.decode import decode_cpu

    root = tmp_path / "root"
    hestdata.convert(synthetic_sample("j"), root, patches=["32px_2um"], min_tissue_fraction=0)
    small = simplejpeg.encode_jpeg(np.full((16, 16, 3), 200, np.uint8), quality=90)
    with pytest.raises(hestdata.IntegrityError, match="16x16 px, the patch array holds 32x32"):
        decode_cpu(small, "patch 0", out=np.empty((32, 32, 3), np.uint8))
    for decode in ("cpu", "none"):
        ds = hestdata.PatchDataset(root, patch="32px_2um", decode=decode)
        ds.samples[0].reader.read = lambda pidx: [small] * len(pidx)  # a shard holding a foreign image
        with pytest.raises(hestdata.IntegrityError, match="16x16 px"):
            ds.load_block(np.array([0, 1]))
        ds.on_error = "skip"
        batch = ds.load_block(np.array([0, 1]))
        assert batch["n_skipped"] == 2 and len(batch["index"]) == 0


# -- crash windows ------------------------------------------------------------------------------------------
_CONVERT = """
import sys
import hestdata
from tests.synth import synthetic_sample
hestdata.convert(synthetic_sample(sys.argv[2], seed=int(sys.argv[3])), sys.argv[1], patches=["32px_2um"],
                 min_tissue_fraction=0, overwrite=len(sys.argv) > 4)
"""


def _convert_killed_at(root: Path, sid: str, seed: int, point: str, overwrite: bool = False) -> None:
    env = {**os.environ, "HESTDATA_FAILPOINT": point, "PYTHONPATH": str(REPO)}
    args = [sys.executable, "-c", _CONVERT, str(root), sid, str(seed)] + (["overwrite"] if overwrite else [])
    out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert out.returncode == -9, (out.returncode, out.stderr[-2000:])


def _patches(root: Path, sid: str) -> np.ndarray:
    return hestdata.open_sample(root / "samples" / f"{sid}.zarr").patches("32px_2um")["images"][:]


@pytest.mark.parametrize("point", ["before-sample-rename", "after-sample-rename", "before-publish",
                                   "before-pointer"])
def test_kill_at_each_conversion_window_leaves_a_recoverable_root(tmp_path, point):
    root = tmp_path / "root"
    hestdata.convert(synthetic_sample("s0"), root, patches=["32px_2um"], min_tissue_fraction=0)
    _convert_killed_at(root, "s1", 1, point)
    assert not hestdata.validate(root).ok  # the damage is visible, never silent
    # the next write recovers first; s1 is published if it was committed, its leftovers removed otherwise
    hestdata.convert(synthetic_sample("s2", seed=2), root, patches=["32px_2um"], min_tissue_fraction=0)
    rep = hestdata.validate(root)
    assert rep.ok, rep.violations
    ids = hestdata.open_catalog(root)["id"].to_list()
    assert ids == (["s0", "s2"] if point == "before-sample-rename" else ["s0", "s1", "s2"])
    assert leftovers(root) == []


def test_kill_inside_an_overwrite_swap_restores_the_old_sample(tmp_path):
    root = tmp_path / "root"
    hestdata.convert(synthetic_sample("s0", seed=0), root, patches=["32px_2um"], min_tissue_fraction=0)
    old = _patches(root, "s0")
    _convert_killed_at(root, "s0", 7, "overwrite-swap", overwrite=True)
    assert not (root / "samples" / "s0.zarr").exists()  # the window: the old sample is in the trash
    rep = hestdata.validate(root)
    assert any("left over" in v for v in rep.violations) and any("absent" in v for v in rep.violations)
    r = recover_root(root)
    assert r.restored == ["s0"] and hestdata.validate(root).ok
    assert np.array_equal(_patches(root, "s0"), old)


def test_repair_rebuilds_a_root_with_a_corrupt_catalog(tmp_path):
    from typer.testing import CliRunner

    from hestdata.cli import app

    root = tmp_path / "root"
    for i in range(2):
        hestdata.convert(synthetic_sample(f"s{i}", seed=i), root, patches=[], min_tissue_fraction=0)
    import json

    base = json.loads((root / "hestdata.json").read_text())["catalog"]["base"]["path"]
    (root / base).write_bytes(b"not parquet")
    with pytest.raises(hestdata.StoreError, match="hestdata repair"):
        hestdata.convert(synthetic_sample("s9", seed=9), root, patches=[])
    r = CliRunner().invoke(app, ["repair", str(root)])
    assert r.exit_code == 0 and "rebuilt from 3 sample(s)" in r.output, r.output  # s9 was committed, then published
    assert hestdata.validate(root).ok and hestdata.open_catalog(root)["id"].to_list() == ["s0", "s1", "s9"]


# -- registration survives faults ----------------------------------------------------------------------------
def _cohort(folder: Path, ids: list[str]) -> Path:
    from hestdata.demo import make_synthetic_visium

    samples = []
    for i, sid in enumerate(ids):
        outs, img = make_synthetic_visium(folder / sid, seed=i)
        samples.append({"id": sid, "inputs": {"outs": str(outs.relative_to(folder)),
                                              "image": str(img.relative_to(folder))}})
    p = folder / "c.yaml"
    p.write_text(yaml.safe_dump({"name": "c", "license": "CC0", "defaults": {"technology": "visium"},
                                 "samples": samples}))
    return p


@pytest.mark.slow
def test_a_killed_or_hung_conversion_fails_that_sample_only(tmp_path, monkeypatch):
    cohort = _cohort(tmp_path / "in", ["a", "b", "c"])
    root = tmp_path / "root"
    monkeypatch.setenv("HESTDATA_FAILPOINT", "before-sample-rename@b")  # b's process dies, twice
    rep = register_cohort(cohort, root, n_workers=1)
    assert rep.ids("converted") == ["a", "c"] and rep.ids("failed") == ["b"]
    assert "killed by signal 9" in next(o.reason for o in rep.outcomes if o.id == "b")
    assert json.loads((root / "cohorts" / "c.report.json").read_text())["outcomes"][1]["status"] == "failed"
    assert hestdata.open_catalog(root)["id"].to_list() == ["a", "c"] and hestdata.validate(root).ok
    monkeypatch.setenv("HESTDATA_FAILPOINT", "registration-task@b")
    monkeypatch.setenv("HESTDATA_FAILPOINT_ACTION", "hang")
    rep = register_cohort(cohort, root, n_workers=1, timeout_s=1)  # the hang starts at once: 1 s is ample
    assert rep.ids("unchanged") == ["a", "c"] and rep.ids("failed") == ["b"]
    assert "timeout" in next(o.reason for o in rep.outcomes if o.id == "b")


# -- never destroy without --overwrite -----------------------------------------------------------------------
def test_registration_refuses_ids_it_does_not_own(tmp_path):
    cohort = _cohort(tmp_path / "in", ["a", "b"])
    root = tmp_path / "root"
    hestdata.convert(synthetic_sample("a"), root, patches=[], metadata={"patient": "mine"})
    rep = register_cohort(cohort, root, n_workers=1)
    assert rep.ids("refused") == ["a"] and rep.ids("converted") == ["b"] and not rep.ok
    assert "plain conversion" in rep.outcomes[0].reason
    assert hestdata.read_metadata(root / "samples" / "a.zarr").patient == "mine"  # untouched
    other = yaml.safe_load(cohort.read_text()) | {"name": "other"}
    (tmp_path / "in" / "other.yaml").write_text(yaml.safe_dump(other))
    rep = register_cohort(tmp_path / "in" / "other.yaml", root, n_workers=1)
    assert rep.ids("refused") == ["a", "b"] and "cohort 'c'" in rep.outcomes[1].reason
    rep = register_cohort(tmp_path / "in" / "other.yaml", root, n_workers=1, overwrite=True)
    assert rep.ids("converted") == ["a", "b"] and hestdata.read_metadata(root / "samples" / "a.zarr").cohort == "other"


def test_cohort_inputs_are_confined_and_published_relative(tmp_path):
    folder = tmp_path / "in"
    cohort = _cohort(folder, ["a"])
    doc = yaml.safe_load(cohort.read_text())
    doc["samples"].append({"id": "leak", "inputs": {"outs": "/etc", "image": "../../etc/passwd"}})
    cohort.write_text(yaml.safe_dump(doc))
    with pytest.raises(hestdata.SchemaError) as e:
        register_cohort(cohort, tmp_path / "root")
    assert "input outs (/etc) lies outside the cohort folder" in str(e.value)
    assert "input image (../../etc/passwd) lies outside" in str(e.value)
    doc["samples"].pop()
    cohort.write_text(yaml.safe_dump(doc))
    register_cohort(cohort, tmp_path / "root", n_workers=1)
    published = (tmp_path / "root" / "cohorts" / "c.json").read_text()
    assert str(tmp_path) not in published and '"outs": "a/' in published


def test_validate_checks_the_stored_counts(tmp_path):
    import zarr

    path = hestdata.convert(synthetic_sample("v"), tmp_path / "root", patches=[])
    X = zarr.open_group(str(path / "tables" / "expression" / "X"), mode="r+")
    indptr = X["indptr"][:]
    indptr[3] = 10**6
    X["indptr"][:] = indptr
    rep = hestdata.validate(path)
    assert any("corrupt stored count matrix: indptr" in v for v in rep.violations), rep.violations
