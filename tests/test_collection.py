"""Image collections (store format 3): class folders, manifests, VOC/COCO/CSV boxes on the real BCCD smears, JPEG
bytes kept as they are, the unknown pixel size recorded (never guessed), errors that name the file, the loader's
labels, classification folds by an item column, and MIL over fields of view as bags of cells."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import hestdata
from hestdata.errors import InputError
from hestdata.store.root import Root

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hematology"
CROPS = DATA / "bccd_wbc_crops" / "BCCD_cropped"
BCCD = DATA / "bccd" / "BCCD"
FOVS = ["BloodImage_00000", "BloodImage_00001", "BloodImage_00338", "BloodImage_00343", "BloodImage_00133",
        "BloodImage_00008", "BloodImage_00009", "BloodImage_00017"]  # 00338/00343: a zero-area RBC box each; 00133: no WBC box


def _convert(images: Path, root: Path, **kw: object) -> list[Path]:
    return hestdata.convert_images(images, root, **kw)


@pytest.fixture(scope="module")
def crops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four crops of each class folder (all three basophils), linked into a class-folder tree."""
    d = tmp_path_factory.mktemp("crops")
    for cls in sorted(p for p in CROPS.iterdir() if p.is_dir()):
        (d / cls.name).mkdir()
        for f in sorted(cls.glob("*.jpg"))[:4]:
            (d / cls.name / f.name).symlink_to(f)
    return d


@pytest.fixture(scope="module")
def fov_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Six BCCD fields of view with their VOC boxes, one sample each, and a manifest of WBC types."""
    d = tmp_path_factory.mktemp("fov")
    imgs, ann = d / "JPEGImages", d / "Annotations"
    imgs.mkdir()
    ann.mkdir()
    for s in FOVS:
        (imgs / f"{s}.jpg").symlink_to(BCCD / "JPEGImages" / f"{s}.jpg")
        (ann / f"{s}.xml").symlink_to(BCCD / "Annotations" / f"{s}.xml")
    lab = pd.read_csv(DATA / "bccd" / "labels.csv")
    by_id = {f"BloodImage_{int(i):05d}": c for i, c in zip(lab["Image"], lab["Category"], strict=True)}
    pd.DataFrame({"path": [f"{s}.jpg" for s in FOVS], "wbc_type": [by_id.get(s) for s in FOVS]}).to_csv(
        d / "manifest.csv", index=False)
    root = d / "root"
    _convert(imgs, root, boxes=ann, manifest=d / "manifest.csv", group_by="image", sample_prefix="fov-")
    return root, d


def _voc_boxes(stem: str) -> list[tuple[str, float, float, float, float]]:
    doc = ET.parse(BCCD / "Annotations" / f"{stem}.xml").getroot()
    out = []
    for o in doc.findall("object"):
        b = o.find("bndbox")
        out.append((o.findtext("name").strip(), *(float(b.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))))
    return out


def test_class_folders_one_sample_labels_and_loader(crops, tmp_path):
    root = tmp_path / "root"
    (path,) = _convert(crops, root, item_kind="cells", sample_prefix="crops")
    meta = hestdata.read_metadata(path)
    expected = {c.name: len(list(c.iterdir())) for c in crops.iterdir()}
    assert meta.variant == "images" and meta.format_version == 3 and meta.pixel_size_um is None
    assert meta.qc.collection.labels == {"label": expected} and meta.qc.collection.n_unlabelled == {"label": 0}
    assert meta.qc.collection.n_items == sum(expected.values()) == meta.qc.n_obs
    assert Root.open(root).catalog["pixel_size_um"].to_list() == [None]  # unknown: null, not a guess
    assert hestdata.validate(root).ok
    import spatialdata as sd  # opens without hestdata's help: a table that annotates no element

    items = sd.read_zarr(path).tables["items"]
    assert items.n_obs == meta.qc.n_obs and items.obs["label"].value_counts().to_dict() == expected
    from hestdata.loader.dataset import PatchDataset

    ds = PatchDataset(root, patch="cells-224px", labels="label", decode="cpu")
    assert ds.classes == sorted(expected) and len(ds) == sum(expected.values())
    for i in range(len(ds)):
        item = ds[i]
        assert ds.classes[int(item["label"])] == item["obs_id"].split("/")[0]  # the class folder of that file
        assert tuple(item["image"].shape) == (3, 224, 224)
        assert np.isnan(item["coords_um"].numpy()).all()  # no µm frame without a pixel size


def test_a_patches_only_download_keeps_the_items_labels(crops, tmp_path):
    """The items table is the patches' index (their labels), so it travels with --only patches."""
    from hestdata.loader.dataset import PatchDataset
    from hestdata.remote.download import element_of

    assert element_of("tables/items/obs/label/codes/c/0") == ("patches", None)
    assert element_of("tables/expression/X/data/c/0") == ("expression", None)
    _convert(crops, tmp_path / "root", item_kind="cells", sample_prefix="c", patches=["32px"])
    out = hestdata.download(str(tmp_path / "root"), tmp_path / "copy", elements=["patches"], workers=2)
    ds = PatchDataset(out, patch="cells-32px", labels="label", decode="cpu")
    assert len(ds) == 19 and int(ds[0]["label"]) >= 0
    assert hestdata.validate(out).ok, hestdata.validate(out).violations


