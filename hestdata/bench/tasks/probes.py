"""Batch-effect diagnostics and patch classification probes on frozen embeddings."""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.bench.metrics import balanced_accuracy, macro_f1


def batch_effect(embeddings: np.ndarray, batch: Any, labels: Any = None, seed: int = 1) -> dict[str, float]:
    """Silhouette by batch (sample) and, if given, by label; balanced accuracy of predicting the batch from the
    embedding (5-fold stratified logistic regression). Higher batch silhouette / accuracy = stronger batch effect."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(embeddings, dtype=np.float64)
    b = np.asarray(batch).astype(str)
    out = {"silhouette_batch": float(silhouette_score(x, b)) if len(np.unique(b)) > 1 else float("nan")}
    if labels is not None:
        lab = np.asarray(labels).astype(str)
        out["silhouette_label"] = float(silhouette_score(x, lab)) if len(np.unique(lab)) > 1 else float("nan")
    n_splits = int(min(5, np.min(np.unique(b, return_counts=True)[1])))
    if len(np.unique(b)) > 1 and n_splits >= 2:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        pred = cross_val_predict(clf, x, b, cv=StratifiedKFold(n_splits, shuffle=True, random_state=seed))
        out["batch_balanced_accuracy"] = balanced_accuracy(b, pred)
    return out


def classification(embeddings: np.ndarray, labels: Any, groups: Any, *, knn_k: int = 20, seed: int = 1,
                   c_grid: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)) -> list[dict[str, Any]]:
    """Per held-out group: a linear probe (logistic regression, C chosen on a validation split of the training
    groups) and kNN; macro-F1, balanced accuracy and AUROC (one-vs-rest, macro) on the held-out group."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.preprocessing import StandardScaler

    from hestdata.bench.tasks.expression import _folds

    x = np.asarray(embeddings, dtype=np.float64)
    y = np.asarray(labels).astype(str)
    g = np.asarray(groups).astype(str)
    rows = []
    for tr, te, label in _folds(g, None):
        sc = StandardScaler().fit(x[tr])
        a, b = sc.transform(x[tr]), sc.transform(x[te])
        if len(np.unique(g[tr])) > 1:
            fit_i, val_i = next(GroupShuffleSplit(1, test_size=0.25, random_state=seed).split(a, y[tr], g[tr]))
        else:
            fit_i, val_i = next(StratifiedShuffleSplit(1, test_size=0.25, random_state=seed).split(a, y[tr]))
        best_c = max(c_grid, key=lambda c: balanced_accuracy(
            y[tr][val_i], LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
            .fit(a[fit_i], y[tr][fit_i]).predict(a[val_i])))
        lin = LogisticRegression(C=best_c, max_iter=2000, class_weight="balanced").fit(a, y[tr])
        knn = KNeighborsClassifier(n_neighbors=min(knn_k, len(tr))).fit(a, y[tr])
        for name, model in (("linear", lin), ("knn", knn)):
            pred = model.predict(b)
            proba = model.predict_proba(b)
            classes = list(model.classes_)
            present = [c for c in classes if c in set(y[te])]
            try:
                if len(classes) == 2:
                    auroc = float(roc_auc_score(y[te] == classes[1], proba[:, 1]))
                else:
                    auroc = float(roc_auc_score(y[te], proba, multi_class="ovr", average="macro", labels=classes))
            except ValueError:
                auroc = float("nan")
            rows.append({"test_group": label, "probe": name, "C": best_c if name == "linear" else None,
                         "macro_f1": macro_f1(y[te], pred), "balanced_accuracy": balanced_accuracy(y[te], pred),
                         "auroc": auroc, "n_classes_in_test": len(present)})
    return rows
