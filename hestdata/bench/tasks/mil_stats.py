"""Statistics of pooled out-of-fold MIL predictions, as STAMP reports them: ROC and PR curves over every
held-out patient with 95 % bootstrap intervals (patients resampled), the C-index of survival risks, and the
figures and tables a reader checks them by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def concordance_index(time: np.ndarray, event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C: over comparable pairs (the one with the shorter time had the event), the fraction where the
    higher risk failed first; tied risks count one half. NaN without a comparable pair."""
    t, e, r = (np.asarray(a, dtype=np.float64) for a in (time, event, risk))
    num = den = 0.0
    for i in np.flatnonzero(e > 0):
        later = t > t[i]  # j outlived i, who had the event
        den += later.sum()
        num += (r[i] > r[later]).sum() + 0.5 * (r[i] == r[later]).sum()
    return float(num / den) if den else float("nan")


def _bootstrap(stat: Any, n: int, n_boot: int, seed: int) -> tuple[float, float]:
    """95 % percentile interval of ``stat(idx)`` over patient resamples (replicates where it is undefined are
    skipped, e.g. a resample holding one class)."""
    if n_boot <= 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        v = stat(rng.integers(0, n, size=n))
        if np.isfinite(v):
            vals.append(v)
    if len(vals) < n_boot // 2:
        return float("nan"), float("nan")
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def pooled_classification(y: np.ndarray, proba: np.ndarray, classes: list[str], *, n_boot: int = 1000,
                          seed: int = 0) -> dict[str, Any]:
    """AUROC and average precision of pooled out-of-fold probabilities (binary: of the second class; more
    classes: one-vs-rest, macro), macro F1 of the most probable class, each with its 95 % bootstrap interval, and
    the curves per class."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    from hestdata.bench.metrics import average_precision, binary_auroc

    y = np.asarray(y).astype(str)
    pos = classes[1:] if len(classes) == 2 else classes

    # the metrics of hestdata.bench.metrics (equal to sklearn's, tested): 4,000 bootstrap calls cost 0.2 s, not 20
    def auroc(idx: np.ndarray) -> float:
        yy, pp = y[idx], proba[idx]
        vals = [binary_auroc(yy == c, pp[:, classes.index(c)]) for c in pos]
        return float(np.mean(vals)) if all(np.isfinite(vals)) else float("nan")

    def ap(idx: np.ndarray) -> float:
        yy, pp = y[idx], proba[idx]
        vals = [average_precision(yy == c, pp[:, classes.index(c)]) for c in pos]
        return float(np.mean(vals)) if all(np.isfinite(vals)) else float("nan")

    from hestdata.bench.metrics import macro_f1

    def f1(idx: np.ndarray) -> float:
        yy = y[idx]
        return macro_f1(yy, np.asarray(classes, dtype=object)[proba[idx].argmax(1)].astype(str)) \
            if len(set(yy.tolist())) > 1 else float("nan")

    every = np.arange(len(y))
    curves = {}
    for c in pos:
        j = classes.index(c)
        fpr, tpr, _ = roc_curve(y == c, proba[:, j])
        prec, rec, _ = precision_recall_curve(y == c, proba[:, j])
        curves[c] = {"fpr": fpr, "tpr": tpr, "precision": prec, "recall": rec, "prevalence": float((y == c).mean())}
    return {"auroc": auroc(every), "auroc_ci": _bootstrap(auroc, len(y), n_boot, seed),
            "ap": ap(every), "ap_ci": _bootstrap(ap, len(y), n_boot, seed + 1), "f1": f1(every),
            "f1_ci": _bootstrap(f1, len(y), n_boot, seed + 2), "curves": curves,
            "n_patients": len(y)}


def pooled_regression(y: np.ndarray, pred: np.ndarray, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Pearson r (95 % bootstrap interval) and MSE of pooled out-of-fold predictions of a continuous target."""
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)

    def r(idx: np.ndarray) -> float:
        a, b = y[idx], pred[idx]
        return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")

    return {"pearson": r(np.arange(len(y))), "pearson_ci": _bootstrap(r, len(y), n_boot, seed),
            "mse": float(np.mean((y - pred) ** 2)), "n_patients": len(y)}


def pooled_survival(time: np.ndarray, event: np.ndarray, risk: np.ndarray, *, n_boot: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """C-index (95 % bootstrap interval) of pooled out-of-fold risks."""
    def c(idx: np.ndarray) -> float:
        return concordance_index(time[idx], event[idx], risk[idx])

    return {"c_index": c(np.arange(len(time))), "c_index_ci": _bootstrap(c, len(time), n_boot, seed),
            "n_patients": len(time), "n_events": int(np.sum(event))}


def save_curves(stats: dict[str, Any], out: Path, title: str) -> list[Path]:
    """ROC and PR curves of :func:`pooled_classification` as ``roc_pr.png`` (chance lines, AUROC/AP with their
    intervals in the legend) and one CSV per curve and class; written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hestdata.store.atomic import atomic_write_bytes

    out.mkdir(parents=True, exist_ok=True)
    written = []
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(10, 4.6))
    lo, hi = stats["auroc_ci"]
    alo, ahi = stats["ap_ci"]
    for c, cv in stats["curves"].items():
        ax_roc.plot(cv["fpr"], cv["tpr"], label=f"{c} (pooled AUROC {stats['auroc']:.3f} [{lo:.3f}, {hi:.3f}])"
                    if len(stats["curves"]) == 1 else f"{c}")
        ax_pr.plot(cv["recall"], cv["precision"], label=f"{c} (AP {stats['ap']:.3f} [{alo:.3f}, {ahi:.3f}])"
                   if len(stats["curves"]) == 1 else f"{c}")
        ax_pr.axhline(cv["prevalence"], ls="--", lw=0.8, color="grey")
        for kind, cols in (("roc", ("fpr", "tpr")), ("pr", ("recall", "precision"))):
            p = out / f"{kind}_{_safe(c)}.csv"
            rows = "\n".join(f"{a:.6g},{b:.6g}" for a, b in zip(cv[cols[0]], cv[cols[1]], strict=True))
            atomic_write_bytes(p, f"{cols[0]},{cols[1]}\n{rows}\n".encode())
            written.append(p)
    ax_roc.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey", label="chance")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02),
               title=f"ROC, pooled over folds (n = {stats['n_patients']} patients)")
    ax_pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
              title="precision-recall (dashed: prevalence = chance)")
    if len(stats["curves"]) > 1:
        ax_roc.set_title(f"ROC one-vs-rest; macro AUROC {stats['auroc']:.3f} [{lo:.3f}, {hi:.3f}]")
        ax_pr.set_title(f"PR one-vs-rest; macro AP {stats['ap']:.3f} [{alo:.3f}, {ahi:.3f}]")
    ax_roc.legend(loc="lower right", fontsize=8)
    ax_pr.legend(loc="lower left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    png = out / "roc_pr.png"
    atomic_write_bytes(png, buf.getvalue())
    return [png, *written]


def _safe(name: Any) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(name))[:64]
