"""HEST-Benchmark gene-expression regression, on plain arrays.

Per fold (patient-grouped): the genes are chosen **on the training rows only** (``gene_selection``: HEST's
criterion by default, see :mod:`hestdata.bench.genes`); targets are log1p counts (HEST's, no library-size
normalisation) or ``cp10k_log1p``; StandardScaler and PCA(latent_dim) are fit on the training embeddings only; a
ridge regression (no intercept, ``alpha = 100 / (d · n_genes)`` with ``d`` the PCA dimension — or chosen by inner
group cross-validation) predicts the test fold; the score is Pearson r per gene on the test fold, averaged over
genes, then mean ± std over folds.

The ridge is solved exactly (``solver="exact"``: SVD of the standardised PCA features, full PCA). HEST's
``lsqr`` stops at tol 1e-4: on ill-conditioned features a 1e-14 change of the inputs moves a fold mean by 0.03
(benchmarks/RESULTS.md); ``solver="hest_compat"`` reproduces HEST's numbers, instability included, and says so.

Deliberate differences from HEST's shipped code, each a fix of a reported defect: genes are selected without the
test fold (HEST #89), ``alpha`` is honoured (#140), PCA is always on unless ``latent_dim=None`` (#50), and PCA
asks for ``min(latent_dim, n_train, d)`` components instead of failing with few training rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hestdata.bench.genes import choose_genes, fixed_gene_list, top_variable_genes  # noqa: F401  (re-exported)
from hestdata.bench.metrics import pearson_per_column

SOLVERS = ("exact", "hest_compat")
REGRESSORS = ("ridge", "knn", "mlp", "random_forest", "gradient_boosting")


@dataclass
class ExpressionFold:
    test_group: str
    genes: list[Any]
    pearson: np.ndarray  # per gene, in ``genes`` order
    alpha: float
    n_train: int
    n_test: int
    test_index: np.ndarray | None = None  # rows of the input that formed the test fold
    predictions: np.ndarray | None = None  # (n_test, n_genes) log1p predictions
    truth: np.ndarray | None = None  # (n_test, n_genes) targets

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.pearson)) if np.isfinite(self.pearson).any() else float("nan")


@dataclass
class ExpressionResult:
    folds: list[ExpressionFold] = field(default_factory=list)

    @property
    def fold_means(self) -> np.ndarray:
        return np.array([f.mean for f in self.folds])

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_means))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_means))

    def by_group(self) -> dict[str, np.ndarray]:
        return {f.test_group: f.pearson for f in self.folds}


def _folds(groups: np.ndarray, n_folds: int | None) -> list[tuple[np.ndarray, np.ndarray, str]]:
    uniq = list(dict.fromkeys(groups.tolist()))
    if len(uniq) < 2:
        raise ValueError("the expression protocol needs at least two groups (e.g. patients) for grouped folds")
    if n_folds is None or n_folds >= len(uniq):
        return [(np.flatnonzero(groups != g), np.flatnonzero(groups == g), str(g)) for g in uniq]
    from sklearn.model_selection import GroupKFold

    out = []
    for k, (tr, te) in enumerate(GroupKFold(n_splits=n_folds).split(np.zeros(len(groups)), groups=groups)):
        held = sorted(map(str, np.unique(groups[te])))
        # a few groups by name; many (items of a collection) by count, so a fold label stays one short line
        out.append((tr, te, "+".join(held) if len(held) <= 4 else f"fold{k + 1}({len(held)} groups)"))
    return out


def _per_gene(make: Any, a: np.ndarray, y_tr: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One model per gene (HEST fits its forests and boosted trees gene by gene)."""
    return np.column_stack([make().fit(a, y_tr[:, j]).predict(b) for j in range(y_tr.shape[1])])


