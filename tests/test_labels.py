"""Region labels on spots (issue 29, deliverable 2): the her2st pathologist files (scaled, y-flipped pixels; joined
on array coordinates) against an independent pandas join on all eight annotated sections, and the expression-
cluster labels of a section with an image converted through the CLI and served by the loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import hestdata
from hestdata.cli import app
from hestdata.curation.labels import attach_labels
from hestdata.errors import InputError
from tests.conftest import her2st_inputs, shared

SECTIONS = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")


def _obs(base, section: str) -> pd.DataFrame:
    """Spots as read_st keys them: counts rows, array_row = the spot file's y, array_col = its x."""
    ids = pd.read_csv(base / "ST-cnts" / f"{section}.tsv.gz", sep="\t", usecols=[0], index_col=0).index
    sp = pd.read_csv(base / "ST-spotfiles" / f"{section}_selection.tsv", sep="\t")
    sp.index = [f"{x}x{y}" for x, y in zip(sp["x"], sp["y"], strict=True)]
    sp = sp.loc[ids]
    return pd.DataFrame({"array_row": sp["y"].to_numpy(), "array_col": sp["x"].to_numpy()}, index=ids)


@pytest.mark.parametrize("section", SECTIONS)
def test_pathologist_labels_join_as_an_independent_merge_says(section):
    base = shared("st_legacy", "her2st_annotated")
    path = base / "ST-pat" / "lbl" / f"{section}_labeled_coordinates.tsv"
    obs = _obs(base, section)
    out, qc = attach_labels(obs, path)
    raw = pd.read_csv(path, sep="\t")
    placed = raw.dropna(subset=["x", "y"])
    key = [f"{round(x)}x{round(y)}" for x, y in zip(placed["x"], placed["y"], strict=True)]  # "{col}x{row}"
    merged = placed.assign(spot=key).merge(obs.assign(spot=obs.index), on="spot")
    assert qc["key"] == "array" and qc["n_rows"] == len(raw)
    assert qc["n_rows_without_position"] == len(raw) - len(placed)  # F1 1, G2 8
    assert qc["n_spots_labelled"] == len(merged) and qc["n_rows_unmatched"] == len(placed) - len(merged)
    assert qc["n_masked"] == int((merged["label"] == "undetermined").sum())
    want = merged.set_index("spot")["label"]
    got = out["label"]
    assert "undetermined" not in set(got.dropna())  # masked, never a class
    kept = want[want != "undetermined"]
    assert (got.loc[kept.index].astype(str) == kept).all()
    assert got.isna().sum() == len(obs) - len(kept)
    assert qc["columns"]["label"] == {str(k): int(v) for k, v in kept.value_counts().items()}


def test_bad_label_tables_fail_naming_the_file(tmp_path):
    obs = pd.DataFrame({"array_row": [1, 2], "array_col": [1, 1]}, index=["a", "b"])
    p = tmp_path / "l.csv"
    p.write_text("barcode,label\na,x\na,y\n")
    with pytest.raises(InputError, match="l.csv.*two rows"):
        attach_labels(obs, p)
    p.write_text("foo,bar\n1,2\n")
    with pytest.raises(InputError, match="l.csv.*no key"):
        attach_labels(obs, p)
    p.write_text("barcode,score\na,1\nb,2\n")
    with pytest.raises(InputError, match="l.csv.*no label column"):
        attach_labels(obs, p)
    p.write_text("barcode,label\na,tumour\nb,Undetermined\nzz,stroma\n")
    out, qc = attach_labels(obs, p)
    assert qc["key"] == "barcode" and qc["n_masked"] == 1 and qc["n_rows_unmatched"] == 1
    assert out["label"].tolist()[0] == "tumour" and pd.isna(out["label"].tolist()[1])