def test_fit_crop_equals_an_independent_resize(crops, tmp_path):
    """A crop folder's item is the whole image resized to 224 (they are square): PIL's own resize of the file."""
    root = tmp_path / "root"
    _convert(crops, root, item_kind="cells", sample_prefix="c", jpeg_quality=100)
    s = Root.open(root).sample("c")
    obs = s.read_table("items").obs
    g = s.patch_group("cells-224px")
    for i in (0, 5, 11):
        f = crops / obs.index[i]
        with Image.open(f) as im:
            assert im.size[0] == im.size[1]
            ref = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.LANCZOS), dtype=float)
        got = np.asarray(g["images"][i], dtype=float)
        assert np.abs(got - ref).mean() < 2.5, i  # JPEG at quality 100 of the same resize


def test_baseline_jpeg_bytes_are_kept_others_reencoded(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "tiles"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir()
    arrs = {}
    for k in range(3):
        a = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
        arrs[f"a/base{k}.jpg"] = a
        Image.fromarray(a).save(d / "a" / f"base{k}.jpg", quality=92)
    Image.fromarray(arrs["a/base0.jpg"]).save(d / "b" / "prog.jpg", quality=92, progressive=True)
    Image.fromarray(arrs["a/base1.jpg"]).save(d / "b" / "png.png")
    Image.fromarray(arrs["a/base2.jpg"][:, :, 0]).save(d / "b" / "grey.jpg", quality=92)
    Image.fromarray(arrs["a/base2.jpg"][:48]).save(d / "b" / "wide.jpg", quality=92)  # 64x48: padded to a square
    (path,) = _convert(d, tmp_path / "root", patches=["64px"], sample_prefix="t")
    meta = hestdata.read_metadata(path)
    assert meta.qc.collection.jpeg_kept == {"64px": 3}
    assert meta.qc.patches["64px"].n_partial_outside_image == 1  # the wide one, zero-filled
    s = Root.open(tmp_path / "root").sample("t")
    reader = s.patch_reader("64px")
    names = list(s.read_table("items").obs.index)
    raw = list(reader.read(np.arange(len(names))))
    for n, data in zip(names, raw, strict=True):
        same = bytes(data) == (d / n).read_bytes()
        assert same == n.startswith("a/base"), n  # kept byte for byte exactly where it is a baseline RGB JPEG
    wide = np.asarray(s.patch_group("64px")["images"][names.index("b/wide.jpg")])
    assert wide[:6].mean() < 6 and wide[-6:].mean() < 6 and wide[20:40].mean() > 60  # centred, black above/below
    again = _convert(d, tmp_path / "root2", patches=["64px"], sample_prefix="t", keep_jpeg=False)
    assert hestdata.read_metadata(again[0]).qc.collection.jpeg_kept == {"64px": 0}


def test_voc_boxes_fields_of_view_as_samples(fov_root):
    root, d = fov_root
    r = Root.open(root)
    assert r.ids == sorted(f"fov-{s}" for s in FOVS)
    assert hestdata.validate(root).ok
    for stem in FOVS:
        s = r.sample(f"fov-{stem}")
        meta = s.metadata
        boxes = _voc_boxes(stem)
        good = [b for b in boxes if b[3] > b[1] and b[4] > b[2]]
        assert meta.qc.collection.n_items == len(good) and meta.qc.collection.n_boxes_degenerate == len(boxes) - len(good)
        obs = s.read_table("items").obs
        # VOC's one-based inclusive corners become the continuous frame [xmin - 1, xmax)
        got = sorted(zip(obs["box_class"].astype(str), obs["x0_px"] + 1, obs["y0_px"] + 1, obs["x1_px"], obs["y1_px"],
                         strict=True))
        assert got == sorted(good)
        assert set(obs["wbc_type"].astype(str)) <= {"NEUTROPHIL", "EOSINOPHIL", "BASOPHIL", "nan"}
    assert r.sample("fov-BloodImage_00338").metadata.qc.collection.n_boxes_degenerate == 1


def test_box_crop_matches_the_box_and_formats_agree(fov_root, tmp_path):
    """The WBC crop is the box's square with 25 % context (an independent PIL crop and resize); COCO JSON and CSV boxes
    give the same items as VOC."""
    root, d = fov_root
    s = Root.open(root).sample("fov-BloodImage_00000")
    obs = s.read_table("items").obs
    i = int(np.flatnonzero(obs["box_class"].astype(str) == "WBC")[0])
    x0, y0, x1, y1 = (float(obs.iloc[i][k]) for k in ("x0_px", "y0_px", "x1_px", "y1_px"))
    side = max(x1 - x0, y1 - y0) * 1.25
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    with Image.open(BCCD / "JPEGImages" / "BloodImage_00000.jpg") as im:
        ref = np.asarray(im.convert("RGB").resize((224, 224), Image.Resampling.LANCZOS,
                                                  box=(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)),
                         dtype=float)
    got = np.asarray(s.patch_group("cells-224px")["images"][i], dtype=float)
    assert np.abs(got - ref).mean() < 4.0
    # the same boxes as COCO (x, y, w, h in the continuous frame) and as a CSV table
    images, anns, rows = [], [], []
    for k, stem in enumerate(FOVS):
        images.append({"id": k, "file_name": f"{stem}.jpg", "width": 640, "height": 480})
        for name, a, b, c, e in _voc_boxes(stem):
            if not (c > a and e > b):
                continue  # the clicks VOC reading skips (counted there)
            anns.append({"id": len(anns), "image_id": k, "category_id": {"RBC": 1, "WBC": 2, "Platelets": 3}[name],
                         "bbox": [a - 1, b - 1, c - a + 1, e - b + 1]})
            rows.append({"path": f"{stem}.jpg", "x0": a - 1, "y0": b - 1, "x1": c, "y1": e, "class": name})
    (tmp_path / "coco.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [
        {"id": 1, "name": "RBC"}, {"id": 2, "name": "WBC"}, {"id": 3, "name": "Platelets"}]}))
    pd.DataFrame(rows).to_csv(tmp_path / "boxes.csv", index=False)
    src = hestdata.get_source("images")
    opts = src.parse_options({"group_by": "none", "sample_prefix": "all", "box_classes": ["WBC", "RBC"]})
    items = {}
    for kind, boxes in (("voc", d / "Annotations"), ("coco", tmp_path / "coco.json"), ("csv", tmp_path / "boxes.csv")):
        smp = src.read({"images": d / "JPEGImages", "boxes": boxes}, sample_id="all", options=opts)
        items[kind] = smp.items[["path", "x0", "y0", "x1", "y1", "box_class"]].reset_index(drop=True)
        n_platelets = sum(b[0] == "Platelets" for stem in FOVS for b in _voc_boxes(stem))
        if kind == "voc":  # the platelets left out and the two clicks, counted (COCO/CSV were written without clicks)
            assert (smp.counts["n_boxes_filtered"], smp.counts["n_boxes_degenerate"]) == (n_platelets, 2)
    pd.testing.assert_frame_equal(items["voc"], items["coco"], check_dtype=False)
    pd.testing.assert_frame_equal(items["voc"], items["csv"], check_dtype=False)


