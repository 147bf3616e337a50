"""Slide-level cross-modal alignment (Threads-style): a slide embedding aggregated from its patch features,
trained with a CLIP loss against the slide's molecular profile (``tables/slide_profile``), scored by
slide ↔ profile retrieval and alteration prediction over patient folds.

Per fold (whole patients held out, :func:`~hestdata.bench.tasks.slide_level.group_folds`):

1. the profile genes: the ``n_genes`` most variable across the **training** slides' CP10k-log1p profiles;
2. a slide tower (``aggregator``: ``mean`` of the patch features, ``abmil`` — gated attention pooling, Ilse et
   al. 2018 — then a linear projection, or ``transformer``: the two-block class-token transformer of
   :mod:`~hestdata.bench.tasks.slide_mil`, without positional encoding, its head as the projection) and a profile tower (a gene encoder of
   :mod:`hestdata.bench.gene_encoders` on the panel, CP10k-log1p, then a projection) trained with the symmetric
   InfoNCE loss (learnable temperature from 0.07) on batches of training slides;
3. the held-out slides embedded by both towers: recall@1/5/10 slide → profile and profile → slide among the
   fold's held-out slides (tie-aware; chance k/n per fold), pooled over folds weighted by their slides;
4. with ``labels`` (an alteration per slide): a balanced logistic regression on the training slides' aligned
   embeddings predicts the held-out slides; pooled out-of-fold AUROC and AP with 95 % bootstrap intervals
   (:func:`hestdata.bench.tasks.mil_stats.pooled_classification`), beside the same probe on the mean patch
   feature without alignment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hestdata.bench.metrics import recall_at_k

KS = (1, 5, 10)
AGGREGATORS = ("mean", "abmil", "transformer")


@dataclass
class SlidePretrainResult:
    metrics: dict[str, float] = field(default_factory=dict)
    folds: list[dict[str, Any]] = field(default_factory=list)
    oof_label_scores: dict[str, np.ndarray] = field(default_factory=dict)  # aligned / frozen: (slides,) or (slides, C)


def _slide_tower(d: int, dim: int, aggregator: str, hidden: int = 128) -> Any:
    import torch
    import torch.nn as nn

    if aggregator == "transformer":  # slide_mil's transformer (class token, 2 blocks), its head as the projection
        from hestdata.bench.tasks.slide_mil import _transformer_mil

        class TransformerTower(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.mil = _transformer_mil(d, dim, hidden)

            def forward(self, bag: Any) -> Any:
                return self.mil(bag)[0]

        return TransformerTower()

    class Tower(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.aggregator = aggregator
            if aggregator == "abmil":
                self.v, self.u, self.w = nn.Linear(d, hidden), nn.Linear(d, hidden), nn.Linear(hidden, 1)
            self.proj = nn.Linear(d, dim)

        def forward(self, bag: Any) -> Any:
            if self.aggregator == "mean":
                pooled = bag.mean(0)
            else:
                a = self.w(torch.tanh(self.v(bag)) * torch.sigmoid(self.u(bag))).squeeze(1)
                pooled = (torch.softmax(a, 0)[:, None] * bag).sum(0)
            return self.proj(pooled)

    return Tower()


def _train_fold(bags: list[Any], prof: Any, cfg: dict[str, Any], gene: Any) -> tuple[Any, Any, Any]:
    """Both towers and the temperature trained on the fold's training slides."""
    import math

    import torch
    import torch.nn.functional as F

    from hestdata.bench.contrastive import clip_loss

    torch.manual_seed(cfg["seed"])
    tower = _slide_tower(bags[0].shape[1], cfg["dim"], cfg["aggregator"])
    gproj = torch.nn.Linear(gene.out_dim, cfg["dim"])
    scale = torch.nn.Parameter(torch.tensor(math.log(1 / cfg["temperature"])))
    params = [*tower.parameters(), *gproj.parameters(), scale]
    if gene.trainable:
        params += list(gene.module.parameters())
    opt = torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=1e-4)
    gen = torch.Generator().manual_seed(cfg["seed"])
    n = len(bags)
    for _ in range(cfg["epochs"]):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, cfg["batch_size"]):
            idx = perm[s:s + cfg["batch_size"]]
            if len(idx) < 2:
                continue
            za = F.normalize(torch.stack([tower(bags[i]) for i in idx.tolist()]), dim=1)
            zb = F.normalize(gproj(gene(prof[idx]).float()), dim=1)
            loss = clip_loss(za, zb, scale)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return tower.eval(), gproj.eval(), gene


