"""Ranks and recall@k treat ties by their expectation: degenerate encoders score at chance, never 1.0."""

from __future__ import annotations

import numpy as np
import pytest

from hestdata.bench.metrics import recall_at_k


def _monte_carlo(sim: np.ndarray, ks: tuple[int, ...], draws: int = 4000, seed: int = 0) -> dict[str, float]:
    """Independent reference: break ties by random jitter, average recall over many draws."""
    rng = np.random.default_rng(seed)
    hits = {k: 0.0 for k in ks}
    for _ in range(draws):
        jittered = sim + rng.uniform(0, 1e-9, size=sim.shape)
        rank = (jittered > np.diag(jittered)[:, None]).sum(axis=1) + 1
        for k in ks:
            hits[k] += (rank <= k).mean()
    return {f"recall@{k}": hits[k] / draws for k in ks}


def test_constant_encoder_is_at_chance():
    n = 40
    emb = np.ones((n, 8))
    sim = emb @ emb.T
    m = recall_at_k(sim, ks=(1, 5, 10))
    assert m["recall@1"] == pytest.approx(1 / n) and m["recall@5"] == pytest.approx(5 / n)
    assert m["recall@10"] == pytest.approx(10 / n) and m["median_rank"] == pytest.approx((n + 1) / 2)


def test_zero_embeddings_give_nan_cosines_and_chance():
    n = 20
    z = np.zeros((n, 4))
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (z @ z.T) / (np.linalg.norm(z, axis=1)[:, None] * np.linalg.norm(z, axis=1)[None])
    assert np.isnan(sim).all()
    assert recall_at_k(sim, ks=(5,))["recall@5"] == pytest.approx(5 / n)


