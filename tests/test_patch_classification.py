"""Patch classification (issue 29, deliverable 3): metrics against sklearn, chance on shuffled labels and on a
constant encoder, a planted class signal found by every probe, no patient in two folds, unlabelled items left out."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("sklearn")

from hestdata.bench.metrics import macro_auroc, weighted_f1  # noqa: E402
from hestdata.bench.tasks.patch_classification import patch_classification_protocol  # noqa: E402


def _planted(seed: int = 0, n_patients: int = 6, per: int = 60, strength: float = 3.0):
    rng = np.random.default_rng(seed)
    classes = np.array(["tumour", "stroma", "immune"])
    y = rng.choice(classes, size=n_patients * per, p=[0.6, 0.3, 0.1])  # imbalanced, as real labels are
    x = rng.normal(size=(len(y), 16))
    for j, c in enumerate(classes):
        x[y == c, j] += strength
    groups = np.repeat([f"P{i}" for i in range(n_patients)], per)
    return x, y, groups


def test_metrics_equal_sklearns_on_ties_and_imbalance():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(1)
    y = rng.choice(["a", "b", "c"], size=200, p=[0.7, 0.2, 0.1])
    pred = np.where(rng.random(200) < 0.6, y, rng.choice(["a", "b", "c"], size=200))
    assert weighted_f1(y, pred) == pytest.approx(f1_score(y, pred, average="weighted"))
    proba = np.round(rng.dirichlet([1, 1, 1], size=200), 1)  # many ties
    proba /= proba.sum(1, keepdims=True)
    want = roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=["a", "b", "c"])
    assert macro_auroc(y, proba, ["a", "b", "c"]) == pytest.approx(want)


def test_planted_signal_found_chance_when_shuffled_or_constant():
    x, y, g = _planted()
    res = patch_classification_protocol(x, y, g, n_boot=200, shots=(1, 8), shot_seeds=3)
    p = res.pooled
    assert p["linear_balanced_accuracy"] > 0.85 and p["knn_balanced_accuracy"] > 0.8, p
    assert p["linear_macro_auroc"] > 0.95 and p["linear_balanced_accuracy_ci_low"] < p["linear_balanced_accuracy"]
    assert np.mean([f["fewshot8_balanced_accuracy"] for f in res.folds]) > \
        np.mean([f["fewshot1_balanced_accuracy"] for f in res.folds]) > 1 / 3  # more shots, better; above chance
    for f in res.folds:  # leave-one-patient-out: the held-out patient trains nowhere in its fold
        assert f["test_group"] in set(g) and f["n_test"] == 60
    shuffled = patch_classification_protocol(x, np.random.default_rng(2).permutation(y), g, n_boot=200,
                                             shots=(4,), shot_seeds=2).pooled
    const = patch_classification_protocol(np.ones_like(x), y, g, n_boot=200, shots=(4,), shot_seeds=2).pooled
    for q in (shuffled, const):
        for probe in ("linear", "knn"):
            assert abs(q[f"{probe}_balanced_accuracy"] - 1 / 3) < 0.1, q
            assert abs(q[f"{probe}_macro_auroc"] - 0.5) < 0.1, q


def test_unlabelled_items_are_left_out_and_counted():
    x, y, g = _planted(n_patients=4, per=30)
    lab = y.astype(object)
    lab[:7] = None
    lab[7:10] = np.nan
    res = patch_classification_protocol(x, lab, g, n_boot=0, shots=(2,), shot_seeds=1)
    assert res.n_unlabelled == 10 and len(res.y) == len(y) - 10 and set(res.classes) == set(y)
    with pytest.raises(ValueError, match="two classes"):
        patch_classification_protocol(x, np.full(len(y), "a"), g, n_boot=0)


def test_a_class_rarer_than_the_folds_and_min_class_items():
    """Two items of a fourth class over five folds: it is missing from some training folds, which give it no score,
    and the pooled scores of a constant encoder fall below chance. Leaving such classes out (counted) restores it."""
    x, y, g = _planted(n_patients=10, per=30)
    y = y.astype(object)
    y[[5, 6]] = "rare"  # one patient: its fold trains without the class
    const = np.ones_like(x)
    bad = patch_classification_protocol(const, y, g, n_boot=0, shots=(2,), shot_seeds=1, n_folds=5).pooled
    assert bad["linear_macro_auroc"] < 0.5  # the artefact this option exists for
    res = patch_classification_protocol(const, y, g, n_boot=0, shots=(2,), shot_seeds=1, n_folds=5,
                                        min_class_items=5)
    assert res.n_rare == 2 and res.rare_classes == ["rare"] and res.n_unlabelled == 0 and "rare" not in res.classes
    assert res.pooled["linear_macro_auroc"] == pytest.approx(0.5) and res.pooled["linear_balanced_accuracy"] == \
        pytest.approx(1 / 3)
