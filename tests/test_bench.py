"""Benchmark harness: metrics, the expression protocol against an independent reference, leakage, retrieval,
probes, encoders (timm checkpoint, entry point), embedding cache, leaderboard rendering."""

from __future__ import annotations

import html.parser
import textwrap

import numpy as np
import pytest
import torch

import hestdata
from hestdata.bench.encoders import from_callable, from_module, load_encoder
from hestdata.bench.metrics import balanced_accuracy, macro_f1, pearson_per_column, recall_at_k
from hestdata.bench.tasks.expression import expression_protocol
from tests.synth import synthetic_sample


def test_metrics_hand_computed():
    p = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    t = np.array([[2.0, 5.0], [4.0, 6.0], [6.0, 7.0]])
    r = pearson_per_column(p, t)
    assert r[0] == pytest.approx(1.0) and np.isnan(r[1])
    assert pearson_per_column(np.array([[1.0], [2.0], [3.0]]), np.array([[3.0], [2.0], [1.0]]))[0] == pytest.approx(-1)
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.5, 0.1], [0.2, 0.3, 0.1]])  # ranks of the diagonal: 1, 2, 3
    m = recall_at_k(sim, ks=(1, 2))
    assert m["recall@1"] == pytest.approx(1 / 3) and m["recall@2"] == pytest.approx(2 / 3)
    assert m["median_rank"] == 2
    y, yhat = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    assert balanced_accuracy(y, yhat) == pytest.approx((2 / 3 + 1) / 2)
    assert macro_f1(y, yhat) == pytest.approx((0.8 + 2 / 3) / 2)