def _probe(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, classes: list[str], seed: int) -> np.ndarray:
    """Probabilities over ``classes`` (0 for a class the training slides lack) of a balanced logistic regression
    on standardised features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from hestdata.bench.tasks.patch_classification import _proba

    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000,
                                                             random_state=seed))
    return _proba(clf.fit(x_tr, y_tr), x_te, classes)


def slide_pretrain_protocol(bags: dict[str, np.ndarray], profiles: np.ndarray, slides: list[str], groups: Any,
                            genes: list[str], *, labels: dict[str, Any] | None = None, aggregator: str = "abmil",
                            gene_encoder: str = "mlp", n_genes: int = 50, dim: int = 128, temperature: float = 0.07,
                            epochs: int = 100, lr: float = 1e-3, batch_size: int = 64, n_folds: int = 5,
                            seed: int = 0, n_boot: int = 1000) -> SlidePretrainResult:
    """Out-of-fold slide ↔ profile alignment (module docstring); ``bags``: slide -> (patches, features),
    ``profiles``: (slides, genes) raw counts in ``slides`` order, ``groups``: each slide's patient."""
    import torch

    from hestdata.bench.gene_encoders import load_gene_encoder
    from hestdata.bench.tasks.slide_level import fold_genes, group_folds
    from hestdata.curation.profiles import normalise_profiles

    if aggregator not in AGGREGATORS:
        raise ValueError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")
    g = np.asarray(groups).astype(str)
    raw = np.asarray(profiles, dtype=np.float64)
    norm = normalise_profiles(raw)
    cfg = {"dim": dim, "aggregator": aggregator, "temperature": temperature, "epochs": epochs, "lr": lr,
           "batch_size": batch_size, "seed": seed}
    tb = [torch.as_tensor(np.asarray(bags[s], np.float32)) for s in slides]
    res = SlidePretrainResult()
    z_a, z_f = np.zeros((len(slides), dim)), np.stack([b.numpy().mean(0) for b in tb])
    acc: dict[str, list[tuple[float, int]]] = {}
    y = np.array([None if labels.get(s) is None else str(labels[s]) for s in slides], dtype=object) if labels else None
    classes = sorted({v for v in y if v is not None}) if y is not None else []
    scores: dict[str, list[Any]] = {"aligned": [None] * len(slides), "frozen": [None] * len(slides)}
    for f, te in enumerate(group_folds(g, n_folds)):
        tr = np.setdiff1d(np.arange(len(slides)), te)
        cols = fold_genes(norm[tr], n_genes, "variance", genes)
        panel = [genes[i] for i in cols]
        gene = load_gene_encoder(gene_encoder, panel, normalize="cp10k_log1p", seed=seed + f) \
            if gene_encoder in ("mlp", "pca") else load_gene_encoder(gene_encoder, panel, normalize="cp10k_log1p")
        gene.fit(raw[tr][:, cols])
        fit = torch.cat([tb[i] for i in tr])  # features standardised with the training slides' patches only
        mu, sd = fit.mean(0), fit.std(0, unbiased=False) + 1e-6
        std = [(b - mu) / sd for b in tb]
        prof = torch.as_tensor(raw[:, cols], dtype=torch.float32)
        tower, gproj, gene = _train_fold([std[i] for i in tr], prof[tr], {**cfg, "seed": seed + f}, gene)
        with torch.no_grad():
            za = torch.nn.functional.normalize(torch.stack([tower(std[i]) for i in range(len(slides))]), dim=1)
            zb = torch.nn.functional.normalize(gproj(gene(prof).float()), dim=1)
        za, zb = za.numpy().astype(np.float64), zb.numpy().astype(np.float64)
        z_a[te] = za[te]
        sim = za[te] @ zb[te].T
        fold = {"fold": f, "test_slides": [slides[i] for i in te], "n_test": len(te)}
        for name, s in (("slide2profile", sim), ("profile2slide", sim.T)):
            for k, v in recall_at_k(s, KS).items():
                fold[f"{name}_{k}"] = v
                acc.setdefault(f"{name}_{k}", []).append((v, len(te)))
        for k in KS:
            acc.setdefault(f"chance_recall@{k}", []).append((min(k, len(te)) / len(te), len(te)))
        res.folds.append(fold)
        if y is not None:
            known = np.array([v is not None for v in y])
            trk = tr[known[tr]]
            if len(set(y[trk].tolist())) >= 2:
                for name, z in (("aligned", za), ("frozen", z_f)):
                    p = _probe(z[trk], y[trk].astype(str), z[te], classes, seed)
                    for i, row in zip(te, p, strict=True):
                        scores[name][i] = row
    res.metrics = {k: float(sum(v * n for v, n in vals) / sum(n for _, n in vals)) for k, vals in acc.items()}
    res.metrics["n_slides"] = float(len(slides))
    if y is not None:
        _label_metrics(res, y, scores, n_boot, seed)
    return res


