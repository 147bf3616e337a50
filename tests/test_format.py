"""Store format 2: the archived format-1 root read as it is and upgraded, format versions, the versioned catalog,
sharded pyramids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from hestdata.ids import SAMPLE_FORMAT_VERSION
from hestdata.store import layout as L
from hestdata.store import versions
from hestdata.store.root import Root, StoredSample
from tests.synth import synthetic_sample

ARCHIVE = Path(__file__).parent / "data" / "archives"


def _format1_root(tmp: Path) -> Path:
    with tarfile.open(ARCHIVE / "format1_root.tar.xz") as tf:
        tf.extractall(tmp, filter="data")
    return tmp / "root1"


def _facts(root: Path) -> dict:
    """What today's code reads from a root: the same figures the format-1 code recorded at archive time."""
    from anndata.io import read_elem

    r = Root.open(root)
    out = {}
    for s in r.samples():
        meta = s.metadata
        d = {"variant": meta.variant, "technology": meta.technology, "patches": {}}
        for name in meta.qc.patches:
            g = s.patch_group(name)
            im = g["images"]
            d["patches"][name] = {"n": int(im.shape[0]),
                                  "sum_first": int(np.asarray(im[0]).astype(np.int64).sum()) if im.shape[0] else None,
                                  "obs_index": g["obs_index"][:].tolist()[:5]}
        if s.has("tables", "expression"):
            d["counts_sum"] = float(read_elem(s.table()["X"]).sum())
        img = s.image()
        s0 = img["s0"]
        d["image"] = {"name": L.VARIANT_IMAGE[s.variant], "shape": list(s0.shape), "sum": int(np.asarray(s0[:]).astype(np.int64).sum())}
        out[s.id] = d
    return out


@pytest.fixture(scope="module")
def expected() -> dict:
    return json.loads((ARCHIVE / "format1_expected.json").read_text())


def test_format1_root_is_read_as_it_is(tmp_path, expected):
    root = _format1_root(tmp_path)
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    r = Root.open(root)
    assert r.format_version == 1 and r.version is None and r.ids == sorted(expected)
    assert _facts(root) == expected
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    ds = hestdata.PatchDataset(root, patch="64px_0.5um", decode="cpu")
    assert len(ds) == 8 + 12 and ds[0]["image"].shape == (3, 64, 64)
    s = r.sample("synth_a")
    assert s.format_version == 1 and "zarr.json" in s.manifest()  # from the root manifest
    # reading wrote nothing
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before
    # writing into it is refused with the command that fixes it
    with pytest.raises(hestdata.StoreError, match="hestdata upgrade"):
        hestdata.convert(synthetic_sample("new"), root, patches=[])


def test_upgrade_rewrites_in_place_and_keeps_every_value(tmp_path, expected):
    import spatialdata

    root = _format1_root(tmp_path)
    files_before = sum(1 for p in root.rglob("*") if p.is_file())
    r = CliRunner().invoke(app, ["upgrade", str(root)])
    assert r.exit_code == 0, r.output
    assert "5 sample(s) rewritten" in r.output
    assert not (root / "catalog.parquet").exists() and not (root / "manifest.json").exists()
    rt = Root.open(root)
    assert rt.format_version == 2 and rt.version == 1 and rt.ids == sorted(expected)
    assert _facts(root) == expected
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    for s in rt.samples():
        assert s.metadata.format_version == 2 and s.row["format_version"] == 2
        img = s.image()
        for k in img.array_keys():  # every pyramid level is sharded now
            assert img[k].shards is not None
        sd = spatialdata.read_zarr(s.local_path)
        assert sd.images
    assert sum(1 for p in root.rglob("*") if p.is_file()) <= files_before
    again = CliRunner().invoke(app, ["upgrade", str(root)])
    assert again.exit_code == 0 and "already in store format 2" in again.output
    hestdata.convert(synthetic_sample("new"), root, patches=[])  # a format-2 root takes new samples
    assert Root.open(root).ids == sorted([*expected, "new"])


