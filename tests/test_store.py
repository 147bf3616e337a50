"""Store mechanics: codec, schema, catalog, manifest, validation, alignment of patches to spots."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr

import hestdata
from hestdata.metadata import generated_schema, sample_schema
from tests.synth import synthetic_sample


def test_shipped_schema_matches_model():
    assert sample_schema() == generated_schema()


def test_patches_are_centred_on_spots(tmp_path):
    s = synthetic_sample()
    path = hestdata.convert(s, tmp_path / "root", patches=["64px_0.5um", "32px_2um"], min_tissue_fraction=0)
    o = hestdata.open_sample(path)
    for name, size in (("64px_0.5um", 64), ("32px_2um", 32)):
        g = o.patches(name)
        imgs = g["images"][:]
        assert imgs.shape == (12, size, size, 3)
        c = size // 2
        # the cross is at the centre: the centre rows/columns are the darkest lines of the patch
        for p in imgs.astype(float).mean(axis=3):
            assert np.argmin(p[:, c - 4:c + 4].mean(axis=1)) in (c - 1, c)
            assert np.argmin(p[c - 4:c + 4, :].mean(axis=0)) in (c - 1, c)
    meta = o.metadata
    assert meta.qc.patches["32px_2um"].source_pixel_size_um == 2.0  # cut from pyramid level 2
    assert np.allclose(o.patches("64px_0.5um")["centers_um"][:, 0], s.expression.obs["pxl_col_in_fullres"] * 0.5)
    # genes: Ensembl id kept, previous symbol mapped, original kept
    var = o.sdata.tables["expression"].var
    assert "C1QTNF12" in var.index and var.loc["C1QTNF12", "original_name"] == "FAM132A"
    assert var.loc["C1QTNF12", "mapped_by"] == "previous_symbol"
    # picked patches read run by run are zarr's own orthogonal selection
    from hestdata.store.sample import read_rows

    a = o.patches("64px_0.5um")["images"]
    for rows in ([0, 1, 2, 5, 6, 11], [7], list(range(12)), [3, 9]):
        want = np.asarray(a.get_orthogonal_selection((np.array(rows), slice(None), slice(None), slice(None))))
        np.testing.assert_array_equal(read_rows(a, rows), want)
    assert read_rows(a, []).shape == (0, 64, 64, 3)


def test_codec_readable_by_plain_zarr_in_a_fresh_process(tmp_path):
    path = hestdata.convert(synthetic_sample(), tmp_path / "root", patches=["64px_0.5um"], min_tissue_fraction=0)
    arr_path = path / "hestdata" / "patches" / "64px_0.5um" / "images"
    meta = json.loads((arr_path / "zarr.json").read_text())
    inner = meta["codecs"][0]["configuration"]["codecs"][0]
    assert meta["codecs"][0]["name"] == "sharding_indexed" and inner["name"] == "hestdata.jpeg"
    # a fresh process that never imports hestdata itself: zarr finds the codec through its entry point
    code = f"import sys, zarr; a = zarr.open_array({str(arr_path)!r}, mode='r'); x = a[3]; " \
           "print(x.shape, x.dtype, int(x.astype('int64').sum()), 'hestdata.store.codecs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    ref = zarr.open_array(str(arr_path), mode="r")[3]
    assert ref.shape == (64, 64, 3) and int(ref.astype("int64").sum()) > 0
    assert out.stdout.split() == ["(64,", "64,", "3)", "uint8", str(int(ref.astype("int64").sum())), "True"]


def test_catalog_manifest_and_validate_detects_tampering(tmp_path):
    root = tmp_path / "root"
    for i in range(2):
        hestdata.convert(synthetic_sample(f"s{i}", seed=i), root, patches=["64px_0.5um"], min_tissue_fraction=0,
                         metadata={"organ": "skin", "patient": f"p{i}"})
    cat = hestdata.open_catalog(root)
    assert cat["id"].to_list() == ["s0", "s1"]
    assert cat["n_patches"].to_list() == [12, 12]
    assert cat["patch_arrays"].to_list() == [["64px_0.5um"], ["64px_0.5um"]]
    # format 2: each sample has its own manifest, whose sha256 is the catalog row's digest; the root pointer lists
    # only the root's own files
    import hashlib

    pointer = json.loads((root / "hestdata.json").read_text())
    assert pointer["format_version"] == 2 and pointer["files"] == {} and pointer["catalog"]["n_samples"] == 2
    assert not (root / "manifest.json").exists() and not (root / "catalog.parquet").exists()
    man = (root / "samples/s0.zarr/manifest.json").read_bytes()
    assert cat.filter(cat["id"] == "s0")["sha256"][0] == hashlib.sha256(man).hexdigest()
    files = json.loads(man)["files"]
    assert "zarr.json" in files and "manifest.json" not in files
    assert cat.filter(cat["id"] == "s0")["n_files"][0] == len(files) + 1
    assert hestdata.validate(root).ok

    # tamper: change bytes of one chunk (same size), add a stray file, remove the table's X
    chunk = next(p for p in (root / "samples/s0.zarr/images/he/s0/c").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    (root / "samples/s1.zarr/stray.txt").write_text("x")
    rep = hestdata.validate(root)
    assert not rep.ok
    text = "\n".join(rep.violations)
    assert "sha256 differs" in text and "stray.txt is not in its manifest.json" in text
    assert hestdata.validate(root, checksums=False).violations == [v for v in rep.violations if "sha256" not in v]


def test_validate_sample_reports_every_violation(tmp_path):
    path = hestdata.convert(synthetic_sample(), tmp_path / "root", patches=["64px_0.5um"], min_tissue_fraction=0)
    zj = path / "zarr.json"
    doc = json.loads(zj.read_text())
    doc["attributes"]["hestdata"]["technology"] = "Magic Tech!"  # not an identifier
    doc["attributes"]["hestdata"]["pixel_size_um"]["value"] = -1
    zj.write_text(json.dumps(doc))
    rep = hestdata.validate(path)
    assert len(rep.violations) >= 2
    joined = "\n".join(rep.violations)
    assert "technology" in joined and "pixel_size_um/value" in joined
    with pytest.raises(hestdata.SchemaError):
        rep.raise_if_invalid()


def test_republish_drops_vanished_samples(tmp_path):
    import shutil

    from hestdata.store.publish import publish

    root = tmp_path / "root"
    for i in range(2):
        hestdata.convert(synthetic_sample(f"s{i}"), root, patches=[], min_tissue_fraction=0)
    shutil.rmtree(root / "samples" / "s1.zarr")
    publish(root)
    assert hestdata.open_catalog(root)["id"].to_list() == ["s0"]
    assert hestdata.validate(root).ok


def test_import_is_light():
    code = "import sys, hestdata; bad = [m for m in ('torch', 'spatialdata', 'zarr', 'anndata') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