def test_the_labels_flag_fails_in_one_line_before_any_work_and_reports_the_join(tmp_path):
    counts, spots, image = her2st_inputs("C2")
    bad = tmp_path / "labels.csv"
    bad.write_text("foo,bar\n1,2\n")
    r = CliRunner().invoke(app, ["convert", "st", str(counts), "--spots", str(spots), "--image", str(image), "--out",
                                 str(tmp_path / "root"), "--id", "c2", "--labels", str(bad)])
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "labels.csv" in lines[0] and "no key" in lines[0], r.output
    good = tmp_path / "good.csv"  # keyed by the spots' ids; what the join did is printed with the summary
    ids = pd.read_csv(counts, sep="\t", usecols=[0], index_col=0).index
    good.write_text("barcode,region\n" + "".join(f"{b},{'tumour' if i % 2 else 'Undetermined'}\n"
                                                 for i, b in enumerate(ids[:10])) + "nosuchspot,stroma\n")
    r = CliRunner().invoke(app, ["convert", "st", str(counts), "--spots", str(spots), "--image", str(image), "--out",
                                 str(tmp_path / "ok"), "--id", "c2", "--labels", str(good), "--no-patches"])
    assert r.exit_code == 0, r.output
    assert "labels (good.csv, by barcode): 10 spots labelled, 5 masked, 1 rows matched no spot" in r.output
    assert "label_region: tumour 5" in r.output
    assert not (tmp_path / "root" / "samples").exists() or not list((tmp_path / "root" / "samples").iterdir())


def test_cluster_labels_through_convert_and_the_loader(her2st_root):
    """The session's her2st root is converted with the sections' cluster labels (tests/conftest.py)."""
    shared("st_legacy", "her2st_annotated")
    root = her2st_root
    meta = hestdata.read_metadata(root / "samples" / "her2st_C2.zarr")
    q = meta.qc.labels
    assert q is not None and q.key == "array" and q.n_spots_labelled == 185 and q.n_rows_unmatched == 0
    table = hestdata.open_root(root).sample("her2st_C2").read_table()
    lab = table.obs["label"]
    assert lab.notna().sum() == 185 and set(q.columns["label"]) == set(lab.dropna().astype(str))
    from hestdata import PatchDataset

    ds = PatchDataset(root, query="id = 'her2st_C2'", labels="label", genes=["ERBB2"])
    assert ds.classes == sorted(set(lab.dropna().astype(str)))
    item = ds[0]
    obs_label = lab.loc[item["obs_id"]]
    assert int(item["label"]) == (ds.classes.index(str(obs_label)) if pd.notna(obs_label) else -1)
    loader = hestdata.make_loader(ds, batch_size=64)
    seen = np.concatenate([b["label"].numpy() for b in loader])
    assert len(seen) == len(ds) and ((seen >= -1) & (seen < len(ds.classes))).all() and (seen >= 0).sum() > 150
    with pytest.raises(Exception, match="nope"):
        PatchDataset(root, labels="nope")
    assert hestdata.validate(root).ok


def test_patch_classification_task_runs_from_labelled_samples(her2st_root, tmp_path):
    """The task type on real H&E with labels joined at conversion: her2st C2 and C3 (patient C; expression-cluster
    ids are per patient, so the folds are by section here and the labels come from expression: a data-path check,
    not a pathology benchmark). Unlabelled spots are left out; rows carry pooled metrics with intervals."""
    import shutil

    import polars as pl

    from hestdata.bench.runner import run_benchmark

    shared("st_legacy", "her2st_annotated")
    root = tmp_path / "root"
    shutil.copytree(her2st_root, root, ignore=shutil.ignore_patterns("embeddings", "leaderboard*"))
    task = tmp_path / "clusters.yaml"
    task.write_text("name: her2st_C_clusters\ntype: patch_classification\nsamples: \"patient = 'C'\"\n"
                    "group_by: id\nlabel: label\npatch: 224px_0.5um\noptions: {shots: [1, 4], shot_seeds: 2, n_boot: 100}\n")
    rows = run_benchmark(root, "color-stats", task, cache_dir=tmp_path / "c")
    m = {r["metric"]: r for r in rows}
    assert m["linear_balanced_accuracy"]["folds"] == ["her2st_C2", "her2st_C3"]
    pooled = m["linear_balanced_accuracy_pooled"]
    assert 0 <= pooled["mean"] <= 1 and pooled["ci_low"] <= pooled["mean"] <= pooled["ci_high"]
    assert "fewshot4_balanced_accuracy" in m and "knn_macro_auroc_pooled" in m
    lb = pl.read_parquet(root / "leaderboard.parquet")
    assert set(lb["task_type"]) == {"patch_classification"}