def test_a_killed_upgrade_resumes(tmp_path, expected):
    root = _format1_root(tmp_path)
    env = {**os.environ, "HESTDATA_FAILPOINT": "upgrade-before-swap@synth_b"}
    p = subprocess.run([sys.executable, "-m", "hestdata.cli", "upgrade", str(root)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr
    # half upgraded: still a format-1 root, every sample wholly old or wholly new, readable
    r = Root.open(root)
    assert r.format_version == 1
    assert r.sample("synth_a").metadata.format_version == 2 and r.sample("synth_b").metadata.format_version == 1
    assert _facts(root) == expected
    rep = hestdata.validate(root)
    assert not rep.ok and "hestdata upgrade" in rep.violations[0]
    done = CliRunner().invoke(app, ["upgrade", str(root)])
    assert done.exit_code == 0, done.output
    assert "1 sample(s) rewritten, 4 already upgraded" in done.output  # killed at the last one (sorted ids)
    assert hestdata.validate(root).ok and _facts(root) == expected
    assert not list((root / "samples").glob(".tmp-*"))


@pytest.mark.parametrize("edit, match, kind", [
    (lambda m: m.update(format_version=SAMPLE_FORMAT_VERSION + 1, hestdata_version="9.1.0"),
     rf"store format {SAMPLE_FORMAT_VERSION + 1}.*hestdata>=9\.1\.0", "newer"),
    (lambda m: m.update(hestdata_version="9.1.0", new_field=1), r"new_field.*hestdata>=9\.1\.0", "newer"),
    (lambda m: m.update(new_field=1), r"new_field", "schema"),
])
def test_unknown_metadata_is_a_clear_error(tmp_path, edit, match, kind):
    path = hestdata.convert(synthetic_sample("s"), tmp_path / "root", patches=[])
    zj = path / "zarr.json"
    doc = json.loads(zj.read_text())
    edit(doc["attributes"]["hestdata"])
    zj.write_text(json.dumps(doc))
    err = hestdata.SchemaError if kind == "schema" else hestdata.HestdataError
    with pytest.raises(err, match=match):
        hestdata.read_metadata(path)
    out = CliRunner().invoke(app, ["info", str(path)])
    assert out.exit_code == 1 and "Traceback" not in out.output and "ValidationError" not in out.output
    assert out.output.startswith("error:")


def test_catalog_versions_tail_compaction_and_history(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setattr(versions, "compact_rows", lambda n: 3)
    for i in range(7):
        hestdata.convert(synthetic_sample(f"s{i}", n=8, seed=i), root, patches=[])
    p = versions.local_pointer(root)
    assert p["version"] == 7 and p["catalog"]["n_samples"] == 7
    # versions 1 (first base), 2, 3 tails; 4 compacts (tail reached 3 rows); 5, 6 tails; 7 compacts
    assert p["catalog"]["tail"] is None and p["catalog"]["base"]["n_rows"] == 7
    v6 = Root.open(root, version=6)
    assert v6.ids == [f"s{i}" for i in range(6)] and v6.pointer["catalog"]["tail"]["n_rows"] == 2
    r = Root.open(root)
    assert not r.changed()
    hestdata.convert(synthetic_sample("s0", n=12, seed=42), root, patches=[], overwrite=True)
    assert r.changed() and r.reopen().row("s0")["n_obs"] == 12 and r.row("s0")["n_obs"] == 8  # r stays pinned
    with pytest.raises(hestdata.IntegrityError, match="changed under it"):
        r.sample("s0").manifest()  # the pinned row no longer describes what is on disk
    monkeypatch.setattr(versions, "KEEP_VERSIONS", 2)
    hestdata.convert(synthetic_sample("s9", n=8, seed=9), root, patches=[])
    names = sorted(x.name for x in (root / "catalog").iterdir())
    assert names == ["base-00000007.parquet", "tail-00000008.parquet", "tail-00000009.parquet",
                     "v00000008.json", "v00000009.json"]
    with pytest.raises(hestdata.StoreError, match="no catalog version 6"):
        Root.open(root, version=6)


def test_a_kill_before_the_pointer_keeps_the_previous_version(tmp_path):
    root = tmp_path / "root"
    hestdata.convert(synthetic_sample("s0", n=8), root, patches=[])
    code = ("import sys; sys.path.insert(0, '.'); import hestdata; from tests.synth import synthetic_sample; "
            f"hestdata.convert(synthetic_sample('s1', n=8), {str(root)!r}, patches=[])")
    env = {**os.environ, "HESTDATA_FAILPOINT": "before-pointer"}
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == -9, p.stderr
    assert Root.open(root).ids == ["s0"]  # version 1: the pointer never moved
    assert (root / "catalog" / "v00000002.json").exists()  # the unfinished version's files
    assert not hestdata.validate(root).ok  # s1 committed, not published: named
    hestdata.convert(synthetic_sample("s2", n=8), root, patches=[])  # the next writer recovers first
    assert Root.open(root).ids == ["s0", "s1", "s2"]
    assert hestdata.validate(root).ok


def test_sharded_pyramid_is_what_zarr_reads(tmp_path):
    """The hand-written shards decode in zarr to exactly the pixels given, empty shards included, and a level
    holds ceil(h / 4096) x ceil(w / 4096) shard files."""
    from hestdata.curation.pyramid import iter_pyramid, pyramid_shapes
    from hestdata.store.sample import SampleWriter

    rng = np.random.default_rng(0)
    h, w = 4700, 9000
    img = (rng.integers(0, 256, (h, w, 3), dtype=np.uint8) & 0xF0).astype(np.uint8)
    img[:4096, :4096] = 0  # one whole shard empty: not written
    img[4300:, 8500:] = 0
    with SampleWriter(tmp_path / "root", "x") as wr:
        shapes = pyramid_shapes(h, w)
        wr.write_image(shapes, 3, np.uint8, 0.5, iter_pyramid(img, len(shapes)))
        s0 = zarr.open_array(str(wr.tmp / "images/he/s0"), mode="r")
        assert s0.shards == (3, 4096, 4096) and s0.chunks == (3, 512, 512)
        assert np.array_equal(s0[:], np.moveaxis(img, -1, 0))
        files = sorted(p.relative_to(wr.tmp / "images/he/s0").as_posix()
                       for p in (wr.tmp / "images/he/s0/c").rglob("*") if p.is_file())
        assert files == ["c/0/0/1", "c/0/0/2", "c/0/1/0", "c/0/1/1", "c/0/1/2"]  # (0, 0) is empty
        for k, (lh, lw) in enumerate(shapes):
            n = sum(1 for p in (wr.tmp / f"images/he/s{k}/c").rglob("*") if p.is_file())
            assert n <= -(-lh // 4096) * -(-lw // 4096)


def test_sample_files_are_few_and_spatialdata_reads_them(her2st_root):
    import spatialdata

    r = Root.open(her2st_root)
    for s in r.samples():
        n = sum(1 for p in s.local_path.rglob("*") if p.is_file())
        assert n == s.row["n_files"] and n <= 300
        h, w = s.metadata.image.height_px, s.metadata.image.width_px
        level0 = sum(1 for p in (s.local_path / "images/he/s0/c").rglob("*") if p.is_file())
        assert level0 <= -(-h // 4096) * -(-w // 4096)
    sd = spatialdata.read_zarr(r.sample(r.ids[0]).local_path)
    he = sd.images["he"]
    arr = np.asarray(he["scale0"]["image"][:, 2000:2016, 3000:3016])
    ref = np.asarray(r.sample(r.ids[0]).image()["s0"][:, 2000:2016, 3000:3016])
    assert np.array_equal(arr, ref)


def test_stored_sample_without_root_and_layers(tmp_path):
    path = hestdata.convert(synthetic_sample("s", n=8), tmp_path / "root", patches=["64px_0.5um"],
                            min_tissue_fraction=0)
    s = StoredSample.open(path)
    assert s.row is None and s.patch_count("64px_0.5um") == (8, 8) and s.variant == "spots"
    assert s.digest("hestdata/patches/64px_0.5um") == Root.open(tmp_path / "root").sample("s").digest(
        "hestdata/patches/64px_0.5um")
    assert s.patches("64px_0.5um")["images"].shape == (8, 64, 64, 3)
    values, genes = s.profile()  # pseudo-bulk: the sum of the in-tissue spots' counts
    table = s.read_table()
    in_profile = table.obs["in_profile"].to_numpy().astype(bool)
    assert genes == list(table.var_names) and np.allclose(values, np.asarray(table.X[in_profile].sum(axis=0)).ravel())
    shutil.rmtree(path / "hestdata")
    with pytest.raises(hestdata.HestdataError):
        hestdata.validate(path).raise_if_invalid()
    assert L.ROOT_POINTER == "hestdata.json"
