"""Slide-level tasks (Threads-style): a slide embedding against the slide's molecular profile.

* ``slide_expression`` — predict the profile's genes from the slide embedding: ridge regression, folds grouped
  by patient (a patient's slides are never split), out-of-fold predictions pooled over every slide, then the
  expression protocol's metrics per gene (Pearson, Spearman, MSE) across slides.
* ``slide_retrieval`` — slide ↔ profile: the same out-of-fold ridge maps each held-out slide into profile space;
  recall@k (tie-aware) of the true profile among *all* slides' profiles, and the reverse.

Profiles are compared as log1p counts per 10,000 (``normalize="cp10k_log1p"``, library-size normalised; or
``"log1p"`` of raw counts). Each fold scores the ``n_genes`` genes most variable across its **training** slides
(never the held-out ones: the leak fixed at patch level; a fold with one training slide takes that slide's most
expressed genes), or a fixed list (``gene_selection``); a gene is scored over the held-out slides of the folds
that chose it (at least three), so the pooled predictions hold NaN where a slide's fold did not choose a gene.
Slide embeddings are given (e.g. the mean of a slide's patch embeddings); both tasks work from three slides up,
and say how few they had.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


SLIDE_NORMALIZATIONS = ("cp10k_log1p", "log1p")


def _normalised(profiles: np.ndarray, normalize: str) -> np.ndarray:
    if normalize == "cp10k_log1p":
        return normalise_profiles(profiles)
    if normalize == "log1p":
        return np.log1p(np.asarray(profiles, dtype=np.float64))
    raise ValueError(f"normalize must be one of {SLIDE_NORMALIZATIONS}, got {normalize!r}")


@dataclass
class _Folds:
    x: np.ndarray  # slide embeddings
    y: np.ndarray  # normalised profiles, every gene
    folds: list[np.ndarray]  # test slides per fold
    kept: list[np.ndarray]  # genes each fold scores (chosen on its training slides)
    union: np.ndarray  # every gene some fold scores


def fold_genes(y_train: np.ndarray, n: int, choice: Any, names: list[str]) -> np.ndarray:
    """The genes one fold scores, from its training slides only: the ``n`` most variable across them
    (``"variance"``; with a single training slide, where no variance exists, its ``n`` most expressed genes), or a
    fixed list (or a ``var_50genes.json`` path) of names."""
    if choice != "variance":
        from hestdata.bench.genes import fixed_positions

        return np.sort(fixed_positions(choice, names, "the slides' shared profile genes"))
    if len(y_train) == 1:
        order = np.argsort(-y_train[0], kind="stable")
        return np.sort(order[: min(n, int((y_train[0] > 0).sum()))])
    return top_variable(y_train, n)


def _prepare(emb: np.ndarray, profiles: np.ndarray, groups: np.ndarray, n_genes: int, n_folds: int,
             normalize: str, choice: Any = "variance", names: list[str] | None = None) -> _Folds:
    if len(emb) != len(profiles) or len(emb) != len(groups):
        raise ValueError(f"{len(emb)} slide embeddings, {len(profiles)} profiles and {len(groups)} groups")
    if len(emb) < 3:
        raise ValueError(f"slide-level tasks need at least 3 slides, got {len(emb)}")
    y = _normalised(profiles, normalize)
    folds = group_folds(np.asarray(groups), n_folds)
    names = names or [str(i) for i in range(y.shape[1])]
    kept = [fold_genes(y[np.setdiff1d(np.arange(len(y)), te)], n_genes, choice, names) for te in folds]
    if not any(len(k) for k in kept):
        raise ValueError("every gene of the profiles is constant across the training slides of every fold")
    return _Folds(np.asarray(emb, np.float64), y, folds, kept, np.unique(np.concatenate(kept)))


def _oof(f: _Folds, alpha: float) -> np.ndarray:
    """(slides, len(union)) out-of-fold predictions of each fold's genes; NaN where a fold did not choose one."""
    col = {g: j for j, g in enumerate(f.union)}
    pred = np.full((len(f.x), len(f.union)), np.nan)
    for te, kept in zip(f.folds, f.kept, strict=True):
        if len(kept):
            p = oof_ridge(f.x, f.y[:, kept], [te], alpha)[te]
            pred[np.ix_(te, [col[g] for g in kept])] = p
    return pred