def _fit_predict(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, latent_dim: int | None, alpha: float | None,
                 seed: int, regressor: str = "ridge", solver: str = "exact") -> tuple[np.ndarray, float]:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if regressor not in REGRESSORS:
        raise ValueError(f"regressor must be one of {REGRESSORS}, got {regressor!r}")
    scaler = StandardScaler().fit(x_tr)
    a, b = scaler.transform(x_tr), scaler.transform(x_te)
    if latent_dim is not None:
        pca = PCA(n_components=min(latent_dim, a.shape[0], a.shape[1]), random_state=seed,
                  svd_solver="full" if solver == "exact" else "auto").fit(a)
        a, b = pca.transform(a), pca.transform(b)
    if regressor == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        return KNeighborsRegressor(n_neighbors=min(20, len(a))).fit(a, y_tr).predict(b), float("nan")
    if regressor == "mlp":
        from sklearn.neural_network import MLPRegressor

        mlp = MLPRegressor(hidden_layer_sizes=(256,), alpha=1e-3, max_iter=500, early_stopping=len(a) >= 50,
                           random_state=seed)
        return mlp.fit(a, y_tr).predict(b), float("nan")
    if regressor == "random_forest":  # HEST's: 70 trees per gene
        from sklearn.ensemble import RandomForestRegressor

        return _per_gene(lambda: RandomForestRegressor(n_estimators=70, random_state=seed), a, y_tr, b), float("nan")
    if regressor == "gradient_boosting":  # scikit-learn's histogram boosting, standing in for HEST's XGBoost
        from sklearn.ensemble import HistGradientBoostingRegressor

        return _per_gene(lambda: HistGradientBoostingRegressor(max_iter=100, random_state=seed), a, y_tr, b), \
            float("nan")
    if alpha is None:
        alpha = 100.0 / (a.shape[1] * y_tr.shape[1])
    if solver == "hest_compat":  # HEST's lsqr (tol 1e-4): its numbers, and its instability
        model = Ridge(solver="lsqr", fit_intercept=False, alpha=alpha, random_state=seed).fit(a, y_tr)
    else:
        model = Ridge(solver="svd", fit_intercept=False, alpha=alpha).fit(a, y_tr)
    return model.predict(b), alpha


ALPHA_GRID = tuple(float(a) for a in np.logspace(-2, 5, 8))  # 1e-2 … 1e5 (HEST's tracker reports ~5e3 as best)
NORMALIZATIONS = ("log1p", "cp10k_log1p")


def spatial_blocks(coords: np.ndarray | None, n: int, n_blocks: int = 5) -> np.ndarray:
    """Block labels for inner folds when only one training group exists: stripes of equal count along x (or, with
    no coordinates, contiguous runs of rows) — never a shuffled KFold, which leaks neighbouring spots."""
    if coords is not None and len(coords) == n:
        order = np.argsort(np.asarray(coords)[:, 0], kind="stable")
    else:
        order = np.arange(n)
    labels = np.empty(n, dtype=object)
    for b, chunk in enumerate(np.array_split(order, min(n_blocks, max(2, n)))):
        labels[chunk] = f"block{b}"
    return labels.astype(str)


def _cv_alpha(x: np.ndarray, y: np.ndarray, groups: np.ndarray, latent_dim: int | None, seed: int,
              grid: tuple[float, ...], coords: np.ndarray | None = None, solver: str = "exact") -> float:
    """The alpha with the best mean Pearson r over inner folds: one per training group, or spatial blocks when
    the training rows come from a single group."""
    inner_groups = groups if len(np.unique(groups)) >= 2 else spatial_blocks(coords, len(groups))
    inner = _folds(inner_groups, None)
    best, best_score = grid[0], -np.inf
    for a in grid:
        scores = []
        for tr, te, _ in inner:
            pred, _ = _fit_predict(x[tr], y[tr], x[te], latent_dim, a, seed, solver=solver)
            scores.append(np.nanmean(pearson_per_column(pred, y[te])))
        s = float(np.nanmean(scores))
        if s > best_score:
            best, best_score = a, s
    return best


def targets(counts: np.ndarray, normalize: str, library_size: np.ndarray | None = None) -> np.ndarray:
    """``log1p`` of raw counts (HEST), or ``cp10k_log1p``: counts per 10,000 of each spot's library, then log1p
    (removes sequencing depth and cellularity from the targets). ``library_size`` is each row's total over its
    sample's **whole** table (the total the library-size baseline uses); without it, the sum of ``counts``."""
    c = counts.astype(np.float64)
    if normalize == "log1p":
        return np.log1p(c)
    if normalize == "cp10k_log1p":
        lib = (c.sum(axis=1) if library_size is None else np.asarray(library_size, dtype=np.float64)).reshape(-1, 1)
        if len(lib) != len(c):
            raise ValueError(f"library_size has {len(lib)} rows, counts {len(c)}")
        return np.log1p(np.divide(c * 1e4, lib, out=np.zeros_like(c), where=lib > 0))
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


