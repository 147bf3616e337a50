"""Slide-level tasks (Threads-style): a slide embedding against the slide's molecular profile.

* ``slide_expression`` — predict the profile's genes from the slide embedding: ridge regression, folds grouped
  by patient (a patient's slides are never split), out-of-fold predictions pooled over every slide, then the
  expression protocol's metrics per gene (Pearson, Spearman, MSE) across slides.
* ``slide_retrieval`` — slide ↔ profile: the same out-of-fold ridge maps each held-out slide into profile space;
  recall@k (tie-aware) of the true profile among *all* slides' profiles, and the reverse.

Profiles are compared as log1p counts per 10,000 (library-size normalised), genes restricted to the ``n_genes``
most variable across slides (chosen without labels, the same for every encoder). Slide embeddings are given
(e.g. the mean of a slide's patch embeddings); both tasks work from three slides up, and say how few they had.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hestdata.curation.profiles import normalise_profiles


@dataclass
class SlideResult:
    metrics: dict[str, float]
    per_gene: dict[str, dict[str, float]] = field(default_factory=dict)
    predictions: np.ndarray | None = None  # (slides, genes) out-of-fold
    genes: list[str] = field(default_factory=list)
    n_slides: int = 0
    n_groups: int = 0


def top_variable(y: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` genes with the largest variance across slides (constant genes never chosen)."""
    v = np.where(np.ptp(y, axis=0) > 0, y.var(axis=0), -1.0)  # exactly constant columns last (var may round > 0)
    order = np.argsort(-v, kind="stable")
    return np.sort(order[: min(n, int((v >= 0).sum()))])


def group_folds(groups: np.ndarray, n_folds: int) -> list[np.ndarray]:
    """Test indices per fold: whole groups (patients), at most ``n_folds`` folds, every slide tested once."""
    uniq = sorted(set(groups.tolist()))
    if len(uniq) < 2:
        raise ValueError("slide-level tasks need slides of at least two patients (folds are grouped by patient)")
    k = min(n_folds, len(uniq))
    return [np.flatnonzero(np.isin(groups, [g for i, g in enumerate(uniq) if i % k == f])) for f in range(k)]


def oof_ridge(x: np.ndarray, y: np.ndarray, folds: list[np.ndarray], alpha: float) -> np.ndarray:
    """Out-of-fold ridge predictions of ``y`` from ``x`` (features standardised on each training set)."""
    from sklearn.linear_model import Ridge

    pred = np.zeros_like(y)
    for te in folds:
        tr = np.setdiff1d(np.arange(len(x)), te)
        mu, sd = x[tr].mean(0), x[tr].std(0)
        sd = np.where(sd > 1e-12, sd, 1.0)  # a feature constant on the training slides (or one slide) is centred only
        model = Ridge(alpha=alpha).fit((x[tr] - mu) / sd, y[tr])
        pred[te] = model.predict((x[te] - mu) / sd)
    return pred


def _prepare(emb: np.ndarray, profiles: np.ndarray, groups: np.ndarray, genes: list[str], n_genes: int,
             n_folds: int) -> tuple[np.ndarray, np.ndarray, list[str], list[np.ndarray]]:
    if len(emb) != len(profiles) or len(emb) != len(groups):
        raise ValueError(f"{len(emb)} slide embeddings, {len(profiles)} profiles and {len(groups)} groups")
    if len(emb) < 3:
        raise ValueError(f"slide-level tasks need at least 3 slides, got {len(emb)}")
    y = normalise_profiles(profiles)
    keep = top_variable(y, n_genes)
    if not len(keep):
        raise ValueError("every gene of the profiles is constant across slides")
    return np.asarray(emb, np.float64), y[:, keep], [genes[i] for i in keep], group_folds(np.asarray(groups), n_folds)


def slide_expression_protocol(emb: np.ndarray, profiles: np.ndarray, groups: np.ndarray, genes: list[str], *,
                              n_genes: int = 50, n_folds: int = 5, alpha: float = 1.0) -> SlideResult:
    """Ridge from slide embeddings to profiles, patient-grouped out-of-fold; per-gene metrics across slides."""
    from scipy.stats import rankdata

    from hestdata.bench.metrics import pearson_per_column

    x, y, kept, folds = _prepare(emb, profiles, groups, genes, n_genes, n_folds)
    pred = oof_ridge(x, y, folds, alpha)
    pearson = pearson_per_column(pred, y)
    spearman = pearson_per_column(rankdata(pred, axis=0), rankdata(y, axis=0))
    per_gene = {g: {"pearson": float(pearson[j]), "spearman": float(spearman[j])} for j, g in enumerate(kept)}
    base = np.zeros_like(y)
    for te in folds:  # the no-image baseline: every held-out slide gets its training slides' mean profile
        base[te] = y[np.setdiff1d(np.arange(len(y)), te)].mean(0)
    metrics = {"pearson_mean": float(np.nanmean(pearson)), "spearman_mean": float(np.nanmean(spearman)),
               "mse": float(np.mean((y - pred) ** 2)), "mean_profile_mse": float(np.mean((y - base) ** 2))}
    return SlideResult(metrics, per_gene, pred, kept, len(x), len(folds))


def slide_retrieval_protocol(emb: np.ndarray, profiles: np.ndarray, groups: np.ndarray, genes: list[str], *,
                             n_genes: int = 50, n_folds: int = 5, alpha: float = 1.0,
                             ks: tuple[int, ...] = (1, 5)) -> SlideResult:
    """Slide → profile and profile → slide recall@k over all slides, from out-of-fold ridge predictions
    compared with every slide's profile by cosine similarity (z-scored genes)."""
    from hestdata.bench.metrics import recall_at_k

    x, y, kept, folds = _prepare(emb, profiles, groups, genes, n_genes, n_folds)
    pred = oof_ridge(x, y, folds, alpha)
    mu, sd = y.mean(0), y.std(0) + 1e-8
    a, b = (pred - mu) / sd, (y - mu) / sd
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    sim = a @ b.T  # slides x profiles
    metrics: dict[str, float] = {}
    for name, s in (("slide2profile", sim), ("profile2slide", sim.T)):
        r = recall_at_k(s, ks)
        metrics.update({f"{name}_recall@{k}": r[f"recall@{k}"] for k in ks})
        metrics[f"{name}_median_rank"] = r["median_rank"]
    metrics["chance_recall@1"] = 1.0 / len(x)
    return SlideResult(metrics, {}, pred, kept, len(x), len(folds))
