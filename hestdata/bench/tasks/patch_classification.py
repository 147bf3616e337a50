"""Patch (and cell) classification from frozen embeddings: the linear probe, kNN and few-shot protocols of the
feature-extractor benchmarks (Neidlinger et al.; DinoBloom), folds by patient.

Per fold (a patient, or a group of patients, held out; never in two folds):

- **linear**: standardised features, logistic regression with balanced class weights, ``C`` chosen on a
  validation split of the training patients (``c_grid``);
- **knn**: ``k`` = 20 nearest training embeddings by cosine similarity, majority vote (class shares as
  probabilities);
- **few-shot**: ``n`` = 1, 2, 4, 8, 16, 32 training embeddings per class (all of a class that has fewer), a
  balanced logistic regression (C = 1), averaged over ``shot_seeds`` draws.

Metrics: balanced accuracy, weighted F1 and macro one-vs-rest AUROC of the out-of-fold predictions pooled over
all folds, each with a 95 % bootstrap interval (resampling patients when there are at least five, else
patches), plus each fold's values. Items without a label are left out and counted. A constant encoder or
shuffled labels score chance (balanced accuracy 1 / n_classes; tested).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hestdata.bench.metrics import balanced_accuracy, macro_auroc, weighted_f1

SHOTS = (1, 2, 4, 8, 16, 32)
PROBES = ("linear", "knn")
C_GRID = (0.01, 0.1, 1.0, 10.0)  # the linear probe's inverse regularisation strengths, chosen by validation


@dataclass
class ClassificationResult:
    classes: list[str]
    pooled: dict[str, float] = field(default_factory=dict)  # <probe>_<metric>, with _ci_low / _ci_high
    folds: list[dict[str, Any]] = field(default_factory=list)
    oof_proba: dict[str, np.ndarray] = field(default_factory=dict)  # probe -> (n, classes)
    y: np.ndarray | None = None
    groups: np.ndarray | None = None
    n_unlabelled: int = 0
    n_rare: int = 0  # items of classes left out by min_class_items
    rare_classes: list[str] = field(default_factory=list)


def _proba(model: Any, x: np.ndarray, classes: list[str]) -> np.ndarray:
    """Class probabilities over ``classes`` (0 for a class the training fold lacks)."""
    out = np.zeros((len(x), len(classes)))
    p = model.predict_proba(x)
    for j, c in enumerate(model.classes_):
        out[:, classes.index(str(c))] = p[:, j]
    return out


def _validation_split(a: np.ndarray, y: np.ndarray, g: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, validation) rows: a quarter of the patients held out, or of the rows (stratified) with one patient;
    every row both ways when a class has a single row."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    if len(np.unique(g)) > 1:
        return next(GroupShuffleSplit(1, test_size=0.25, random_state=seed).split(a, y, g))
    if np.min(np.unique(y, return_counts=True)[1]) >= 2:
        return next(StratifiedShuffleSplit(1, test_size=0.25, random_state=seed).split(a, y))
    return np.arange(len(y)), np.arange(len(y))


def _linear(a: np.ndarray, y: np.ndarray, g: np.ndarray, c_grid: tuple[float, ...], seed: int) -> Any:
    """The balanced logistic regression, its C chosen on a validation split (1.0 where none can be chosen)."""
    from sklearn.linear_model import LogisticRegression

    def fit(c: float, idx: np.ndarray) -> Any:
        return LogisticRegression(C=c, max_iter=2000, class_weight="balanced").fit(a[idx], y[idx])

    best = 1.0
    if len(c_grid) > 1 and len(np.unique(y)) > 1:
        fit_i, val_i = _validation_split(a, y, g, seed)
        if len(np.unique(y[fit_i])) > 1:
            best = max(c_grid, key=lambda c: balanced_accuracy(y[val_i], fit(c, fit_i).predict(a[val_i])))
    return fit(best, np.arange(len(y))), best


def _knn(a: np.ndarray, y: np.ndarray, b: np.ndarray, classes: list[str], k: int) -> np.ndarray:
    """Class shares among the ``k`` most cosine-similar training embeddings."""
    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    sim = unit(b) @ unit(a).T
    k = min(k, len(a))
    nn = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    out = np.zeros((len(b), len(classes)))
    idx = {c: j for j, c in enumerate(classes)}
    for i, row in enumerate(nn):
        for c in y[row]:
            out[i, idx[c]] += 1.0 / k
    return out


def _few_shot(a: np.ndarray, y: np.ndarray, b: np.ndarray, yb: np.ndarray, shots: tuple[int, ...], seeds: int,
              seed: int) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression

    out = {}
    for n in shots:
        bal, f1 = [], []
        for s in range(seeds):
            rng = np.random.default_rng(seed * 1000 + s)
            idx = np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c in np.unique(y)])
            if len(np.unique(y[idx])) < 2:
                continue
            pred = LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced").fit(a[idx], y[idx]).predict(b)
            bal.append(balanced_accuracy(yb, pred))
            f1.append(weighted_f1(yb, pred))
        if bal:
            out[f"fewshot{n}_balanced_accuracy"], out[f"fewshot{n}_weighted_f1"] = float(np.mean(bal)), float(np.mean(f1))
    return out


def class_scores(y: np.ndarray, proba: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Balanced accuracy and weighted F1 of the most probable class, and macro one-vs-rest AUROC."""
    pred = np.asarray(classes, dtype=object)[proba.argmax(1)]
    return {"balanced_accuracy": balanced_accuracy(y, pred), "weighted_f1": weighted_f1(y, pred),
            "macro_auroc": macro_auroc(y, proba, classes)}