def _features(*polys: tuple[str | None, list[tuple[float, float]]], **top: object) -> dict:
    feats = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[*pts, pts[0]]]},
              "properties": {"classification": {"name": lab, "color": [255, 0, 0]}} if lab else {}}
             for lab, pts in polys]
    feats.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 1]}, "properties": {}})
    return {"type": "FeatureCollection", "features": feats, **top}


def test_polygon_labels_by_centre_smallest_wins_counted_and_format_3(tmp_path):
    """QuPath-style GeoJSON in full-resolution pixels: each spot takes the label of the polygon holding its centre
    (checked against an independent point-in-rectangle test), a region inside another wins, and what does not fit
    is counted; the sample is format 3 and its labels reach the loader."""
    import json

    from tests.synth import synthetic_sample

    s = synthetic_sample("poly", n=16, pixel_size_um=0.5)  # spots at x = 400..1000 px, y = 400..1000 px
    obs = s.expression.obs
    x, y = obs["pxl_col_in_fullres"].to_numpy(), obs["pxl_row_in_fullres"].to_numpy()
    left = [(0, 0), (700, 0), (700, 2000), (0, 2000)]
    right = [(700, 0), (2000, 0), (2000, 2000), (700, 2000)]
    nest = [(350, 350), (650, 350), (650, 450), (350, 450)]  # inside "left": the first row's left half
    nowhere = [(3000, 3000), (3100, 3000), (3100, 3100)]
    gj = tmp_path / "regions.geojson"
    gj.write_text(json.dumps(_features(("stroma", left), ("tumour", right), ("immune", nest), ("undetermined", nowhere))))
    s.slide_inputs["labels"] = gj
    path = hestdata.convert(s, tmp_path / "root", patches=["64px_0.5um"])
    meta = hestdata.read_metadata(path)
    assert meta.format_version == 3 and meta.qc.labels.key == "polygon"
    want = np.where(x < 700, "stroma", "tumour").astype(object)
    want[(x > 350) & (x < 650) & (y > 350) & (y < 450)] = "immune"
    table = hestdata.open_root(tmp_path / "root").sample("poly").read_table()
    assert list(table.obs["label"].astype(str)) == list(want)
    q = meta.qc.labels
    assert q.n_overlaps == int((want == "immune").sum()) > 0 and q.n_rows == 5 and q.n_rows_without_position == 1
    assert q.n_rows_unmatched == 1 and q.n_spots_labelled == len(obs) and q.columns["label"]["immune"] == 2
    from hestdata.loader.dataset import PatchDataset

    ds = PatchDataset(tmp_path / "root", patch="64px_0.5um", labels="label", decode="cpu")
    assert ds.classes == ["immune", "stroma", "tumour"]
    # the same regions in µm, declared so
    um = tmp_path / "regions_um.geojson"
    scale = [[(a * 0.5, b * 0.5) for a, b in p] for p in (left, right, nest)]
    um.write_text(json.dumps(_features(("stroma", scale[0]), ("tumour", scale[1]), ("immune", scale[2]), unit="um")))
    again, _ = attach_labels(table.obs, um)
    assert list(again["label"].astype(str)) == list(want)
    bad = tmp_path / "bad.geojson"
    bad.write_text(json.dumps({"type": "FeatureCollection", "features": [], "unit": "inch"}))
    with pytest.raises(InputError, match=r"bad\.geojson.*unit 'inch'"):
        attach_labels(table.obs, bad, pixel_size_um=0.5)
