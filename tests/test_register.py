"""Cohort registration on a Dask LocalCluster: idempotence, crash safety, concurrent registrations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import hestdata
from hestdata.cohort.register import register_cohort
from tests.conftest import SHARED, her2st_inputs, shared


def _write(path: Path, doc: dict) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _synthetic_cohort(folder: Path, name: str, ids: list[str], extra: list[dict] | None = None) -> Path:
    from hestdata.demo import make_synthetic_visium

    samples = []
    for i, sid in enumerate(ids):
        outs, img = make_synthetic_visium(folder / sid, seed=i)
        samples.append({"id": sid, "inputs": {"outs": str(outs.relative_to(folder)), "image": str(img.relative_to(folder))},
                        "metadata": {"patient": f"P{i}"}})
    return _write(folder / f"{name}.yaml", {
        "name": name, "license": "BSD-3-Clause", "citation": "synthetic (hestdata.demo)",
        "defaults": {"technology": "visium", "organ": "colon", "species": "Homo sapiens"},
        "samples": samples + (extra or [])})


def test_register_shared_fixtures_on_two_workers(tmp_path, dask_scheduler):
    d = shared("visium")
    counts, spots, image = her2st_inputs("C3")
    doc = {
        "name": "mixed", "license": "see sources", "citation": "shared fixtures",
        "defaults": {"patches": ["224px_0.5um"]},
        "samples": [
            {"id": "her2st_C3", "technology": "st", "inputs": {"counts": str(counts), "spots": str(spots),
                                                                "image": str(image)},
             "metadata": {"patient": "C", "organ": "breast"}},
            {"id": "seurat_anterior", "technology": "visium", "patches": [],
             "inputs": {"outs": str(d / "seurat_mouse_brain_anterior")}},
            {"id": "squidpy_crop", "technology": "anndata",
             "inputs": {"h5ad": str(d / "squidpy_mouse_brain_crop" / "test_data.h5ad"),
                        "image": str(d / "squidpy_mouse_brain_crop" / "test_img.jpg")}},
            {"id": "broken", "technology": "visium", "inputs": {"outs": str(SHARED / "visium_hd")}},
        ]}
    cohort = _write(tmp_path / "mixed.yaml", doc)
    root = tmp_path / "root"
    rep = register_cohort(cohort, root, scheduler=dask_scheduler, allow_outside_inputs=True)
    assert rep.ids("converted") == ["her2st_C3", "seurat_anterior", "squidpy_crop"]
    assert rep.ids("failed") == ["broken"] and "InputError" in rep.outcomes[0].reason
    cat = hestdata.open_catalog(root)
    assert cat["id"].to_list() == ["her2st_C3", "seurat_anterior", "squidpy_crop"]
    assert set(cat["cohort"]) == {"mixed"}
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    saved = json.loads((root / "cohorts" / "mixed.report.json").read_text())
    assert [o["status"] for o in saved["outcomes"]].count("converted") == 3
    before = {p: p.stat().st_mtime_ns for p in (root / "samples").glob("*.zarr")}
    again = register_cohort(cohort, root, scheduler=dask_scheduler, allow_outside_inputs=True)  # idempotent: nothing converted twice
    assert again.ids("unchanged") == ["her2st_C3", "seurat_anterior", "squidpy_crop"]
    assert {p: p.stat().st_mtime_ns for p in (root / "samples").glob("*.zarr")} == before


def test_invalid_cohort_lists_every_problem(tmp_path):
    bad = _write(tmp_path / "bad.yaml", {"name": "x y", "samples": [
        {"id": "a", "technology": "st", "inputs": {"counts": "nope.tsv"}},
        {"id": "a", "technology": "visium", "inputs": {"outs": "."}, "color": "blue"}]})
    with pytest.raises(hestdata.SchemaError) as e:
        register_cohort(bad, tmp_path / "root")
    text = str(e.value)
    assert "license" in text and "name" in text and "color" in text
    ok_schema = _write(tmp_path / "bad2.yaml", {"name": "x", "license": "l", "samples": [
        {"id": "a", "technology": "st", "inputs": {"counts": "nope.tsv"}},
        {"id": "a", "technology": "visium", "inputs": {"outs": "."}}]})
    with pytest.raises(hestdata.SchemaError) as e:
        register_cohort(ok_schema, tmp_path / "root")
    text = str(e.value)
    assert "needs input(s) ['image', 'spots']" in text and "duplicate sample id 'a'" in text and "not found" in text


def _run(cohort: Path, root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hestdata.cli", "register", str(cohort), "--root", str(root),
                             "--allow-outside-inputs", "--workers", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, text=True)


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_completes(tmp_path, dask_scheduler):
    root = tmp_path / "root"
    first = _synthetic_cohort(tmp_path / "a", "first", ["a0"])
    assert register_cohort(first, root, scheduler=dask_scheduler).ok
    previous = hestdata.open_catalog(root)["id"].to_list()
    counts, spots, image = her2st_inputs("C2")  # a slow sample keeps the run busy
    slow = {"id": "slow_c2", "technology": "st", "inputs": {"counts": str(counts), "spots": str(spots),
                                                             "image": str(image)}}
    second = _synthetic_cohort(tmp_path / "b", "second", ["b0", "b1", "b2"], extra=[slow])
    proc = _run(second, root)
    deadline = time.time() + 120
    while time.time() < deadline and not any((root / "samples").glob("b*.zarr")):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert any((root / "samples").glob("b*.zarr")), "no sample was committed before the kill"
    assert not (root / "samples" / "slow_c2.zarr").exists()
    assert hestdata.open_catalog(root)["id"].to_list() == previous  # previous catalog intact and readable
    rep = register_cohort(second, root, scheduler=dask_scheduler, allow_outside_inputs=True)
    assert rep.ok and "slow_c2" in rep.ids("converted") and rep.ids("unchanged")
    assert hestdata.open_catalog(root)["id"].to_list() == ["a0", "b0", "b1", "b2", "slow_c2"]
    assert hestdata.validate(root).ok, hestdata.validate(root).violations


def test_two_concurrent_registrations_leave_a_consistent_catalog(tmp_path):
    root = tmp_path / "root"
    c1 = _synthetic_cohort(tmp_path / "x", "x", ["x0", "x1"])
    c2 = _synthetic_cohort(tmp_path / "y", "y", ["y0", "y1"])
    p1, p2 = _run(c1, root), _run(c2, root)
    for p in (p1, p2):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    cat = hestdata.open_catalog(root)
    assert cat["id"].to_list() == ["x0", "x1", "y0", "y1"]
    assert hestdata.validate(root).ok, hestdata.validate(root).violations


def test_register_xenium_multiplex_and_wsi(tmp_path, dask_scheduler):
    x = shared("xenium", "sfe_jurkat_raji")
    imc = shared("multiplex", "imc_bodenmiller", "analysis")
    svs = shared("wsi", "CMU-1-Small-Region.svs")
    (tmp_path / "map.csv").write_text("channel,marker\n107Ag,-\n")
    doc = {"name": "other_sources", "license": "see sources", "defaults": {"patches": []}, "samples": [
        {"id": "xen", "technology": "xenium", "inputs": {"dir": str(x)}, "pixel_size_um": 1.7,
         "options": {"image_origin_um": "1000,1000", "pseudospot_um": 100}},
        {"id": "imc", "technology": "multiplex", "patches": ["16px_1um"],
         "inputs": {"image": str(imc / "ometiff" / "20210305_NE_mockData2" / "20210305_NE_mockData2_s0_a1_ac.ome.tiff"),
                    "panel": str(imc / "cpout" / "panel.csv"), "mapping": "map.csv"}},
        {"id": "slide", "technology": "wsi", "inputs": {"slide": str(svs)}, "options": {"tile_um": 256}},
        {"id": "wbc", "technology": "images", "patches": ["32px"],  # an image collection (store format 3)
         "inputs": {"images": str(shared("hematology", "bccd_wbc_crops", "BCCD_cropped"))},
         "options": {"item_kind": "cells", "sample_prefix": "wbc"}},
    ]}
    cohort = _write(tmp_path / "other.yaml", doc)
    root = tmp_path / "root"
    rep = register_cohort(cohort, root, scheduler=dask_scheduler, allow_outside_inputs=True)
    assert rep.ok, [o.reason for o in rep.outcomes]
    cat = hestdata.open_catalog(root)
    assert dict(zip(cat["id"], cat["technology"], strict=True)) == {"imc": "imc", "slide": "wsi", "xen": "xenium",
                                                                     "wbc": "images"}
    assert dict(zip(cat["id"], cat["format_version"], strict=True))["wbc"] == 3
    assert dict(zip(cat["id"], cat["n_obs"], strict=True))["wbc"] == 351
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    assert register_cohort(cohort, root, scheduler=dask_scheduler, allow_outside_inputs=True).ids("unchanged") == ["imc", "slide", "wbc", "xen"]