def test_declared_pixel_size_gives_physical_patches(crops, tmp_path):
    files = sorted(p.relative_to(crops).as_posix() for p in crops.rglob("*.jpg"))[:4]
    pd.DataFrame({"path": files, "pixel_size_um": 0.1, "patient": ["p1", "p1", "p2", "p2"]}).to_csv(
        tmp_path / "m.csv", index=False)
    paths = _convert(crops, tmp_path / "root", manifest=tmp_path / "m.csv", patches=["64px_0.5um", "32px"])
    assert [p.name for p in paths] == ["p1.zarr", "p2.zarr"]
    meta = hestdata.read_metadata(paths[0])
    assert meta.pixel_size_um.value == 0.1 and meta.pixel_size_um.trusted == "user" and meta.patient == "p1"
    assert meta.qc.patches["64px_0.5um"].source_pixel_size_um == 0.1
    s = Root.open(tmp_path / "root").sample("p1")
    obs = s.read_table("items").obs
    g = s.patch_group("64px_0.5um")
    # 64 px at 0.5 µm = 32 µm = 320 source pixels around the centre of an image of about 220 px: zero-filled sides
    w = int(obs["image_width_px"].iloc[0])
    assert g.attrs["pixel_size_um"] == 0.5
    cen = np.asarray(g["centers_um"][:])
    assert np.allclose(cen[0], [w / 2 * 0.1, int(obs["image_height_px"].iloc[0]) / 2 * 0.1])
    img = np.asarray(g["images"][0])
    margin = int(round((320 - w) / 2 / 5))  # zero columns on each side, in patch pixels
    assert margin >= 2 and img[:, : margin - 1].mean() < 6 and img[:, 32].mean() > 40