def slide_expression_protocol(emb: np.ndarray, profiles: np.ndarray, groups: np.ndarray, genes: list[str], *,
                              n_genes: int = 50, n_folds: int = 5, alpha: float = 1.0,
                              normalize: str = "cp10k_log1p", gene_selection: Any = "variance") -> SlideResult:
    """Ridge from slide embeddings to profiles, patient-grouped out-of-fold; per-gene metrics across slides."""
    from scipy.stats import rankdata

    from hestdata.bench.metrics import pearson_per_column

    f = _prepare(emb, profiles, groups, n_genes, n_folds, normalize, gene_selection, list(genes))
    pred = _oof(f, alpha)
    y = f.y[:, f.union]
    per_gene: dict[str, dict[str, float]] = {}
    for j, gi in enumerate(f.union):
        ok = np.isfinite(pred[:, j])
        if ok.sum() < 3:
            continue  # chosen by folds holding fewer than three slides: no correlation to take
        p, t = pred[ok, j:j + 1], y[ok, j:j + 1]
        per_gene[genes[gi]] = {"pearson": float(pearson_per_column(p, t)[0]),
                               "spearman": float(pearson_per_column(rankdata(p, axis=0), rankdata(t, axis=0))[0]),
                               "n_slides": int(ok.sum())}
    if not per_gene:
        raise ValueError("no gene was scored on three or more held-out slides (too few slides per fold)")
    base = np.full_like(pred, np.nan)
    col = {g: j for j, g in enumerate(f.union)}
    for te, kept in zip(f.folds, f.kept, strict=True):  # no-image baseline: the training slides' mean profile
        cols = [col[g] for g in kept]
        base[np.ix_(te, cols)] = f.y[np.setdiff1d(np.arange(len(y)), te)][:, kept].mean(0)
    ok = np.isfinite(pred)
    metrics = {"pearson_mean": float(np.nanmean([m["pearson"] for m in per_gene.values()])),
               "spearman_mean": float(np.nanmean([m["spearman"] for m in per_gene.values()])),
               "mse": float(np.mean((y[ok] - pred[ok]) ** 2)), "mean_profile_mse": float(np.mean((y[ok] - base[ok]) ** 2)),
               "n_genes_scored": float(len(per_gene))}
    return SlideResult(metrics, per_gene, pred, [genes[i] for i in f.union], len(f.x), len(f.folds))


def slide_retrieval_protocol(emb: np.ndarray, profiles: np.ndarray, groups: np.ndarray, genes: list[str], *,
                             n_genes: int = 50, n_folds: int = 5, alpha: float = 1.0,
                             ks: tuple[int, ...] = (1, 5), normalize: str = "cp10k_log1p",
                             gene_selection: Any = "variance") -> SlideResult:
    """Slide → profile and profile → slide recall@k over all slides: each held-out slide's out-of-fold ridge
    prediction against every slide's profile by cosine similarity, over its fold's genes, z-scored with the
    fold's training slides."""
    from hestdata.bench.metrics import recall_at_k

    f = _prepare(emb, profiles, groups, n_genes, n_folds, normalize, gene_selection, list(genes))
    pred = _oof(f, alpha)
    col = {g: j for j, g in enumerate(f.union)}
    sim = np.zeros((len(f.x), len(f.x)))  # slides x profiles
    for te, kept in zip(f.folds, f.kept, strict=True):
        if not len(kept):
            continue
        tr = np.setdiff1d(np.arange(len(f.x)), te)
        mu, sd = f.y[tr][:, kept].mean(0), f.y[tr][:, kept].std(0) + 1e-8
        a = (pred[np.ix_(te, [col[g] for g in kept])] - mu) / sd
        b = (f.y[:, kept] - mu) / sd
        a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
        b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
        sim[te] = a @ b.T
    metrics: dict[str, float] = {}
    for name, s in (("slide2profile", sim), ("profile2slide", sim.T)):
        r = recall_at_k(s, ks)
        metrics.update({f"{name}_recall@{k}": r[f"recall@{k}"] for k in ks})
        metrics[f"{name}_median_rank"] = r["median_rank"]
    metrics["chance_recall@1"] = 1.0 / len(f.x)
    return SlideResult(metrics, {}, pred, [genes[i] for i in f.union], len(f.x), len(f.folds))