def _data(seed: int = 0, n: int = 300, d: int = 40, g: int = 120):
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, d))
    w = rng.normal(size=(d, g)) * 0.3
    rate = np.exp(np.clip(emb @ w, -3, 3))
    counts = rng.poisson(rate * rng.uniform(0.5, 3, size=g))
    groups = np.repeat(["A", "B", "C"], n // 3)
    return emb, counts, groups


def _reference(emb, counts, groups, k, latent_dim, seed=1, exact=False):
    """An independent, straightforward implementation of the HEST-Benchmark protocol (top-variance genes): HEST's
    lsqr ridge, or (``exact``) the closed-form ridge solution on numpy's full SVD PCA."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    out = {}
    for held in np.unique(groups):
        train, test = groups != held, groups == held
        y_train = np.log1p(counts[train].astype(float))
        variance = y_train.var(axis=0)
        genes = sorted(sorted(range(len(variance)), key=lambda j: (-variance[j], j))[:k])
        sc = StandardScaler()
        x_train = sc.fit_transform(emb[train])
        x_test = sc.transform(emb[test])
        y_tr = y_train[:, genes]
        y_te = np.log1p(counts[test][:, genes].astype(float))
        alpha = 100 / (latent_dim * k)
        if exact:  # PCA by numpy's SVD, ridge by the normal equations
            mu = x_train.mean(0)
            vt = np.linalg.svd(x_train - mu, full_matrices=False)[2][:latent_dim]
            a, b = (x_train - mu) @ vt.T, (x_test - mu) @ vt.T
            pred = b @ np.linalg.solve(a.T @ a + alpha * np.eye(latent_dim), a.T @ y_tr)
        else:
            pca = PCA(n_components=latent_dim, random_state=seed)
            x_train = pca.fit_transform(x_train)  # U·S here, X·Vᵀ in the harness
            x_test = pca.transform(x_test)
            model = Ridge(alpha=alpha, solver="lsqr", fit_intercept=False).fit(x_train, y_tr)
            pred = model.predict(x_test).astype(np.float32).astype(float)
        out[held] = (genes, np.array([np.corrcoef(pred[:, j], y_te[:, j])[0, 1] for j in range(k)]))
    return out


@pytest.mark.parametrize("solver,tol", [("hest_compat", 1e-4), ("exact", 1e-9)])
def test_expression_protocol_matches_reference(solver, tol):
    emb, counts, groups = _data()
    res = expression_protocol(emb, counts, groups, k=50, latent_dim=20, gene_selection="variance", solver=solver)
    ref = _reference(emb, counts, groups, 50, 20, exact=solver == "exact")
    assert [f.test_group for f in res.folds] == ["A", "B", "C"]
    for f in res.folds:
        genes, r = ref[f.test_group]
        assert f.genes == genes
        assert np.max(np.abs(f.pearson - r)) < tol
        assert f.alpha == pytest.approx(100 / (20 * 50))
    assert res.mean == pytest.approx(np.mean([np.mean(ref[g][1]) for g in "ABC"]), abs=tol)
    assert res.mean > 0.2  # there is signal to find


def test_no_test_fold_information_reaches_genes_scaling_or_pca():
    emb, counts, groups = _data(1)
    base = expression_protocol(emb, counts, groups, k=30, latent_dim=10)
    fold_a = next(f for f in base.folds if f.test_group == "A")
    te = fold_a.test_index
    c2, e2 = counts.copy(), emb.copy()
    rng = np.random.default_rng(5)
    c2[te] = rng.poisson(50, size=c2[te].shape)  # wild test targets: would change the HVGs if they leaked
    half = te[: len(te) // 2]
    e2[half] = rng.normal(100, 50, size=e2[half].shape)  # wild test embeddings: would move scaler/PCA
    pert = next(f for f in expression_protocol(e2, c2, groups, k=30, latent_dim=10).folds if f.test_group == "A")
    assert pert.genes == fold_a.genes
    keep = np.isin(te, half, invert=True)
    np.testing.assert_array_equal(pert.predictions[keep], fold_a.predictions[keep])
    with pytest.raises(ValueError, match="two groups"):
        expression_protocol(emb, counts, np.zeros(len(emb)))


def test_cv_alpha_option_and_knowable_alpha():
    emb, counts, groups = _data(2)
    a = expression_protocol(emb, counts, groups, k=20, latent_dim=10, alpha=3.0)
    assert all(f.alpha == 3.0 for f in a.folds)
    b = expression_protocol(emb, counts, groups, k=20, latent_dim=10, cv_alpha=True, alpha_grid=(0.1, 1000.0))
    assert all(f.alpha in (0.1, 1000.0) for f in b.folds)
    for reg in ("knn", "mlp", "random_forest", "gradient_boosting"):
        r = expression_protocol(emb[:150], counts[:150], groups[:150], k=4, latent_dim=10, regressor=reg,
                                gene_selection="variance")
        assert len(r.folds) == 2 and np.isfinite(r.mean) and r.mean > 0.05, (reg, r.mean)  # signal found
    with pytest.raises(ValueError, match="regressor"):
        expression_protocol(emb, counts, groups, k=5, latent_dim=5, regressor="svm")


def test_retrieval_over_the_whole_held_out_set():
    from hestdata.bench.tasks.retrieval import retrieval_protocol

    rng = np.random.default_rng(0)
    n = 240
    latent = rng.normal(size=(n, 8))
    emb = latent @ rng.normal(size=(8, 32)) + 0.01 * rng.normal(size=(n, 32))
    counts = rng.poisson(np.exp(np.clip(latent @ rng.normal(size=(8, 60)) * 0.5, -2, 2)) * 20)
    groups = np.repeat(["A", "B"], n // 2)
    res = retrieval_protocol(emb, counts, groups, pca_dim=16, dim=16, epochs=40)
    for f in res.folds:
        assert f["n_test"] == 120  # all 120 held-out items are ranked together (not 64-item batches)
        assert f["img2expr_recall@10"] > 10 / 120 * 2  # well above chance over the full set
        assert 0 <= f["img2expr_recall@1"] <= f["img2expr_recall@5"] <= f["img2expr_recall@10"] <= 1


def test_probes_on_separable_data():
    from hestdata.bench.tasks.probes import batch_effect, classification

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (60, 5)), rng.normal(6, 1, (60, 5))])
    batch = np.repeat(["s1", "s2"], 60)
    m = batch_effect(x, batch)
    assert m["batch_balanced_accuracy"] > 0.95 and m["silhouette_batch"] > 0.5
    labels = np.tile(np.repeat(["tumour", "stroma"], 30), 2)
    x2 = rng.normal(0, 1, (120, 5))
    x2[labels == "tumour", 0] += 5
    rows = classification(x2, labels, batch)
    assert {r["probe"] for r in rows} == {"linear", "knn"}
    assert all(r["balanced_accuracy"] > 0.9 and r["auroc"] > 0.95 for r in rows)


@pytest.mark.slow
def test_color_stats_equals_a_float64_numpy_reference():
    """The weight-free baseline's 38 features against numpy in float64 on real H&E patches and on constant, black
    and saturated ones: RGB mean/std, H/E/DAB optical-density mean/std, 8-bin histograms, gradient magnitude."""
    import simplejpeg

    from hestdata.bench.encoders import color_stats
    from tests.conftest import her2st_inputs

    he = simplejpeg.decode_jpeg(her2st_inputs("C3")[2].read_bytes())
    patches = [he[y:y + 224, x:x + 224] for y, x in ((4000, 4000), (5200, 3100), (300, 300), (6000, 6400))]
    patches += [np.full((224, 224, 3), v, np.uint8) for v in (0, 128, 255)]
    images = np.stack(patches)
    got = color_stats().forward(torch.from_numpy(np.moveaxis(images, -1, 1).copy())).numpy()
    x = images.astype(np.float64) / 255.0
    w = np.linalg.inv(np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float32).astype(np.float64))
    hed = -np.log(np.clip(x, 1e-6, None)) @ w
    hist = np.stack([np.stack([np.histogram(x[i, :, :, k], bins=8, range=(0, 1))[0] for k in range(3)])
                     for i in range(len(x))]).reshape(len(x), -1) / (224 * 224)
    grey = x.mean(3)
    mag = np.hypot(np.diff(grey, axis=2)[:, :-1, :], np.diff(grey, axis=1)[:, :, :-1])
    want = np.concatenate([x.mean((1, 2)), x.std((1, 2), ddof=1), hed.mean((1, 2)), hed.std((1, 2), ddof=1), hist,
                           mag.mean((1, 2))[:, None], mag.std((1, 2), ddof=1)[:, None]], axis=1)
    assert got.shape == (7, 38)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)
    np.testing.assert_array_equal(got[:, 12:36], want[:, 12:36].astype(np.float32))  # counts: exact
    assert (got[4:, 3:6] == 0).all() and (got[4:, 9:12] < 1e-5).all()  # constant patches: no spread


def test_timm_checkpoint_and_published_names_offline(tmp_path, monkeypatch):
    import timm

    torch.manual_seed(3)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    ckpt = tmp_path / "tiny.pth"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    b = load_encoder("timm:vit_tiny_patch16_224", checkpoint=ckpt)
    a = from_module(model, "tiny", mean=b.mean, std=b.std)  # timm's own normalisation for this model
    x = torch.randint(0, 255, (2, 3, 224, 224), dtype=torch.uint8)
    assert torch.allclose(a(x), b(x), atol=1e-5)
    assert a.weights_sha256 == b.weights_sha256
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(hestdata.InputError, match="checkpoint"):
        load_encoder("uni")
    with pytest.raises(hestdata.InputError, match="does not fit"):
        load_encoder("timm:resnet18", checkpoint=ckpt)
    with pytest.raises(hestdata.InputError, match="wrap it with from_module"):
        load_encoder("conch")


def test_entry_point_encoder_is_discovered(tmp_path, monkeypatch):
    pkg = tmp_path / "site"
    (pkg / "myenc").mkdir(parents=True)
    (pkg / "myenc" / "__init__.py").write_text(textwrap.dedent('''
        from hestdata.bench.encoders import from_callable

        def make():
            return from_callable(lambda x: x.float().mean(dim=(2, 3)), "my-mean-rgb", version="7")
    '''))
    dist = pkg / "myenc-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myenc\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hestdata.encoders]\nmy-mean-rgb = myenc:make\n")
    monkeypatch.syspath_prepend(str(pkg))
    enc = load_encoder("my-mean-rgb")
    out = enc(torch.full((2, 3, 8, 8), 10, dtype=torch.uint8))
    assert out.shape == (2, 3) and torch.allclose(out, torch.full((2, 3), 10.0))
    from hestdata.bench.encoders import available

    assert "my-mean-rgb" in available()


@pytest.fixture(scope="module")
def bench_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench") / "root"
    for i in range(3):
        s = synthetic_sample(f"b{i}", n=24, seed=i, genes=("TP53", "MKI67", "EGFR", "KRT5", "CD3E", "PTPRC"))
        hestdata.convert(s, root, patches=["32px_2um"], min_tissue_fraction=0, metadata={"patient": f"P{i}",
                                                                                           "cohort": "bench"})
    return root


def test_run_benchmark_caches_embeddings_and_appends_rows(bench_root, tmp_path):
    import yaml

    calls = []

    def counting(x):
        calls.append(len(x))
        return x.float().mean(dim=(2, 3))

    enc = from_callable(counting, "counting-mean", version="1")
    task = tmp_path / "t.yaml"
    task.write_text(yaml.safe_dump({"name": "bench_expr", "type": "expression", "samples": "cohort = 'bench'",
                                    "group_by": "patient", "patch": "32px_2um",
                                    "options": {"k": 4, "latent_dim": 3}}))
    rows = hestdata.run_benchmark(bench_root, enc, task)
    assert sum(calls) == 72 and rows[0]["metric"] == "pearson_mean" and len(rows[0]["fold_values"]) == 3
    calls.clear()
    again = hestdata.run_benchmark(bench_root, enc, task)
    assert calls == []  # every sample came from the cache
    assert again[0]["fold_values"] == rows[0]["fold_values"]
    from hestdata.bench.leaderboard import read

    lb = read(bench_root)
    assert lb.height == 2 and set(lb["encoder"]) == {"counting-mean"}
    assert hestdata.validate(bench_root).ok  # derived artefacts are outside the manifest
    be = hestdata.run_benchmark(bench_root, "color-stats", "batch_effect", patch="32px_2um")
    assert {r["metric"] for r in be} >= {"silhouette_batch", "batch_balanced_accuracy"}


class _Parser(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: dict[str, int] = {}
        self.sections: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags[tag] = self.tags.get(tag, 0) + 1
        if tag == "section":
            self.sections.append(dict(attrs)["data-task"])


def test_leaderboard_markdown_and_html(bench_root, tmp_path):
    from typer.testing import CliRunner

    from hestdata.cli import app

    r = CliRunner().invoke(app, ["bench", "run", "--root", str(bench_root), "--encoder", "color-stats",
                                 "--task", "batch_effect", "--patch", "32px_2um"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "lb.html"
    r = CliRunner().invoke(app, ["bench", "leaderboard", str(bench_root), "--html", str(out)])
    assert r.exit_code == 0, r.output
    assert "### batch_effect" in r.output and "| color-stats |" in r.output
    page = out.read_text()
    p = _Parser()
    p.feed(page)
    assert "batch_effect" in p.sections and p.tags.get("svg", 0) >= 1 and p.tags.get("figcaption", 0) >= 1
    assert "95 % interval" in page or "± std over folds" in page  # the chart's whiskers, named in its legend
    assert p.tags.get("table", 0) == len(p.sections) and "<script" not in page and "http" not in page.split("xmlns")[0]