def test_two_valued_encoder_and_an_independent_reference():
    n = 30
    emb = np.repeat(np.array([[1.0, 0.0], [0.0, 1.0]]), n // 2, axis=0)
    sim = emb @ emb.T
    m = recall_at_k(sim, ks=(1, 5, 10))
    assert m["recall@5"] == pytest.approx(5 / (n // 2))  # tied with its own half only
    ref = _monte_carlo(sim, (1, 5, 10))
    for k in (1, 5, 10):
        assert m[f"recall@{k}"] == pytest.approx(ref[f"recall@{k}"], abs=0.01)


def test_mixed_ties_match_the_reference_and_a_perfect_encoder_scores_one():
    rng = np.random.default_rng(3)
    sim = np.round(rng.normal(size=(25, 25)), 1)  # many ties, some not
    m = recall_at_k(sim, ks=(1, 3, 7))
    ref = _monte_carlo(sim, (1, 3, 7), draws=3000)
    for k in (1, 3, 7):
        assert m[f"recall@{k}"] == pytest.approx(ref[f"recall@{k}"], abs=0.015)
    perfect = np.eye(25) + 0.01 * rng.uniform(size=(25, 25)) * (1 - np.eye(25))
    assert recall_at_k(perfect, ks=(1,)) == {"recall@1": 1.0, "median_rank": 1.0}
    shuffled = perfect[rng.permutation(25)]
    assert recall_at_k(shuffled, ks=(1,))["recall@1"] < 0.2


def test_callable_fingerprints_follow_the_code():
    import torch

    from hestdata.bench.encoders import from_callable

    a = from_callable(lambda x: x.float().mean(dim=(2, 3)), "mine")
    b = from_callable(lambda x: x.float().std(dim=(2, 3)), "mine")  # same name, different code
    assert a.fingerprint != b.fingerprint
    again = from_callable(lambda x: x.float().mean(dim=(2, 3)), "mine")
    assert again.fingerprint == a.fingerprint  # same code, same constants: the cache is reused

    def scaled(k: float):
        return lambda x: x.float().mean(dim=(2, 3)) * k

    assert from_callable(scaled(1.0), "s").fingerprint != from_callable(scaled(2.0), "s").fingerprint
    w1, w2 = torch.ones(3), torch.ones(3)
    w2[0] = 2
    f1 = from_callable(lambda x, w=w1: x.float().mean(dim=(2, 3)) * w, "w")
    f2 = from_callable(lambda x, w=w2: x.float().mean(dim=(2, 3)) * w, "w")
    assert f1.fingerprint != f2.fingerprint  # weights captured as defaults count by content


@pytest.mark.parametrize("name", ["uni", "uni2-h", "h-optimus-0", "gigapath", "phikon-v2", "resnet50"])
def test_published_encoders_get_their_model_card_preprocessing(name):
    """Each published architecture built here with random weights (one block deep: cheap, no download): the
    transform resizes to the card's size with the card's statistics, and the forward pass runs at that size."""
    import torch

    from hestdata.bench.encoders import PUBLISHED, _published, published_preprocessing

    size, mean, std = published_preprocessing(name)
    assert size == 224
    if name.startswith("h-optimus"):
        assert mean == (0.707223, 0.578729, 0.703617) and std == (0.211883, 0.230117, 0.177517)
    else:
        assert mean == (0.485, 0.456, 0.406) and std == (0.229, 0.224, 0.225)
    shallow = {"depth": 1} if PUBLISHED[name][1].startswith("vit") else {"drop_rate": 0.0}  # built here, no hub
    enc = _published(name, None, "fp32", **shallow)
    assert (enc.input_size, enc.mean, enc.std) == (size, tuple(mean), tuple(std))
    x = enc.preprocess(torch.full((2, 3, 112, 112), 128, dtype=torch.uint8))
    assert tuple(x.shape) == (2, 3, size, size)
    assert torch.allclose(x[:, :, 0, 0], ((128 / 255 - torch.tensor(mean)) / torch.tensor(std)).expand(2, 3), atol=1e-5)
    assert enc(torch.full((2, 3, 224, 224), 128, dtype=torch.uint8)).shape[0] == 2
    with pytest.raises(Exception, match="no model-card preprocessing"):
        published_preprocessing("nosuch")


def test_normalisation_fixed_genes_and_the_library_size_confound(tmp_path):
    """A 'depth' signal: every gene scales with library size. log1p targets reward predicting depth; CP10k
    removes it; the library-size baseline exposes it; fixed genes make folds score the same genes."""
    import json

    from hestdata.bench.tasks.expression import expression_protocol, spatial_blocks, targets

    rng = np.random.default_rng(0)
    n, g = 240, 30
    depth = rng.lognormal(7, 0.6, size=n)
    profile = rng.dirichlet(np.ones(g))
    counts = rng.poisson(np.outer(depth, profile))
    groups = np.repeat(["p0", "p1", "p2"], n // 3)
    lib = np.log1p(counts.sum(1, keepdims=True)).astype(np.float64)
    raw = expression_protocol(lib, counts, groups, k=10, latent_dim=None)
    cp10k = expression_protocol(lib, counts, groups, k=10, latent_dim=None, normalize="cp10k_log1p")
    assert raw.mean > 0.5 and abs(cp10k.mean) < 0.2  # the depth-only predictor only 'works' on raw log1p
    t = targets(counts, "cp10k_log1p")
    assert np.allclose(np.expm1(t).sum(1)[counts.sum(1) > 0], 1e4)
    names = [f"G{i}" for i in range(g)]
    (tmp_path / "var_50genes.json").write_text(json.dumps({"genes": ["G3", "G7", "G11"]}))
    fixed = expression_protocol(lib, counts, groups, genes=names, latent_dim=None,
                                fixed_genes=tmp_path / "var_50genes.json")
    assert all(f.genes == ["G3", "G7", "G11"] for f in fixed.folds)
    with pytest.raises(ValueError, match="absent"):
        expression_protocol(lib, counts, groups, genes=names, latent_dim=None, fixed_genes=["NOPE"])
    blocks = spatial_blocks(rng.uniform(size=(50, 2)), 50)
    assert len(set(blocks)) == 5 and min(np.unique(blocks, return_counts=True)[1]) == 10
    one = expression_protocol(lib, counts, groups, k=10, latent_dim=None, cv_alpha=True, coords=rng.uniform(size=(n, 2)),
                              n_folds=None)
    assert all(np.isfinite(f.alpha) for f in one.folds)


def test_library_size_baseline_runs_as_an_encoder(her2st_root, tmp_path):
    import shutil

    import hestdata
    from hestdata.bench.runner import run_benchmark

    root = tmp_path / "root"
    shutil.copytree(her2st_root, root, ignore=shutil.ignore_patterns("embeddings", "leaderboard*"))
    rows = run_benchmark(root, "library-size", "her2st_expression")
    assert rows[0]["encoder"].startswith("library-size") and rows[0]["metric"] == "pearson_mean"
    assert len(rows[0]["fold_values"]) == 2 and np.isfinite(rows[0]["mean"]) and len(rows[0]["data_version"]) == 64
    import polars as pl

    genes = pl.read_parquet(root / "leaderboard_genes.parquet")
    assert genes.height == 2 * 50 and set(genes["fold"]) == {"B", "C"} and genes["pearson"].is_finite().any()
    from hestdata.bench.leaderboard import read, render_markdown

    md = render_markdown(read(root))
    assert "chance level of pearson_mean: 0" in md and "data version(s):" in md
    assert rows[0]["ci_low"] <= rows[0]["mean"] <= rows[0]["ci_high"] and "[" in md.split("library-size")[1]
    assert hestdata.validate(root).ok  # derived artefacts stay outside the manifest


def test_leaderboard_rows_per_fingerprint_direction_and_order():
    import polars as pl

    from hestdata.bench.leaderboard import render_markdown

    def row(enc, fp, metric, mean):
        return {"task": "t", "task_type": "retrieval", "encoder": enc, "fingerprint": fp, "metric": metric,
                "folds": ["a", "b"], "fold_values": [mean, mean], "mean": mean, "std": 0.0, "date": "2026-01-01"}

    df = pl.DataFrame([row("enc", "f" * 64, "img2expr_recall@5", 0.2), row("enc", "e" * 64, "img2expr_recall@5", 0.4),
                       row("enc", "f" * 64, "img2expr_median_rank", 30.0),
                       row("enc", "e" * 64, "img2expr_median_rank", 10.0)])
    md = render_markdown(df)
    assert "enc #ffffffff" in md and "enc #eeeeeeee" in md  # same name, two fingerprints: two rows
    assert "img2expr_recall@5 ↑" in md and "img2expr_median_rank ↓" in md
    assert md.index("enc #eeeeeeee |") < md.index("enc #ffffffff |")  # the better recall first
    assert "per fold (2)" in md


def test_offline_pretrained_weights_fail_at_once(monkeypatch):
    import hestdata
    from hestdata.bench import encoders

    monkeypatch.setattr(encoders, "_hub_reachable", lambda timeout_s=3.0: False)
    with pytest.raises(hestdata.InputError, match="not on disk and the Hugging Face Hub cannot be reached"):
        encoders.load_encoder("timm:resnet18")
    enc = encoders.load_encoder("timm:resnet18", pretrained=False)  # --random-init: no download at all
    assert enc.name == "timm:resnet18" and enc.weights_sha256


def test_bootstrap_auroc_and_ap_equal_sklearn_on_ties_constants_and_shuffles():
    """The fast AUROC/AP of the MIL bootstrap against sklearn: random, heavily tied, constant scores, perfect
    and reversed rankings, and one-class inputs (NaN, where sklearn raises or warns)."""
    import warnings

    from sklearn.metrics import average_precision_score, roc_auc_score

    from hestdata.bench.metrics import average_precision, binary_auroc

    rng = np.random.default_rng(0)
    cases = []
    for n in (2, 5, 17, 60):
        y = rng.random(n) < 0.4
        y[0], y[-1] = True, False
        cases += [(y, rng.random(n)), (y, rng.integers(0, 3, n).astype(float)), (y, np.full(n, 0.7)),
                  (y, y.astype(float)), (y, -y.astype(float)), (rng.permutation(y), rng.random(n))]
    for y, s in cases:
        assert np.isclose(binary_auroc(y, s), roc_auc_score(y, s)), (y, s)
        assert np.isclose(average_precision(y, s), average_precision_score(y, s)), (y, s)
    assert np.isnan(binary_auroc(np.ones(4, bool), rng.random(4)))
    assert np.isnan(average_precision(np.zeros(4, bool), rng.random(4)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.isnan(binary_auroc(np.zeros(3, bool), [1, 2, 3]))