def test_errors_name_the_file_and_the_fix(crops, tmp_path):
    pd.DataFrame({"path": ["Neutrophil/nope.jpg"]}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(InputError, match=r"m\.csv.*name no file.*nope\.jpg"):
        _convert(crops, tmp_path / "r", manifest=tmp_path / "m.csv")
    with pytest.raises(InputError, match=r"needs the collection's pixel size.*declare it.*224px"):
        _convert(crops, tmp_path / "r", patches=["224px_0.5um"])
    mixed = tmp_path / "mixed"
    shutil.copytree(crops, mixed, symlinks=True)
    shutil.copy(next(crops.rglob("*.jpg")), mixed / "loose.jpg")
    with pytest.raises(InputError, match="directly.*class folders"):
        _convert(mixed, tmp_path / "r")
    ann = tmp_path / "ann"
    ann.mkdir()
    xml = (BCCD / "Annotations" / "BloodImage_00000.xml").read_text().replace("<width>640</width>", "<width>800</width>")
    (ann / "BloodImage_00000.xml").write_text(xml)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    (imgs / "BloodImage_00000.jpg").symlink_to(BCCD / "JPEGImages" / "BloodImage_00000.jpg")
    with pytest.raises(InputError, match=r"BloodImage_00000\.xml.*800x480.*640x480"):
        _convert(imgs, tmp_path / "r", boxes=ann)
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r" / "samples").glob("*.zarr"))


def test_a_format_3_sample_tells_an_older_reader_to_upgrade(crops, tmp_path, monkeypatch):
    (path,) = _convert(crops, tmp_path / "root", sample_prefix="c")
    import hestdata.metadata as M

    monkeypatch.setattr(M, "SAMPLE_FORMAT_VERSION", 2)  # what hestdata 0.4 reads
    with pytest.raises(hestdata.HestdataError, match=r"store format 3 by hestdata .*reads formats up to 2"):
        hestdata.read_metadata(path)


def test_cell_classification_folds_by_item_column_and_mil_over_fields_of_view(crops, fov_root, tmp_path):
    from hestdata.bench.runner import Task, run_benchmark

    root = tmp_path / "root"
    _convert(crops, root, item_kind="cells", sample_prefix="crops", patches=["32px"])
    t = Task(name="wbc", type="cell_classification", samples="technology == 'images'", group_by="obs:path",
             patch="cells-32px", label="label", options={"n_folds": 3, "n_boot": 50, "shot_seeds": 1,
                                                         "shots": [1, 2]})
    rows = run_benchmark(root, "color-stats", t, leaderboard=False)
    by = {r["metric"]: r for r in rows}
    assert by["chance_balanced_accuracy_pooled"]["mean"] == pytest.approx(0.2)
    lin = by["linear_balanced_accuracy_pooled"]
    assert 0 <= lin["ci_low"] <= lin["mean"] <= lin["ci_high"] <= 1 and len(by["linear_balanced_accuracy"]["folds"]) == 3
    run_benchmark(root, "color-stats", t)
    (folder,) = (root / "figures" / "wbc").iterdir()
    pred = pd.read_csv(folder / "predictions.csv")
    assert len(pred) == sum(len(list(c.iterdir())) for c in crops.iterdir()) and (folder / "confusion.png").stat().st_size
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    from hestdata.plot.confusion import confusion_counts

    classes = sorted(pred["label"].unique())
    assert (confusion_counts(pred["label"].to_numpy(), pred["predicted"].to_numpy(), classes)
            == confusion_matrix(pred["label"], pred["predicted"], labels=classes)).all()
    from typer.testing import CliRunner

    from hestdata.cli import app

    shown = CliRunner().invoke(app, ["bench", "leaderboard", str(root), "--task", "wbc", "--metric",
                                     "linear_balanced_accuracy_pooled", "--metric", "knn_balanced_accuracy_pooled"])
    assert shown.exit_code == 0, shown.output
    header = next(line for line in shown.output.splitlines() if line.startswith("| encoder"))
    assert header.split("|")[2:4] == [" linear_balanced_accuracy_pooled ↑ ", " knn_balanced_accuracy_pooled ↑ "]
    assert "± 0.0000" not in shown.output  # a pooled value has no spread over folds to show
    info = CliRunner().invoke(app, ["info", str(root)])
    assert "(store format 2; samples in format 3, catalog version" in info.output, info.output
    bad = CliRunner().invoke(app, ["bench", "leaderboard", str(root), "--task", "nope"])
    assert bad.exit_code == 1 and "no task nope; it has wbc" in bad.output
    lin = {r["metric"]: r for r in run_benchmark(root, "color-stats", t, leaderboard=False)}
    assert balanced_accuracy_score(pred["label"], pred["predicted"]) == pytest.approx(
        lin["linear_balanced_accuracy_pooled"]["mean"])
    with pytest.raises(InputError, match="obs column.*patch and cell classification"):
        run_benchmark(root, "color-stats", Task(**{**t.__dict__, "type": "expression"}), leaderboard=False)
    # fields of view as bags of every boxed cell (RBC, WBC, platelets), the image's WBC type as the bag's label
    froot, d = fov_root
    man = pd.read_csv(d / "manifest.csv").dropna()
    man = man[man["wbc_type"].isin(["NEUTROPHIL", "EOSINOPHIL"])]
    pd.DataFrame({"PATIENT": [f"fov-{Path(p).stem}" for p in man["path"]],
                  "FILENAME": [f"fov-{Path(p).stem}" for p in man["path"]],
                  "wbc": man["wbc_type"]}).to_csv(tmp_path / "bags.csv", index=False)
    mil = Task(name="fov_mil", type="slide_mil", samples="technology == 'images'", group_by="id",
               patch="cells-224px", label="wbc", labels=str(tmp_path / "bags.csv"),
               options={"n_folds": 2, "epochs": 2, "aggregator": "abmil", "n_boot": 20})
    rows = run_benchmark(froot, "color-stats", mil, leaderboard=False)
    assert {"auroc", "balanced_accuracy"} <= {r["metric"].split("_", 1)[-1] for r in rows} | {r["metric"] for r in rows}
    # no spatial frame to draw attention on: each held-out item's weight in a table, with its box class
    (att,) = (froot / "heatmaps" / "fov_mil").glob("*/attention.csv")
    a = pd.read_csv(att)
    r = Root.open(froot)
    assert set(a["sample"]) <= set(bags := pd.read_csv(tmp_path / "bags.csv")["FILENAME"]) and len(set(a["sample"]))
    for sid, grp in a.groupby("sample"):
        assert len(grp) == r.sample(sid).metadata.qc.n_obs and grp["attention"].sum() == pytest.approx(1, abs=1e-4)
        assert set(grp["box_class"]) <= {"RBC", "WBC", "Platelets"}
    assert len(bags)


def test_a_changed_collection_is_read_again(tmp_path):
    """The collection read is cached for a many-sample conversion; a file added to a class folder is seen."""
    from PIL import Image

    d = tmp_path / "c"
    (d / "a").mkdir(parents=True)
    (d / "b").mkdir()
    for name in ("a/1.png", "b/1.png"):
        Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(d / name)
    src = hestdata.get_source("images")
    opts = src.parse_options({"sample_prefix": "c"})
    assert len(src.read({"images": d}, sample_id="c", options=opts).items) == 2
    import os
    import time

    Image.fromarray(np.full((16, 16, 3), 50, np.uint8)).save(d / "a" / "2.png")
    os.utime(d / "a", ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # a coarse clock still moves
    assert len(src.read({"images": d}, sample_id="c", options=opts).items) == 3