def _bootstrap(y: np.ndarray, proba: np.ndarray, classes: list[str], groups: np.ndarray, n_boot: int,
               seed: int) -> dict[str, tuple[float, float]]:
    """95 % intervals of the pooled scores, resampling patients (>= 5) or else patches."""
    rng = np.random.default_rng(seed)
    uniq = np.unique(groups)
    by_group = [np.flatnonzero(groups == u) for u in uniq] if len(uniq) >= 5 else None
    vals: dict[str, list[float]] = {}
    for _ in range(n_boot):
        if by_group is not None:
            idx = np.concatenate([by_group[i] for i in rng.integers(0, len(uniq), len(uniq))])
        else:
            idx = rng.integers(0, len(y), len(y))
        for k, v in class_scores(y[idx], proba[idx], classes).items():
            vals.setdefault(k, []).append(v)
    return {k: (float(np.nanpercentile(v, 2.5)), float(np.nanpercentile(v, 97.5))) for k, v in vals.items()}


def kept_labels(labels: Any, min_class_items: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(items with a label, items whose class has at least ``min_class_items`` labelled items, the rarer classes
    left out, sorted); a missing label is None, NaN or empty. The frozen probes and fine-tuning keep the same
    items."""
    lab = np.asarray(labels, dtype=object)
    labelled = np.array([v is not None and not (isinstance(v, float) and np.isnan(v)) and str(v) not in ("", "nan")
                         for v in lab], dtype=bool)
    vals, counts = np.unique(lab[labelled].astype(str), return_counts=True)
    rare = set(vals[counts < min_class_items].tolist())
    return labelled, labelled & np.array([str(v) not in rare for v in lab], dtype=bool), sorted(rare)


def patch_classification_protocol(embeddings: np.ndarray, labels: Any, groups: Any, *, knn_k: int = 20,
                                  shots: tuple[int, ...] = SHOTS, shot_seeds: int = 5, seed: int = 1,
                                  n_boot: int = 1000, n_folds: int | None = None,
                                  c_grid: tuple[float, ...] = C_GRID,
                                  min_class_items: int = 0) -> ClassificationResult:
    """Linear, kNN and few-shot probes over patient folds (module docstring); ``labels`` may hold missing values
    (None, NaN, empty), which are left out and counted. ``min_class_items``: classes with fewer labelled items are
    left out too (counted in ``n_rare``) — a class rarer than the folds is absent from some training folds, whose
    probes then give it no score, and pooling those folds' scores puts even a constant encoder below chance."""
    from sklearn.preprocessing import StandardScaler

    from hestdata.bench.tasks.expression import _folds

    lab = np.asarray(labels, dtype=object)
    labelled, have, rare = kept_labels(lab, min_class_items)
    n_rare = int((labelled & ~have).sum())
    x = np.asarray(embeddings, dtype=np.float64)[have]
    y = lab[have].astype(str)
    g = np.asarray(groups).astype(str)[have]
    classes = sorted(set(y.tolist()))
    if len(classes) < 2:
        raise ValueError(f"classification needs at least two classes among the labelled items; got {classes}")
    res = ClassificationResult(classes, y=y, groups=g, n_unlabelled=int((~labelled).sum()), n_rare=n_rare,
                               rare_classes=rare)
    oof = {p: np.zeros((len(y), len(classes))) for p in PROBES}
    for tr, te, name in _folds(g, n_folds):
        sc = StandardScaler().fit(x[tr])
        a, b = sc.transform(x[tr]), sc.transform(x[te])
        lin, c = _linear(a, y[tr], g[tr], c_grid, seed)
        oof["linear"][te] = _proba(lin, b, classes)
        oof["knn"][te] = _knn(x[tr], y[tr], x[te], classes, knn_k)
        fold = {"test_group": name, "n_test": int(len(te)), "C": c}
        for p in PROBES:
            fold.update({f"{p}_{k}": v for k, v in class_scores(y[te], oof[p][te], classes).items()})
        fold.update(_few_shot(a, y[tr], b, y[te], shots, shot_seeds, seed))
        res.folds.append(fold)
    for p in PROBES:
        res.oof_proba[p] = oof[p]
        ci = _bootstrap(y, oof[p], classes, g, n_boot, seed) if n_boot else {}
        for k, v in class_scores(y, oof[p], classes).items():
            res.pooled[f"{p}_{k}"] = v
            if k in ci:
                res.pooled[f"{p}_{k}_ci_low"], res.pooled[f"{p}_{k}_ci_high"] = ci[k]
    res.pooled["chance_balanced_accuracy"] = 1.0 / len(classes)
    return res
