"""Benchmark protocols, second audit: HEST's gene choice against scanpy itself, a ridge solution that does not
depend on when a solver stops, CP10k over the whole table, one label per patient."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import hestdata
from hestdata.bench.genes import hest_genes, seurat_dispersions, seurat_hvg
from hestdata.bench.tasks.expression import expression_protocol, targets

HERE = Path(__file__).resolve().parent
REF = json.loads((HERE / "data" / "hvg_seurat_reference.json").read_text())
COUNTS = HERE.parents[1] / "shared" / "data" / "st_legacy" / "her2st" / "ST-cnts"


@pytest.fixture(scope="module")
def her2st_tables() -> dict[str, pd.DataFrame]:
    out = {}
    for s in ("B4", "C2", "C3"):
        df = pd.read_csv(COUNTS / f"{s}.tsv.gz", sep="\t", index_col=0)
        out[s] = df.T.groupby(level=0).sum().T  # as the reference script does
    return out


@pytest.mark.parametrize("name", sorted(REF["sets"]))
def test_hest_gene_choice_equals_scanpys_on_real_her2st(her2st_tables, name):
    """The genes scanpy's highly_variable_genes (seurat) picks under HEST's get_k_genes filter, recorded by
    tests/data/make_hvg_reference.py, are exactly ours; so are the normalised dispersions behind them."""
    ref = REF["sets"][name]
    dfs = [her2st_tables[s] for s in ref["slides"]]
    common = sorted(set.intersection(*(set(d.columns) for d in dfs)))
    counts = np.concatenate([d[common].to_numpy() for d in dfs])
    slides = np.concatenate([[s] * len(d) for s, d in zip(ref["slides"], dfs, strict=True)])
    chosen = hest_genes(counts, slides, common, REF["k"])
    assert sorted(common[i] for i in chosen) == sorted(ref["genes"])
    keep = [g for g in common if all((d[g] > 0).sum() >= np.ceil(0.1 * len(d)) for d in dfs)]
    assert len(keep) == ref["n_candidates"]
    disp = seurat_dispersions(np.log1p(np.concatenate([d[keep].to_numpy() for d in dfs]).astype(np.float32)))
    mine = dict(zip(keep, disp, strict=True))
    for g, v in ref["dispersions_norm_top200"].items():
        assert mine[g] == pytest.approx(v, rel=1e-4, abs=1e-5), g


def test_hest_criterion_filters_per_slide_and_drops_controls():
    rng = np.random.default_rng(0)
    n = 40
    counts = rng.poisson(3.0, size=(2 * n, 6)).astype(float)
    slides = np.repeat(["s1", "s2"], n)
    counts[:n, 0] = 0
    counts[:3, 0] = 50  # detected in 7.5 % of s1's spots (< 10 %), everywhere in s2: dropped
    counts[:, 1] = rng.poisson(30.0, size=2 * n) * rng.integers(0, 2, size=2 * n)  # very variable: kept
    names = ["G0", "G1", "BLANK_0001", "NegControlProbe_1", "G4", "G5"]
    counts[:, 2] = rng.poisson(40.0, size=2 * n) * rng.integers(0, 2, size=2 * n)  # variable, but a control
    got = {names[i] for i in hest_genes(counts, slides, names, 3)}
    assert "G0" not in got and "BLANK_0001" not in got and "NegControlProbe_1" not in got and "G1" in got
    assert len(got) == 3
    with pytest.raises(ValueError, match="detected"):
        hest_genes(np.zeros((10, 3)), np.zeros(10), ["a", "b", "c"], 2)
    # degenerate inputs: a constant matrix has no dispersion, so nothing is highly variable
    assert not seurat_hvg(np.log1p(np.full((20, 5), 3.0)), 2).any()


def test_exact_ridge_does_not_move_with_a_1e12_perturbation_of_ill_conditioned_features():
    """Embeddings whose spectrum spans six decades (as real encoders' do): HEST's lsqr (tol 1e-4) moves a fold
    mean by ~5e-4 when the features change by 1e-12; the exact solution by no more than 1e-6."""
    rng = np.random.default_rng(1)
    n, d = 450, 200
    q = np.linalg.qr(rng.normal(size=(d, d)))[0]
    z = rng.normal(size=(n, d)) * np.logspace(0, -6, d)
    emb = z @ q.T
    counts = rng.poisson(np.exp(np.clip(z[:, :8] @ rng.normal(size=(8, 40)) * 0.5, -2, 2)) * 5)
    groups = np.repeat(["A", "B", "C"], n // 3)
    kw = dict(k=30, latent_dim=128, gene_selection="variance")
    moved = emb + 1e-12 * rng.normal(size=emb.shape)
    a, b = (expression_protocol(e, counts, groups, **kw) for e in (emb, moved))
    assert np.max(np.abs(a.fold_means - b.fold_means)) <= 1e-6
    assert a.mean > 0.5  # the features carry the signal: the check is not on a flat score
    ca, cb = (expression_protocol(e, counts, groups, solver="hest_compat", **kw) for e in (emb, moved))
    assert np.max(np.abs(ca.fold_means - cb.fold_means)) > 1e-6  # HEST's solver does move: the check can fail
    with pytest.raises(ValueError, match="solver"):
        expression_protocol(emb, counts, groups, solver="cg", **kw)


def test_cp10k_divides_by_the_whole_table_and_hest_genes_default():
    rng = np.random.default_rng(2)
    counts = rng.poisson(5.0, size=(10, 4))
    lib = counts.sum(axis=1) + 1000  # the other genes of the table
    t = targets(counts, "cp10k_log1p", lib)
    np.testing.assert_allclose(t, np.log1p(counts * 1e4 / lib[:, None]))
    assert not np.allclose(t, targets(counts, "cp10k_log1p"))
    with pytest.raises(ValueError, match="library_size"):
        targets(counts, "cp10k_log1p", lib[:5])


def test_task_targets_library_size_is_the_baselines_and_patient_labels_must_agree(her2st_root, tmp_path):
    from hestdata.bench.runner import _library_sizes, _task_targets, load_task
    from hestdata.errors import InputError
    from hestdata.store.root import Root

    r = Root.open(her2st_root)
    t = load_task("her2st_expression")
    ids = ["her2st_B4", "her2st_C2", "her2st_C3"]
    counts, genes, _, libs, _ = _task_targets(t, r, ids)
    base = _library_sizes(t, r, ids)
    np.testing.assert_allclose(np.log1p(libs), np.concatenate([base[s][:, 0] for s in ids]), rtol=1e-6)
    assert (libs >= np.asarray(counts.sum(axis=1)).ravel()).all() and (libs > np.asarray(counts.sum(axis=1)).ravel()).any()

    labels = tmp_path / "labels.csv"
    pd.DataFrame({"PATIENT": ["B", "C", "C"], "FILENAME": ids, "HER2": ["pos", "pos", "neg"]}).to_csv(labels, index=False)
    task = tmp_path / "mil.yaml"
    task.write_text(f"name: mil\ntype: slide_mil\nsamples: \"cohort = 'her2st'\"\ngroup_by: patient\n"
                    f"label: HER2\nlabels: {labels}\n")
    with pytest.raises(InputError, match=r"patient 'C' has slides with different 'HER2' labels: her2st_C2 is 'pos', "
                                         r"her2st_C3 is 'neg'"):
        hestdata.run_benchmark(her2st_root, "color-stats", task, cache_dir=tmp_path / "c", leaderboard=False)


def test_html_leaderboard_shows_what_the_markdown_shows_and_names_are_inert():
    """Every cell (mean ± std and the interval), per-fold line, chance level and version line of the Markdown is
    in the HTML page too; a task or encoder name carrying HTML or Markdown is shown, never interpreted."""
    import html as h
    import re

    import polars as pl

    from hestdata.bench.leaderboard import render_html, render_markdown

    evil = "<script>alert(1)</script>[x](http://e)"

    def row(enc, fp, metric, mean, ci):
        return {"task": f"t {evil}", "task_type": "expression", "encoder": enc, "fingerprint": fp, "metric": metric,
                "folds": ["B", "C"], "fold_values": [mean - 0.01, mean + 0.01], "mean": mean, "std": 0.01,
                "date": "2026-12-03", "ci_low": ci[0], "ci_high": ci[1], "data_version": "d" * 64,
                "versions": '{"hestdata": "0.2.0"}'}

    df = pl.DataFrame([row(evil, "a" * 64, "pearson_mean", 0.3, (0.25, 0.35)),
                       row("color-stats", "b" * 64, "pearson_mean", 0.2, (0.15, 0.22))])
    md, page = render_markdown(df), render_html(df)
    assert "<script>" not in md and "<script>" not in page and "](http" not in md
    text = h.unescape(re.sub(r"<[^>]+>", " ", page))
    for line in md.splitlines():
        if line.startswith("- "):  # per-fold values, chance, data version, packages
            plain = line[2:].replace("\\", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            assert plain in " ".join(text.split()), plain
    for cell in ("0.3000 ± 0.0100 [0.250, 0.350]", "0.2000 ± 0.0100 [0.150, 0.220]"):
        assert cell in md and cell in text
    assert "chance level of pearson_mean: 0" in text and "class='chance'" in page  # the chart's chance line
