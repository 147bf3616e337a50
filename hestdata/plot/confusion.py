"""The confusion matrix of a classification probe's out-of-fold predictions: rows the true class (normalised to 1,
so rare classes read as clearly as common ones), each cell annotated with its count, a colour bar, the balanced
accuracy and chance level in the title."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def confusion_counts(y: np.ndarray, pred: np.ndarray, classes: list[str]) -> np.ndarray:
    """(K, K) counts, rows true class, columns predicted class, in ``classes`` order."""
    pos = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for a, b in zip(y, pred, strict=True):
        m[pos[str(a)], pos[str(b)]] += 1
    return m


def confusion_figure(y: np.ndarray, pred: np.ndarray, classes: list[str], title: str,
                     out: str | os.PathLike[str]) -> Path:
    """Write the row-normalised confusion matrix of ``pred`` against ``y`` to ``out``."""
    from hestdata.plot.style import pyplot, save

    m = confusion_counts(y, pred, classes)
    rows = m.sum(axis=1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m, dtype=float), where=rows > 0)
    bal = float(np.mean([frac[i, i] for i in range(len(classes)) if rows[i, 0] > 0]))
    plt = pyplot()
    side = 1.0 + 0.75 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 1.6, side))
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{m[i, j]}", ha="center", va="center", fontsize="small",
                    color="white" if frac[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [f"{c} (n={int(rows[i, 0])})" for i, c in enumerate(classes)])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(im, ax=ax, label="fraction of the true class (row)")
    ax.set_title(f"{title}\nbalanced accuracy {bal:.3f} (chance {1 / len(classes):.3f}); cells: counts",
                 fontsize="medium")
    fig.tight_layout()
    return save(fig, out)
