"""Slide-level data (issue 16): pseudo-bulk and file profiles, alterations, the slide tasks on planted, degenerate
and real (her2st) data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import hestdata
from tests.conftest import her2st_inputs, shared


def _profile(path):
    import anndata as ad
    import zarr
    from anndata.io import read_elem

    return ad.AnnData(**{k: read_elem(zarr.open_group(str(path / "hestdata" / "tables" / "slide_profile"), mode="r")[k])
                         for k in ("X", "obs", "var")})


def test_pseudobulk_equals_the_raw_counts_of_the_in_tissue_spots(her2st_root):
    """The profile is the column sum of the source TSV over the spots the selection marks, gene by gene."""
    path = her2st_root / "samples" / "her2st_C3.zarr"
    meta = hestdata.read_metadata(path)
    assert meta.slide_profile.kind == "pseudobulk"
    prof = _profile(path)
    assert prof.shape[0] == 1 and list(prof.obs_names) == ["her2st_C3"]
    import spatialdata

    tab = spatialdata.read_zarr(path).tables["expression"]
    marked = tab.obs["in_profile"].to_numpy().astype(bool)
    assert (marked == (tab.obs["in_tissue"].to_numpy() > 0)).all() and meta.slide_profile.n_spots == marked.sum()
    counts, spots, _ = her2st_inputs("C3")
    raw = pd.read_csv(counts, sep="\t", index_col=0)  # spots x genes, as published
    sel = pd.read_csv(spots, sep="\t")
    chosen = {f"{x}x{y}" for x, y, s in zip(sel["x"], sel["y"], sel["selected"], strict=True) if s == 1}
    raw_sum = raw.loc[[i for i in raw.index if i in chosen]].sum(axis=0)
    orig = tab.var["original_name"].astype(str).to_numpy()
    got = np.asarray(prof.X).ravel()
    np.testing.assert_allclose(got, raw_sum.loc[orig].to_numpy(), rtol=0, atol=0)
    assert meta.slide_profile.total == pytest.approx(raw_sum.sum())
    cat = hestdata.open_catalog(her2st_root)
    assert set(cat["profile"].to_list()) == {"pseudobulk"}


def test_profile_and_alterations_files_on_a_whole_slide(tmp_path):
    from typer.testing import CliRunner

    from hestdata.cli import app

    prof = tmp_path / "bulk.csv"
    prof.write_text("gene,tpm\nERBB2,120.5\nESR1,3.0\nACTB,900\n")
    alt = tmp_path / "alt.tsv"
    alt.write_text("sample\tMSI\tKRAS\tTMB\ncmu1\tMSI-H\t1\t12.5\n")
    svs = shared("wsi", "CMU-1-Small-Region.svs")
    root = tmp_path / "root"
    r = CliRunner().invoke(app, ["convert", "wsi", str(svs), "--out", str(root), "--id", "cmu1", "--profile", str(prof),
                                 "--alterations", str(alt), "--meta", "species=Homo sapiens"])
    assert r.exit_code == 0, r.output
    path = root / "samples" / "cmu1.zarr"
    meta = hestdata.read_metadata(path)
    assert meta.slide_profile.kind == "file" and meta.slide_profile.n_genes == 3
    assert meta.alterations == {"MSI": "MSI-H", "KRAS": True, "TMB": 12.5}
    p = _profile(path)
    assert list(p.var_names) == ["ERBB2", "ESR1", "ACTB"] and np.asarray(p.X).ravel().tolist() == [120.5, 3.0, 900.0]
    assert p.var["gene_ids"].str.startswith("ENSG").all()  # unified like a spot table
    cat = hestdata.open_catalog(root)
    assert cat["profile"].to_list() == ["file"] and cat["alterations"].to_list() == [["KRAS", "MSI", "TMB"]]
    import spatialdata

    sd = spatialdata.read_zarr(path)  # the slide-level tables live outside tables/: spatial queries ignore them
    assert not {"slide_profile", "slide_alterations"} & set(sd.tables)
    import anndata as ad
    import zarr

    alt = ad.io.read_elem(zarr.open_group(path / "hestdata" / "tables" / "slide_alterations", mode="r"))
    assert alt.obs["MSI"].tolist() == ["MSI-H"]
    assert hestdata.validate(root).ok, hestdata.validate(root).violations
    bad = tmp_path / "bad.csv"
    bad.write_text("gene,value\nERBB2,-1\n")
    r = CliRunner().invoke(app, ["convert", "wsi", str(svs), "--out", str(tmp_path / "r2"), "--id", "x",
                                 "--profile", str(bad)])
    assert r.exit_code != 0 and "bad.csv" in r.output and "negative" in r.output
    assert not (tmp_path / "r2" / "samples" / "x.zarr").exists()


def _planted(n_slides: int = 16, d: int = 8, g: int = 60, seed: int = 0):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n_slides, d))
    w = rng.normal(size=(d, g))
    rate = np.exp(2 + 0.8 * emb @ w / np.sqrt(d))
    profiles = rng.poisson(rate * 50).astype(float)
    groups = np.array([f"P{i // 2}" for i in range(n_slides)])  # two slides per patient
    return emb, profiles, groups, [f"G{i}" for i in range(g)]


def test_slide_expression_learns_a_planted_map_and_nothing_from_shuffled_slides():
    from scipy.stats import pearsonr

    from hestdata.bench.tasks.slide_level import group_folds, normalise_profiles, slide_expression_protocol

    emb, prof, groups, genes = _planted()
    res = slide_expression_protocol(emb, prof, groups, genes, n_genes=40, alpha=1.0)
    assert res.metrics["pearson_mean"] > 0.7, res.metrics
    assert res.metrics["mse"] < 0.5 * res.metrics["mean_profile_mse"]  # far better than the no-image baseline
    # independent check of one gene's r (scipy) on the pooled out-of-fold predictions
    y = normalise_profiles(prof)[:, [genes.index(res.genes[0])]].ravel()
    ok = np.isfinite(res.predictions[:, 0])  # slides whose fold chose this gene
    assert res.per_gene[res.genes[0]]["n_slides"] == ok.sum() >= 3
    assert res.per_gene[res.genes[0]]["pearson"] == pytest.approx(pearsonr(res.predictions[ok, 0], y[ok])[0], abs=1e-9)
    rng = np.random.default_rng(1)
    shuffled = np.mean([slide_expression_protocol(rng.permutation(emb), prof, groups, genes, n_genes=40)
                        .metrics["pearson_mean"] for _ in range(5)])
    assert abs(shuffled) < 0.3, shuffled
    for te in group_folds(groups, 5):  # a patient's slides are tested together, never split
        assert set(groups[te]).isdisjoint(set(groups[np.setdiff1d(np.arange(len(groups)), te)]))
    with pytest.raises(ValueError, match="at least two patients"):
        slide_expression_protocol(emb, prof, np.array(["P"] * len(emb)), genes)
    with pytest.raises(ValueError, match="constant"):
        slide_expression_protocol(emb, np.ones_like(prof), groups, genes)


def test_slide_gene_choice_never_sees_the_held_out_slides():
    """Wild profiles on one fold's test slides change neither the genes that fold scores nor its predictions."""
    from hestdata.bench.tasks.slide_level import group_folds, slide_expression_protocol

    emb, prof, groups, genes = _planted()
    base = slide_expression_protocol(emb, prof, groups, genes, n_genes=10)
    te = group_folds(groups, 5)[0]
    wild = prof.copy()
    wild[te] = np.random.default_rng(3).poisson(500, size=wild[te].shape)  # would dominate an all-slide variance
    pert = slide_expression_protocol(emb, wild, groups, genes, n_genes=10)
    cols_b = [base.genes.index(g) for g in base.genes if np.isfinite(base.predictions[te[0], base.genes.index(g)])]
    chosen_b = {base.genes[c] for c in cols_b}
    chosen_p = {g for j, g in enumerate(pert.genes) if np.isfinite(pert.predictions[te[0], j])}
    assert chosen_b == chosen_p
    for g in chosen_b:
        np.testing.assert_array_equal(base.predictions[te, base.genes.index(g)], pert.predictions[te, pert.genes.index(g)])
    log = slide_expression_protocol(emb, prof, groups, genes, n_genes=10, normalize="log1p")
    assert log.metrics["pearson_mean"] != base.metrics["pearson_mean"]
    with pytest.raises(ValueError, match="normalize"):
        slide_expression_protocol(emb, prof, groups, genes, normalize="tpm")


