"""The figures of a pretraining run: training curves, a held-out retrieval matrix, recall@k with chance lines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.plot.style import pyplot, save

KS = (1, 5, 10)


def curves_figure(history: list[dict[str, Any]], title: str, out: Path) -> Path:
    """Training loss and learned temperature per epoch and, with a validation split, validation recall@5 both
    ways with its chance level (5 / n) dashed."""
    plt = pyplot()
    ep = [h["epoch"] + 1 for h in history]
    val = [k for k in ("val_img2gene_recall@5", "val_gene2img_recall@5") if history and k in history[-1]]
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(10 if val else 5.5, 4), squeeze=False)
    a = axes[0][0]
    a.plot(ep, [h["train_loss"] for h in history], marker="o", color="C0", label="training loss (epoch mean)")
    a.set(xlabel="epoch", ylabel="contrastive loss", title="training loss and temperature")
    t = a.twinx()
    t.plot(ep, [h["temperature"] for h in history], ls="--", color="C3", label="temperature (learned)")
    t.set_ylabel("temperature")
    lines = a.get_legend_handles_labels()[0] + t.get_legend_handles_labels()[0]
    a.legend(lines, [x.get_label() for x in lines], loc="upper right", fontsize=8)
    if val:
        b = axes[0][1]
        for k in val:
            b.plot(ep, [h[k] for h in history], marker="o", label=k.removeprefix("val_").replace("2", " → "))
        n_val = history[-1].get("val_n_test")
        if n_val:
            b.axhline(min(5, n_val) / n_val, ls="--", color="grey", label="chance (5 / n)")
        b.set(xlabel="epoch", ylabel="recall@5", ylim=(0, 1.02), title="validation recall@5 (whole validation set)")
        b.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, out)


def matrix_figure(z_img: np.ndarray, z_gene: np.ndarray, title: str, out: Path, n: int = 64) -> Path:
    """Cosine similarity of the first ``n`` held-out pairs (image rows, gene columns; matches on the diagonal)."""
    plt = pyplot()
    k = min(n, len(z_img))
    sim = np.asarray(z_img[:k], np.float64) @ np.asarray(z_gene[:k], np.float64).T
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    lim = float(np.abs(sim).max()) or 1.0
    im = ax.imshow(sim, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    ax.set(xlabel="gene embedding of pair j", ylabel="image embedding of pair i",
           title=f"{title}\n{k} held-out pairs (matches on the diagonal)")
    return save(fig, out)


def recall_figure(metrics: dict[str, float], title: str, out: Path) -> Path:
    """Recall@1/5/10 both ways over the whole held-out set and within batches, with each one's chance level."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    x = np.arange(len(KS))
    series = [(f"{p}{d}_recall@{{k}}", f"{lab} {d.replace('2', ' → ')}")
              for p, lab in (("", "whole set"), ("batch_", "in batches")) for d in ("img2gene", "gene2img")]
    series = [(key, lab) for key, lab in series if key.format(k=1) in metrics]
    w = 0.8 / max(1, len(series))
    for i, (key, lab) in enumerate(series):
        ax.bar(x + (i - (len(series) - 1) / 2) * w, [metrics[key.format(k=k)] for k in KS], w, label=lab)
    for j, k in enumerate(KS):
        for ck, style, lab in ((f"chance_recall@{k}", "--", "chance, whole set (k / n)"),
                               (f"chance_batch_recall@{k}", ":", "chance, in batches (k / batch)")):
            if ck in metrics:
                ax.hlines(metrics[ck], j - 0.45, j + 0.45, colors="k", linestyles=style, label=lab if j == 0 else None)
    ax.set_xticks(x, [f"recall@{k}" for k in KS])
    ax.set(ylabel="recall", ylim=(0, 1.02), title=f"{title}: held-out retrieval (n = {int(metrics.get('n_test', 0))})")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save(fig, out)


def pretrain_figures(res: Any, test: dict[str, np.ndarray], task: str) -> list[Path]:
    """``OUT/figures/{curves,retrieval_matrix,recall}.png`` of a finished run."""
    title = f"{task}: {res.config.image_encoder} + {res.config.gene_encoder} ({res.config.loss})"
    d = res.out / "figures"
    return [curves_figure(res.history, title, d / "curves.png"),
            matrix_figure(test["z_img"], test["z_gene"], title, d / "retrieval_matrix.png"),
            recall_figure(res.metrics, title, d / "recall.png")]