def expression_protocol(embeddings: np.ndarray, counts: Any, groups: Any, genes: list[Any] | None = None, k: int = 50,
                        latent_dim: int | None = 256, seed: int = 1, alpha: float | None = None,
                        cv_alpha: bool = False, n_folds: int | None = None,
                        alpha_grid: tuple[float, ...] = ALPHA_GRID, regressor: str = "ridge",
                        fixed_genes: Any = None, normalize: str = "log1p",
                        coords: np.ndarray | None = None, gene_selection: Any = "hest",
                        slides: Any = None, library_size: np.ndarray | None = None,
                        solver: str = "exact") -> ExpressionResult:
    """Run the protocol on arrays: ``embeddings`` (N, D), raw ``counts`` (N, G; dense or sparse), ``groups`` (N,).

    Returns per-fold per-gene Pearson r keyed by the held-out group, with the genes chosen on each fold's
    training rows (names from ``genes`` if given, else column indices). ``n_folds=None`` = leave one group out.

    ``gene_selection``: ``"hest"`` (HEST's criterion; needs ``slides``, the slide of each row, else the training
    rows count as one slide), ``"variance"``, or a fixed list / HEST ``var_50genes.json`` path (``fixed_genes``
    is the same as a fixed ``gene_selection``). ``regressor``: ``"ridge"`` (the protocol), or the probes HEST
    and HESCAPE report on the same standardised PCA features: ``"random_forest"`` (70 trees per gene, HEST's),
    ``"gradient_boosting"`` (per gene), ``"knn"`` (20 neighbours, HESCAPE's kNN prediction) and ``"mlp"``.
    ``solver``: ``"exact"`` or ``"hest_compat"`` (HEST's lsqr). ``normalize``: ``"log1p"`` (HEST) or
    ``"cp10k_log1p"`` (over ``library_size``, each row's total over its whole table, when given).
    ``cv_alpha`` searches ``alpha_grid`` (1e-2 … 1e5) with inner folds by group, or by spatial blocks of
    ``coords`` when a fold trains on one group.
    """
    import scipy.sparse as sp

    x = np.asarray(embeddings, dtype=np.float64)
    c = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    y_all = targets(c, normalize, library_size)
    choice = fixed_genes if fixed_genes is not None else gene_selection
    g = np.asarray(groups).astype(str)
    sl = None if slides is None else np.asarray(slides).astype(str)
    if not (len(x) == len(y_all) == len(g)) or (sl is not None and len(sl) != len(g)):
        raise ValueError(f"embeddings {x.shape}, counts {c.shape}, groups {g.shape} and slides "
                         f"{None if sl is None else sl.shape} disagree in length")
    names = list(genes) if genes is not None else list(range(c.shape[1]))
    result = ExpressionResult()
    for tr, te, label in _folds(g, n_folds):
        chosen = choose_genes(choice, k, y_all[tr], c[tr], None if sl is None else sl[tr], names)
        y_tr, y_te = y_all[tr][:, chosen], y_all[te][:, chosen]
        xy = None if coords is None else np.asarray(coords)[tr]
        a = (_cv_alpha(x[tr], y_tr, g[tr], latent_dim, seed, tuple(alpha_grid), xy, solver)
             if cv_alpha and regressor == "ridge" else alpha)
        pred, used = _fit_predict(x[tr], y_tr, x[te], latent_dim, a, seed, regressor, solver)
        result.folds.append(ExpressionFold(label, [names[i] for i in chosen], pearson_per_column(pred, y_te),
                                           used, len(tr), len(te), te, pred, y_te))
    return result


def bootstrap_interval(result: ExpressionResult, n_boot: int = 200, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of the across-fold mean Pearson r, resampling test spots with replacement within each
    fold (the folds themselves are few and fixed: 2 patients give 2 folds, whatever the interval says)."""
    rng = np.random.default_rng(seed)
    reps = np.zeros((n_boot, len(result.folds)))
    for j, f in enumerate(result.folds):
        n = len(f.truth)
        for b in range(n_boot):
            idx = rng.integers(0, n, size=n)
            reps[b, j] = np.nanmean(pearson_per_column(f.predictions[idx], f.truth[idx]))
    means = np.nanmean(reps, axis=1)
    lo, hi = np.nanpercentile(means, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)