def test_slide_retrieval_is_chance_for_a_constant_encoder_and_high_when_planted():
    from hestdata.bench.tasks.slide_level import slide_retrieval_protocol

    emb, prof, groups, genes = _planted(n_slides=20)
    good = slide_retrieval_protocol(emb, prof, groups, genes, n_genes=40)
    assert good.metrics["slide2profile_recall@1"] > 0.5, good.metrics
    const = slide_retrieval_protocol(np.ones_like(emb), prof, groups, genes, n_genes=40, n_folds=5)
    # a constant encoder predicts one profile per fold (its training mean): every slide of a fold ranks the
    # candidates the same way, so at most one slide per fold can find its profile first
    assert const.metrics["slide2profile_recall@1"] <= 5 / 20
    assert const.metrics["slide2profile_median_rank"] > 20 / 4


def test_her2st_slide_tasks_run_from_the_store(her2st_root, tmp_path):
    rows = hestdata.run_benchmark(her2st_root, "color-stats", "her2st_slide_expression", cache_dir=tmp_path / "c")
    metrics = {r["metric"]: r for r in rows}
    assert {"pearson_mean", "spearman_mean", "mse"} <= set(metrics)
    assert sorted(metrics["pearson_mean"]["samples"]) == ["her2st_B4", "her2st_C2", "her2st_C3"]
    assert metrics["pearson_mean"]["folds"] == ["pooled"] and np.isfinite(metrics["mse"]["mean"])
    rows = hestdata.run_benchmark(her2st_root, "color-stats", "her2st_slide_retrieval", cache_dir=tmp_path / "c")
    m = {r["metric"]: r["mean"] for r in rows}
    assert 0 <= m["slide2profile_recall@1"] <= 1 and m["chance_recall@1"] == pytest.approx(1 / 3)
    rows = hestdata.run_benchmark(her2st_root, "color-stats", "her2st_slide_pretrain", cache_dir=tmp_path / "c")
    m = {r["metric"]: r["mean"] for r in rows}
    assert rows[0]["task_type"] == "slide_pretrain" and m["n_slides"] == 3
    # folds by patient: B (B4 alone: chance 1) and C (C2, C3: chance 1/2), pooled by slides: (1 + 2 x 0.5) / 3
    assert m["chance_recall@1"] == pytest.approx(2 / 3) and 0 <= m["slide2profile_recall@1"] <= 1
    import yaml

    from hestdata.bench.runner import builtin_tasks

    doc = yaml.safe_load(builtin_tasks()["her2st_slide_pretrain"].read_text())
    doc["name"], doc["options"] = "grid_bags", {**doc["options"], "grid": "64px_4um", "epochs": 5}  # TITAN-style cells
    task = tmp_path / "grid.yaml"
    task.write_text(yaml.safe_dump(doc))
    rows = hestdata.run_benchmark(her2st_root, "color-stats", task, cache_dir=tmp_path / "c")
    assert {r["metric"]: r["mean"] for r in rows}["n_slides"] == 3


