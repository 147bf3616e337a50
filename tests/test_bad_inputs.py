"""Every bad input gets a clear error naming the file, and nothing is left half-written in ROOT."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hestdata
from tests.conftest import her2st_inputs, leftovers, shared


@pytest.fixture
def visium_copy(tmp_path: Path) -> Path:
    """A writable copy of the Seurat Visium outs folder."""
    src = shared("visium", "seurat_mouse_brain_anterior")
    dst = tmp_path / "outs"
    shutil.copytree(src, dst)
    for p in dst.rglob("*"):
        p.chmod(0o644 if p.is_file() else 0o755)
    return dst


def _assert_clean(root: Path) -> None:
    assert leftovers(root) == [], leftovers(root)
    assert not (root / "hestdata.json").exists()


def test_missing_outs_folder(tmp_path):
    with pytest.raises(hestdata.InputError, match="outs folder not found") as e:
        hestdata.read_visium(tmp_path / "nope", sample_id="x")
    assert str(tmp_path / "nope") in str(e.value)


def test_missing_matrix(visium_copy):
    (visium_copy / "filtered_feature_bc_matrix.h5").unlink()
    with pytest.raises(hestdata.InputError, match="no feature-barcode matrix") as e:
        hestdata.read_visium(visium_copy, sample_id="x")
    assert str(visium_copy) in str(e.value)


def test_missing_positions(visium_copy):
    (visium_copy / "spatial" / "tissue_positions_list.csv").unlink()
    with pytest.raises(hestdata.InputError, match="tissue_positions"):
        hestdata.read_visium(visium_copy, sample_id="x")


def test_truncated_h5(visium_copy):
    h5 = visium_copy / "filtered_feature_bc_matrix.h5"
    data = h5.read_bytes()
    h5.write_bytes(data[: len(data) // 2])
    with pytest.raises(hestdata.InputError, match="truncated or corrupt") as e:
        hestdata.read_visium(visium_copy, sample_id="x")
    assert "filtered_feature_bc_matrix.h5" in str(e.value)


def test_barcodes_absent_from_positions(visium_copy):
    pos = visium_copy / "spatial" / "tissue_positions_list.csv"
    lines = pos.read_text().splitlines()
    from hestdata.sources.tenx import read_10x_h5

    first = read_10x_h5(visium_copy / "filtered_feature_bc_matrix.h5").barcodes[0]
    pos.write_text("\n".join(ln for ln in lines if not ln.startswith(first + ",")) + "\n")
    with pytest.raises(hestdata.InputError, match="absent from the positions file") as e:
        hestdata.read_visium(visium_copy, sample_id="x")
    assert "tissue_positions_list.csv" in str(e.value) and first in str(e.value)


def test_nan_coordinates(visium_copy):
    pos = visium_copy / "spatial" / "tissue_positions_list.csv"
    df = pd.read_csv(pos, header=None)
    from hestdata.sources.tenx import read_10x_h5

    bc = read_10x_h5(visium_copy / "filtered_feature_bc_matrix.h5").barcodes[3]
    df.loc[df[0] == bc, 5] = np.nan
    df.to_csv(pos, header=False, index=False)
    with pytest.raises(hestdata.InputError, match="NaN") as e:
        hestdata.read_visium(visium_copy, sample_id="x")
    assert "tissue_positions_list.csv" in str(e.value)


@pytest.mark.parametrize("value", [0.0, -0.5, float("nan")])
def test_bad_pixel_size(visium_copy, tmp_path, value):
    s = hestdata.read_visium(visium_copy, sample_id="x", pixel_size_um=value)
    root = tmp_path / "root"
    with pytest.raises(hestdata.InputError, match="pixel size") as e:
        hestdata.convert(s, root, patches=[])
    assert "filtered_feature_bc_matrix.h5" in str(e.value)
    assert not root.exists() or leftovers(root) == []


def test_duplicate_gene_names_st(tmp_path):
    counts, spots, image = her2st_inputs("C3")
    df = pd.read_csv(counts, sep="\t", index_col=0, nrows=20)
    cols = list(df.columns)
    cols[5] = cols[4]
    bad = tmp_path / "dup.tsv"
    bad.write_text("\t" + "\t".join(cols) + "\n" + "\n".join(
        f"{i}\t" + "\t".join(map(str, r)) for i, r in zip(df.index, df.to_numpy(), strict=True)) + "\n")
    with pytest.raises(hestdata.InputError, match="duplicate gene name") as e:
        hestdata.read_st(bad, spots=spots, image=image, sample_id="x")
    assert "dup.tsv" in str(e.value) and cols[4] in str(e.value)


def test_duplicate_features_10x(visium_copy):
    import h5py

    h5 = visium_copy / "filtered_feature_bc_matrix.h5"
    with h5py.File(h5, "r+") as f:
        names = f["matrix/features/name"][:]
        ids = f["matrix/features/id"][:]
        names[1], ids[1] = names[0], ids[0]
        f["matrix/features/name"][...] = names
        f["matrix/features/id"][...] = ids
    s = hestdata.read_visium(visium_copy, sample_id="x")
    with pytest.raises(hestdata.InputError, match="duplicate feature") as e:
        hestdata.convert(s, visium_copy.parent / "root", patches=[])
    assert "filtered_feature_bc_matrix.h5" in str(e.value)


def test_counts_spot_missing_from_spot_file(tmp_path):
    counts, spots, image = her2st_inputs("C3")
    sp = pd.read_csv(spots, sep="\t")
    cnt_index = pd.read_csv(counts, sep="\t", index_col=0, usecols=[0]).index
    first = cnt_index[0]
    x, y = first.split("x")
    sp = sp[~((sp["x"] == int(x)) & (sp["y"] == int(y)))]
    bad = tmp_path / "spots.tsv"
    sp.to_csv(bad, sep="\t", index=False)
    with pytest.raises(hestdata.InputError, match="absent from the spot file") as e:
        hestdata.read_st(counts, spots=bad, image=image, sample_id="x")
    assert "spots.tsv" in str(e.value)


def test_missing_image_and_unsupported_format(tmp_path):
    counts, spots, _ = her2st_inputs("C3")
    with pytest.raises(hestdata.InputError, match="image file not found"):
        hestdata.read_st(counts, spots=spots, image=tmp_path / "none.jpg", sample_id="x")
    junk = tmp_path / "img.jpg"
    junk.write_bytes(b"not a jpeg at all")
    with pytest.raises(hestdata.InputError, match="cannot decode image") as e:
        hestdata.read_st(counts, spots=spots, image=junk, sample_id="x")
    assert "img.jpg" in str(e.value)


def test_invalid_sample_id(visium_copy, tmp_path):
    s = hestdata.read_visium(visium_copy, sample_id="../escape")
    with pytest.raises(hestdata.InputError, match="sample id"):
        hestdata.convert(s, tmp_path / "root", patches=[])
    assert not (tmp_path / "escape.zarr").exists()


def test_crash_mid_write_leaves_nothing(visium_copy, tmp_path, monkeypatch):
    root = tmp_path / "root"
    s = hestdata.read_visium(visium_copy, sample_id="ok")
    hestdata.convert(s, root, patches=[])
    before_pointer = (root / "hestdata.json").read_bytes()
    before_catalog = sorted(p.name for p in (root / "catalog").iterdir())
    from hestdata.store.sample import SampleWriter

    def boom(self, *a, **k):
        raise RuntimeError("simulated crash while writing the table")

    monkeypatch.setattr(SampleWriter, "write_table", boom)
    s2 = hestdata.read_visium(visium_copy, sample_id="crashes")
    with pytest.raises(RuntimeError, match="simulated crash"):
        hestdata.convert(s2, root, patches=[])
    assert leftovers(root) == ["ok.zarr"]
    assert (root / "hestdata.json").read_bytes() == before_pointer
    assert sorted(p.name for p in (root / "catalog").iterdir()) == before_catalog
    # overwriting an existing sample that then crashes keeps the old one intact
    s3 = hestdata.read_visium(visium_copy, sample_id="ok")
    with pytest.raises(RuntimeError):
        hestdata.convert(s3, root, patches=[], overwrite=True)
    assert leftovers(root) == ["ok.zarr"]
    assert hestdata.validate(root).ok


def test_existing_sample_needs_overwrite(visium_copy, tmp_path):
    root = tmp_path / "root"
    s = hestdata.read_visium(visium_copy, sample_id="a")
    hestdata.convert(s, root, patches=[])
    with pytest.raises(hestdata.StoreError, match="already exists"):
        hestdata.convert(s, root, patches=[])
    hestdata.convert(s, root, patches=[], overwrite=True)
    assert leftovers(root) == ["a.zarr"]
    assert len(list((root / "samples").glob(".old-a-*.zarr"))) == 1  # the replaced version, kept for its readers
