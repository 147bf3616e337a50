"""A good citizen of scverse: samples open with zarr and spatialdata without hestdata, tables carry what scanpy
and squidpy look for, spatial queries work with their defaults, and 0.2.0 samples are upgraded in place."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from hestdata.store.root import Root

ARCHIVE = Path(__file__).parent / "data" / "archives"

# run in a child whose imports of hestdata fail (and so does zarr's entry point to our codec): what a user who
# never installed hestdata sees
NO_HESTDATA = r'''
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "hestdata" or name.startswith("hestdata."):
            raise ImportError(f"hestdata is not installed here ({name})")
sys.meta_path.insert(0, Block())
import numpy as np, zarr, spatialdata as sd, anndata as ad
from shapely.geometry import Polygon
p = sys.argv[1]
out = {}
g = zarr.open_group(p, mode="r")
out["groups"] = sorted(g.group_keys())
patches = zarr.open_group(p + "/hestdata/patches", mode="r")
out["obs_index"] = {n: int(zarr.open_array(f"{p}/hestdata/patches/{n}/obs_index", mode="r").shape[0])
                    for n in patches.group_keys()}
s = sd.read_zarr(p)
if len(sys.argv) < 3:  # samples of 0.2.0: opening is what is asked of them
    print("RESULT" + json.dumps(out))
    sys.exit(0)
t = s.tables["expression"]
out["tables"] = sorted(s.tables)
out["spatial"] = np.asarray(t.obsm["spatial"]).tolist()[:3]
out["xy_um"] = t.obs[["x_um", "y_um"]].to_numpy().tolist()[:3]
out["var"] = sorted(t.var.columns)
out["channels"] = [str(c) for c in s.images["he"]["scale0"]["image"].coords["c"].values]
x0, y0 = np.asarray(t.obsm["spatial"]).min(0)
q = sd.bounding_box_query(s, axes=("x", "y"), min_coordinate=[x0 - 1, y0 - 1], max_coordinate=[x0 + 400, y0 + 400],
                          target_coordinate_system="global")
out["bbox_rows"] = int(q.tables["expression"].n_obs)
out["bbox_spots"] = int(len(q.shapes["spots"]))
poly = Polygon([(x0 - 1, y0 - 1), (x0 + 400, y0 - 1), (x0 + 400, y0 + 400), (x0 - 1, y0 + 400)])
out["poly_rows"] = int(sd.polygon_query(s, poly, target_coordinate_system="global").tables["expression"].n_obs)
# aggregate with its defaults: ERBB2 counts of the spots summed over the tissue polygons
agg = sd.aggregate(values="spots", by="tissue", values_sdata=s, by_sdata=s, value_key="ERBB2",
                   table_name="expression").tables["expression"]
out["agg_total"] = float(np.asarray(agg.X.sum()))
spots = s.shapes["spots"]
import shapely
touching = shapely.intersects(shapely.union_all(s.shapes["tissue"].geometry.values),
                              spots.geometry.buffer(spots["radius"]).values)
x = t[:, "ERBB2"].X
out["agg_expected"] = float(np.asarray(x.toarray() if hasattr(x, "toarray") else x).ravel()[touching].sum())
print("RESULT" + json.dumps(out))
'''


def _without_hestdata(sample: Path, query: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", NO_HESTDATA, str(sample), *(["query"] if query else [])],
                          capture_output=True, text=True, timeout=300)


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_a_sample_opens_in_zarr_and_spatialdata_without_hestdata(her2st_root):
    s = Root.open(her2st_root).sample("her2st_B4")
    doc = json.loads((s.local_path / "zarr.json").read_text())
    listed = doc["consolidated_metadata"]["metadata"]  # zarr parses the codecs of every array listed there
    assert not [k for k, v in listed.items() if "hestdata.jpeg" in json.dumps(v.get("codecs", []))]
    assert any("hestdata.jpeg" in json.dumps(v) for v in doc["attributes"]["hestdata_arrays"].values())
    out = _result(_without_hestdata(s.local_path, query=True))
    assert out["groups"] == ["hestdata", "images", "shapes", "tables"]
    assert out["obs_index"] == {"224px_0.5um": s.metadata.qc.patches["224px_0.5um"].n_patches}
    assert out["tables"] == ["expression"]  # slide-level tables live in hestdata/tables (queries ignore them)
    assert out["spatial"] == out["xy_um"]  # µm, x then y: the frame of the shapes
    assert {"gene_ids", "feature_types"} <= set(out["var"]) and "gene_id" not in out["var"]
    assert out["channels"] == ["r", "g", "b"]
    t = s.read_table()
    xy = t.obsm["spatial"]
    x0, y0 = xy.min(0)
    inside = int(((xy[:, 0] <= x0 + 400) & (xy[:, 1] <= y0 + 400)).sum())
    assert 0 < inside < t.n_obs
    near = int(((xy[:, 0] <= x0 + 451) & (xy[:, 1] <= y0 + 451)).sum())  # centres within a spot radius (50 µm)
    # the box keeps spots by centre and filters the table to them; the polygon keeps discs that meet it
    assert out["bbox_rows"] == out["bbox_spots"] == inside
    assert inside <= out["poly_rows"] <= near
    # aggregate counts every spot disc that meets the tissue, once
    erbb2 = np.asarray(t[:, "ERBB2"].X.sum())
    assert 0 < out["agg_total"] == out["agg_expected"] <= erbb2


def test_hestdata_reads_its_patches_through_the_split_metadata(her2st_root):
    s = Root.open(her2st_root).sample("her2st_B4")
    g = s.patch_group("224px_0.5um")
    raw = s.patch_reader("224px_0.5um").read([0])[0]
    from hestdata.store.codecs import decode_jpeg

    assert np.array_equal(np.asarray(g["images"][0]), decode_jpeg(raw))
    assert s.profile() is not None  # the pseudo-bulk, now under hestdata/tables


def _v020_root(tmp: Path) -> Path:
    with tarfile.open(ARCHIVE / "format2_v020_root.tar.xz") as tf:
        tf.extractall(tmp, filter="data")
    return tmp / "root2"


def test_a_020_root_is_read_as_it_is_and_split_by_upgrade(tmp_path):
    root = _v020_root(tmp_path)
    sample = root / "samples" / "v020_b.zarr"
    before = _without_hestdata(sample)
    # the archive is what 0.2.0 wrote: zarr fails on our codec (here, at the entry point that would import it)
    assert before.returncode != 0 and ("hestdata.jpeg" in before.stderr or "not installed here" in before.stderr)
    assert "zarr.open_group(p" in before.stderr or "open_group" in before.stderr
    r = Root.open(root)
    old = {sid: {n: r.sample(sid).patch_reader(n).read(list(range(r.sample(sid).patch_count(n)[0])))
                 for n in r.sample(sid).patch_arrays()} for sid in r.ids}
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    ds = hestdata.PatchDataset(root, patch="64px_0.5um", decode="cpu")
    assert len(ds) == sum(len(v["64px_0.5um"]) for v in old.values())
    version = r.version

    res = CliRunner().invoke(app, ["upgrade", str(root)])
    assert res.exit_code == 0 and "2 sample(s) now open without hestdata" in res.output, res.output
    r2 = Root.open(root)
    assert r2.version == version + 1 and r2.ids == r.ids
    for sid in r.ids:
        for n, patches in old[sid].items():  # the same bytes, read through the split metadata
            assert r2.sample(sid).patch_reader(n).read(list(range(len(patches)))) == patches
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    out = _result(_without_hestdata(sample))
    assert set(out["obs_index"]) == {"64px_0.5um", "32px_1um"}
    again = CliRunner().invoke(app, ["upgrade", str(root)])
    assert again.exit_code == 0 and "already in store format 2" in again.output


def test_image_metadata_matches_what_spatialdata_writes(her2st_root, tmp_path):
    """Our multiscale metadata (ome-zarr in spatialdata's raster format) against spatialdata's own writer: the same OME
    version, axes, channel labels and per-level scales, so a spec change in spatialdata shows up here."""
    import spatialdata as sd
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale, get_transformation

    s = Root.open(her2st_root).sample("her2st_B4")
    ours = dict(s.image().attrs)["ome"]
    levels = len(ours["multiscales"][0]["datasets"])
    ps = s.metadata.image.pixel_size_um
    img = np.zeros((3, 64 * 2 ** levels, 64 * 2 ** levels), np.uint8)
    el = Image2DModel.parse(img, dims=("c", "y", "x"), c_coords=["r", "g", "b"],
                            scale_factors=[2] * (levels - 1), transformations={"global": Scale([0.5, 0.5], ("y", "x"))})
    sd.SpatialData(images={"he": el}).write(tmp_path / "ref.zarr")
    import zarr

    ref = dict(zarr.open_group(str(tmp_path / "ref.zarr" / "images" / "he"), mode="r").attrs)["ome"]
    assert ours["version"] == ref["version"]
    assert ours["multiscales"][0]["axes"] == ref["multiscales"][0]["axes"]
    assert [c["label"] for c in ours["omero"]["channels"]] == [c["label"] for c in ref["omero"]["channels"]]
    scales = [d["coordinateTransformations"][0]["scale"] for d in ours["multiscales"][0]["datasets"]]
    ref_scales = [d["coordinateTransformations"][0]["scale"] for d in ref["multiscales"][0]["datasets"]]
    assert scales == ref_scales
    read = sd.read_zarr(s.local_path).images["he"]
    t = get_transformation(read["scale0"]["image"], "global")
    assert np.allclose(np.asarray(t.to_affine_matrix(("x", "y"), ("x", "y")))[[0, 1], [0, 1]], ps)