def test_feature_grid_positions_map_back_to_micrometres_exactly(her2st_root, tmp_path):
    """Each grid cell's features equal the encoder applied to the image box [col·s, (col+1)·s) x [row·s, …) µm cut
    independently from level 0; TRIDENT's coords divide into the grid index exactly."""
    import h5py
    import torch
    import zarr

    from hestdata.bench.encoders import load_encoder
    from hestdata.bench.grid import embed_grid, export_grid_trident
    from hestdata.curation.patches import render_patch

    enc = load_encoder("color-stats")
    grids = embed_grid(her2st_root, enc, ["her2st_B4"], grid="64px_4um", cache_dir=tmp_path / "c")
    g = grids["her2st_B4"]
    meta = hestdata.read_metadata(her2st_root / "samples" / "her2st_B4.zarr")
    ps = meta.pixel_size_um.value
    assert g.cell_um == 256.0
    assert g.mask.shape == (int(np.ceil(meta.image.height_px * ps / 256)), int(np.ceil(meta.image.width_px * ps / 256)))
    assert 0 < g.mask.sum() < g.mask.size  # tissue and background cells
    assert (g.features[~g.mask] == 0).all() and np.abs(g.features[g.mask]).sum(axis=1).min() > 0
    lvl = 2  # 0.69 µm/px x 4 = the finest level not finer than 4 µm/px
    lps = ps * 2 ** lvl
    level = np.moveaxis(zarr.open_group(str(her2st_root / "samples" / "her2st_B4.zarr"), mode="r")["images"]["he"][f"s{lvl}"][:],
                        0, -1)
    for r, c in g.indices()[[0, len(g.indices()) // 2, -1]]:
        patch = render_patch(level, (c + 0.5) * 256 / lps, (r + 0.5) * 256 / lps, 256 / lps, 64)
        want = enc(torch.from_numpy(patch[None]).permute(0, 3, 1, 2)).numpy()[0]
        np.testing.assert_allclose(g.features[r, c], want, rtol=1e-5, atol=1e-5)
    again = embed_grid(her2st_root, enc, ["her2st_B4"], grid="64px_4um", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again["her2st_B4"].features, g.features)  # served from the cache
    [h5] = export_grid_trident(her2st_root, grids, enc, tmp_path / "trident")
    with h5py.File(h5) as f:
        idx, coords, um = f["grid_index"][:], f["coords"][:], f["coords_um"][:]
        step = f["coords"].attrs["patch_size_level0"]
        assert f["features"].shape == (int(g.mask.sum()), g.features.shape[2])
    np.testing.assert_array_equal(coords // step, idx[:, ::-1])
    np.testing.assert_array_equal(coords % step, 0)
    np.testing.assert_array_equal(um, idx[:, ::-1] * 256.0)


def test_slide_loader_partitions_by_slide_and_resumes_exactly(her2st_root):
    from hestdata.loader.slides import SlideDataset, SlideLoader

    rng = np.random.default_rng(0)
    ids = ["her2st_B4", "her2st_C2", "her2st_C3"]
    feats = {}
    for s in ids:
        n = hestdata.read_metadata(her2st_root / "samples" / f"{s}.zarr").qc.patches["224px_0.5um"].n_patches
        feats[s] = rng.normal(size=(n, 4)).astype(np.float32)
    ds = SlideDataset(her2st_root, features=feats, labels={"her2st_B4": 0, "her2st_C2": 1, "her2st_C3": 1})
    assert sorted(ds.sample_ids) == ids and len(ds.genes) > 1000
    item = ds.item(ds.sample_ids.index("her2st_C3"))
    assert item["features"].shape == feats["her2st_C3"].shape and item["coords_um"].shape == (len(feats["her2st_C3"]), 2)
    assert item["patient"] == "C" and item["label"] == 1
    assert item["profile"].shape == (len(ds.genes),) and item["profile"].max() > 0
    # two ranks see disjoint slides of one permutation (padded to equal counts), the same every time
    seen = [[x["sample_id"] for x in SlideLoader(ds, seed=3, rank=r, world_size=2)] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 2 and set(seen[0] + seen[1]) == set(ids)
    ld = SlideLoader(ds, seed=3)
    full = [x["sample_id"] for x in ld] + [x["sample_id"] for x in ld]  # two epochs
    ld2 = SlideLoader(ds, seed=3)
    it = iter(ld2)
    first = [next(it)["sample_id"] for _ in range(2)]
    state = ld2.state_dict()
    ld3 = SlideLoader(ds, seed=3)
    ld3.load_state_dict(state)
    rest = [x["sample_id"] for x in ld3] + [x["sample_id"] for x in ld3]
    assert first + rest == full  # exact resume, then the next epoch in its own order
    with pytest.raises(ValueError, match="seed"):
        SlideLoader(ds, seed=4).load_state_dict(state)
    patches = SlideDataset(her2st_root, query=None, profiles=False).item(0)
    assert patches["image"].dtype == np.uint8 and patches["image"].shape[1:] == (3, 224, 224)


def test_cohort_inputs_carry_profiles_relative_to_the_descriptor(tmp_path):
    """A cohort YAML names a sample's profile and alterations like any input: relative to the descriptor,
    validated before anything runs, hashed for idempotence, attached to the sample read."""
    import shutil

    import yaml

    from hestdata.cohort.cohort import load_cohort
    from hestdata.cohort.register import _resolve, input_hash
    from hestdata.cohort.task import read_sample

    shutil.copy(shared("wsi", "CMU-1-Small-Region.svs"), tmp_path / "s1.svs")
    (tmp_path / "bulk.tsv").write_text("ERBB2\t5\nACTB\t100\n")
    (tmp_path / "alt.csv").write_text("MSI\nMSS\n")
    doc = {"name": "c", "license": "CC-BY-4.0", "samples": [
        {"id": "s1", "technology": "wsi", "inputs": {"slide": "s1.svs", "profile": "bulk.tsv", "alterations": "alt.csv"}}]}
    desc = tmp_path / "c.yaml"
    desc.write_text(yaml.safe_dump(doc))
    cohort, base = load_cohort(desc)
    spec = _resolve(cohort, cohort.samples[0])
    s = read_sample(spec, str(base))
    assert s.slide_inputs == {"profile": base / "bulk.tsv", "alterations": base / "alt.csv"}
    before = input_hash(spec, str(base))
    (tmp_path / "bulk.tsv").write_text("ERBB2\t6\nACTB\t100\n")
    assert input_hash(spec, str(base)) != before  # a changed profile re-converts the sample
    doc["samples"][0]["inputs"]["profile"] = "missing.tsv"
    desc.write_text(yaml.safe_dump(doc))
    with pytest.raises(hestdata.SchemaError, match="profile not found"):
        load_cohort(desc)
