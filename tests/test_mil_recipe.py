"""STAMP's training recipe and statistics for slide-level MIL: validation split and best-checkpoint restore,
bag sampling, regression and survival heads, pooled out-of-fold ROC/PR with bootstrap intervals, C-index."""

from __future__ import annotations

import numpy as np
import pytest

from hestdata.bench.tasks.mil_stats import concordance_index, pooled_classification, save_curves
from hestdata.bench.tasks.slide_mil import slide_mil_protocol


def _c_index_by_definition(t, e, r):
    """Every ordered pair, counted the textbook way (an independent implementation)."""
    num = den = 0.0
    for i in range(len(t)):
        for j in range(len(t)):
            if e[i] == 1 and t[i] < t[j]:
                den += 1
                num += 1.0 if r[i] > r[j] else 0.5 if r[i] == r[j] else 0.0
    return num / den


def test_c_index_on_degenerate_and_random_inputs():
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    e = np.array([1, 1, 0, 1, 0])
    assert concordance_index(t, e, -t) == 1.0  # the earlier failure always has the higher risk
    assert concordance_index(t, e, t) == 0.0
    assert concordance_index(t, e, np.zeros(5)) == 0.5  # constant risk: all ties
    assert np.isnan(concordance_index(t, np.zeros(5), t))  # nobody had the event: no comparable pair
    rng = np.random.default_rng(0)
    for _ in range(5):
        tt, ee, rr = rng.integers(1, 20, 40).astype(float), rng.integers(0, 2, 40), rng.integers(0, 5, 40)
        assert concordance_index(tt, ee, rr) == pytest.approx(_c_index_by_definition(tt, ee, rr))


def test_pooled_auroc_is_the_mann_whitney_statistic_and_its_interval_covers_it(tmp_path):
    rng = np.random.default_rng(1)
    y = np.array(["neg", "pos"] * 30)
    score = rng.normal(size=60) + (y == "pos") * 1.0
    proba = np.column_stack([1 - 1 / (1 + np.exp(-score)), 1 / (1 + np.exp(-score))])
    st = pooled_classification(y, proba, ["neg", "pos"], n_boot=300)
    pos, neg = score[y == "pos"], score[y == "neg"]
    u = np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])
    assert st["auroc"] == pytest.approx(u)
    lo, hi = st["auroc_ci"]
    assert lo < st["auroc"] < hi and 0 < st["ap"] <= 1
    flat = pooled_classification(y, np.full((60, 2), 0.5), ["neg", "pos"], n_boot=100)
    assert flat["auroc"] == 0.5 and flat["ap"] == pytest.approx(0.5)  # a constant score: chance
    files = save_curves(st, tmp_path / "fig", "test")
    assert (tmp_path / "fig" / "roc_pr.png").stat().st_size > 10_000 and len(files) == 3
    assert (tmp_path / "fig" / "roc_pos.csv").read_text().startswith("fpr,tpr\n")


def _bags(rng, n=36, signal=None):
    bags = {}
    for i in range(n):
        x = rng.normal(size=(rng.integers(30, 90), 8)).astype(np.float32)
        if signal is not None:
            x[:5, 0] += signal[i]
        bags[f"p{i:02d}"] = x
    return bags


def test_recipe_validation_split_checkpoint_and_bag_sampling():
    rng = np.random.default_rng(2)
    lab = {f"p{i:02d}": i % 2 for i in range(36)}
    bags = _bags(rng, signal=[6.0 * (i % 2) for i in range(36)])
    res = slide_mil_protocol(bags, lab, n_folds=3, epochs=30, seed=0, bag_size=16, batch_size=8, patience=5)
    for f in res.folds:
        assert f["validation_patients"] and set(f["validation_patients"]).isdisjoint(f["test_patients"])
        assert 1 <= f["best_epoch"] <= f["epochs_run"] <= 30
    assert sorted(p for f in res.folds for p in f["test_patients"]) == sorted(bags)
    assert res.mean("abmil_auroc") > 0.9  # 5 of 30-90 patches carry it; 16 sampled per bag and step
    lo, hi = res.pooled["abmil"]["auroc_ci"]
    assert lo <= res.pooled["abmil"]["auroc"] <= hi
    perm = np.random.default_rng(0).permutation(sorted(lab))
    shuffled = slide_mil_protocol(bags, {p: lab[q] for p, q in zip(sorted(lab), perm, strict=True)},
                                  n_folds=3, epochs=15, seed=0, batch_size=8, n_boot=200)
    lo, hi = shuffled.pooled["abmil"]["auroc_ci"]
    assert lo < 0.5 < hi and abs(shuffled.pooled["abmil"]["auroc"] - 0.5) < 0.2  # labels shuffled: chance


def test_regression_and_survival_heads_recover_a_planted_value():
    rng = np.random.default_rng(3)
    value = rng.uniform(0, 4, size=36)
    bags = _bags(rng, signal=value * 2)
    lab = {f"p{i:02d}": float(v) for i, v in enumerate(value)}
    reg = slide_mil_protocol(bags, lab, head="regression", n_folds=3, epochs=30, seed=0, batch_size=8)
    assert reg.pooled["abmil"]["pearson"] > 0.7, reg.pooled
    # survival: a higher planted value fails sooner; a third censored
    time = np.exp(-value) * 10 + rng.uniform(0, 0.5, size=36)
    event = (np.arange(36) % 3 != 0).astype(int)
    surv = slide_mil_protocol(bags, {f"p{i:02d}": float(t) for i, t in enumerate(time)}, head="survival",
                              events={f"p{i:02d}": int(e) for i, e in enumerate(event)}, n_folds=3, epochs=30, seed=0,
                              batch_size=12)
    assert surv.pooled["abmil"]["c_index"] > 0.7 and surv.pooled["abmil"]["n_events"] == 24
    assert {"abmil_c_index", "meanpool_c_index"} <= set(surv.folds[0])
    with pytest.raises(ValueError, match="events"):
        slide_mil_protocol(bags, lab, head="survival")
    with pytest.raises(ValueError, match="head"):
        slide_mil_protocol(bags, lab, head="ordinal")


def test_external_validation_trains_on_one_cohort_and_scores_the_other():
    """STAMP's deploy: trained on cohort A's patients only, scored unchanged on cohort B's (another site, its
    features shifted): the ranking survives the shift (AUROC), the threshold may not (F1), and both are reported;
    a test cohort with a class the training cohort lacks is refused."""
    import numpy as np
    import pytest

    from hestdata.bench.tasks.slide_mil import slide_mil_protocol

    rng = np.random.default_rng(0)
    bags, labels, split = {}, {}, {}
    for i in range(32):
        x = rng.normal(size=(30, 6)).astype(np.float32)
        if i % 2:
            x[:8, 0] += 2.5
        if i >= 20:
            x += 0.5  # the external site
        bags[f"p{i}"], labels[f"p{i}"], split[f"p{i}"] = x, ["neg", "pos"][i % 2], "train" if i < 20 else "test"
    res = slide_mil_protocol(bags, labels, epochs=20, seed=0, split_of=split, n_boot=200)
    assert res.external and sorted(res.oof) == sorted(p for p, s in split.items() if s == "test")
    st = res.pooled["abmil"]
    assert st["auroc"] > 0.9 and st["n_patients"] == 12 and np.isfinite(st["f1"]) and len(res.folds) == 1
    only_pos = {p: ("pos" if split[p] == "train" or labels[p] == "pos" else "other") for p in bags}
    with pytest.raises(ValueError, match="training cohort needs every class"):
        slide_mil_protocol(bags, only_pos, epochs=1, split_of=split)