def _label_metrics(res: SlidePretrainResult, y: np.ndarray, scores: dict[str, list[Any]], n_boot: int,
                   seed: int, names: tuple[str, ...] = ("aligned", "frozen")) -> None:
    """Pooled out-of-fold AUROC / AP (95 % bootstrap intervals) of the alteration probe on each embedding."""
    from hestdata.bench.tasks.mil_stats import pooled_classification

    keep = [i for i in range(len(y)) if y[i] is not None and all(scores[n][i] is not None for n in names)]
    if len(keep) < 4 or len(set(y[keep].astype(str).tolist())) < 2:
        return
    classes = sorted(set(y[keep].astype(str).tolist()))
    for name in names:
        proba = np.stack([scores[name][i] for i in keep])
        st = pooled_classification(y[keep].astype(str), proba, classes, n_boot=n_boot, seed=seed)
        res.metrics[f"alteration_{name}_auroc"] = float(st["auroc"])
        res.metrics[f"alteration_{name}_ap"] = float(st["ap"])
        res.metrics[f"alteration_{name}_auroc_ci_low"], res.metrics[f"alteration_{name}_auroc_ci_high"] = \
            map(float, st["auroc_ci"])
        res.oof_label_scores[name] = proba


def alteration_probe(embeddings: dict[str, dict[str, np.ndarray]], labels: dict[str, Any], groups: dict[str, str], *,
                     n_folds: int = 5, n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """HESCAPE's mutation / alteration task on slide embeddings: for each named embedding (slide -> vector), a
    balanced logistic regression over patient folds; pooled out-of-fold AUROC and AP with 95 % intervals
    (``alteration_<name>_auroc`` …). Slides without a label are left out; fewer than two classes: nothing."""
    from hestdata.bench.tasks.slide_level import group_folds

    slides = sorted(s for s in labels if labels[s] is not None and all(s in e for e in embeddings.values()))
    if len(slides) < 4 or len({str(labels[s]) for s in slides}) < 2 or len({groups[s] for s in slides}) < 2:
        return {}
    y = np.array([str(labels[s]) for s in slides], dtype=object)
    classes = sorted(set(y.tolist()))
    g = np.array([groups[s] for s in slides])
    scores: dict[str, list[Any]] = {name: [None] * len(slides) for name in embeddings}
    for te in group_folds(g, n_folds):
        tr = np.setdiff1d(np.arange(len(slides)), te)
        if len(set(y[tr].tolist())) < 2:
            continue
        for name, emb in embeddings.items():
            z = np.stack([emb[s] for s in slides])
            for i, row in zip(te, _probe(z[tr], y[tr].astype(str), z[te], classes, seed), strict=True):
                scores[name][i] = row
    res = SlidePretrainResult()
    _label_metrics(res, y, scores, n_boot, seed, names=tuple(embeddings))
    return res.metrics
