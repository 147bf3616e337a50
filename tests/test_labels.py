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


def test_cluster_labels_through_convert_and_the_loader(tmp_path):
    counts, spots, image = her2st_inputs("C2")
    labels = shared("st_legacy", "her2st_annotated", "ST-cluster", "lbl", "C2-cluster-annotation.tsv.gz")
    root = tmp_path / "root"
    r = CliRunner().invoke(app, ["convert", "st", str(counts), "--spots", str(spots), "--image", str(image), "--out",
                                 str(root), "--id", "c2", "--labels", str(labels), "--meta", "patient=C"])
    assert r.exit_code == 0, r.output
    meta = hestdata.read_metadata(root / "samples" / "c2.zarr")
    q = meta.qc.labels
    assert q is not None and q.key == "array" and q.n_spots_labelled == 185 and q.n_rows_unmatched == 0
    table = hestdata.open_root(root).sample("c2").read_table()
    lab = table.obs["label"]
    assert lab.notna().sum() == 185 and set(q.columns["label"]) == set(lab.dropna().astype(str))
    from hestdata import PatchDataset

    ds = PatchDataset(root, labels="label", genes=["ERBB2"])
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
