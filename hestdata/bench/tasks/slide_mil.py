"""Slide-level MIL (STAMP / Threads / TITAN style): patient bags of patch embeddings, a gated attention-MIL
model (Ilse et al., 2018) and a mean-pooling + logistic-regression baseline, patient-level stratified k-fold.
Patients are never split across folds; several slides of one patient form one bag."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class MilResult:
    folds: list[dict[str, Any]] = field(default_factory=list)
    attention: dict[str, np.ndarray] = field(default_factory=dict)  # patient -> weights (test folds)

    def mean(self, key: str) -> float:
        return float(np.nanmean([f[key] for f in self.folds]))


def _gated_abmil(d_in: int, n_classes: int, hidden: int = 128, attn: int = 64) -> Any:
    import torch
    from torch import nn

    class GatedABMIL(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encode = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Dropout(0.1))
            self.a = nn.Sequential(nn.Linear(hidden, attn), nn.Tanh())
            self.b = nn.Sequential(nn.Linear(hidden, attn), nn.Sigmoid())
            self.c = nn.Linear(attn, 1)
            self.head = nn.Linear(hidden, n_classes)

        def forward(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.encode(bag)
            w = torch.softmax(self.c(self.a(h) * self.b(h)).squeeze(-1), dim=0)
            return self.head((w[:, None] * h).sum(0)), w

    return GatedABMIL()


def _auroc(y: np.ndarray, proba: np.ndarray, classes: list[Any]) -> float:
    from sklearn.metrics import roc_auc_score

    try:
        if len(classes) == 2:
            return float(roc_auc_score(y == classes[1], proba[:, 1]))
        return float(roc_auc_score(y, proba, multi_class="ovr", average="macro", labels=classes))
    except ValueError:
        return float("nan")


MIL_THREADS = 1  # one bag of a few thousand features per step: more threads only contend (414 s -> 37 s seen)


@contextlib.contextmanager
def bounded_threads(n: int = MIL_THREADS) -> Iterator[None]:
    """Run torch on ``n`` intra-op threads for the block (restored after): bag-by-bag training of a small
    network is dominated by thread start-up and oversubscription when torch uses every core."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def slide_mil_protocol(*args: Any, **kwargs: Any) -> Any:
    """Patient-level cross-validated gated ABMIL (and a mean-pool baseline); see :func:`_slide_mil_protocol`.
    Training runs on bounded threads (``MIL_THREADS``)."""
    with bounded_threads():
        return _slide_mil_protocol(*args, **kwargs)


def _slide_mil_protocol(bags: dict[str, np.ndarray], labels: dict[str, Any], *, n_folds: int = 5, seed: int = 1,
                       epochs: int = 40, lr: float = 5e-4, hidden: int = 128) -> MilResult:
    """Per fold: train gated ABMIL and the mean-pool baseline on the training patients, evaluate AUROC and
    balanced accuracy on the held-out patients."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold

    from hestdata.bench.metrics import balanced_accuracy

    patients = sorted(bags)
    y = np.array([str(labels[p]) for p in patients])
    classes = sorted(set(y))
    if len(classes) < 2:
        raise ValueError("slide_mil needs at least two label classes")
    k = int(min(n_folds, min(np.sum(y == c) for c in classes)))
    if k < 2:
        raise ValueError("slide_mil needs at least two patients per class")
    res = MilResult()
    cidx = {c: i for i, c in enumerate(classes)}
    for fold, (tr, te) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(patients, y)):
        train_p, test_p = [patients[i] for i in tr], [patients[i] for i in te]
        allx = np.concatenate([bags[p] for p in train_p])
        mu, sd = allx.mean(0), allx.std(0) + 1e-6
        torch.manual_seed(seed + fold)
        gen = np.random.default_rng(seed + fold)
        model = _gated_abmil(allx.shape[1], len(classes), hidden)
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        counts = np.bincount([cidx[str(labels[p])] for p in train_p], minlength=len(classes)).astype(np.float32)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes))
        tbags = {p: torch.tensor((bags[p] - mu) / sd, dtype=torch.float32) for p in patients}
        for _ in range(epochs):
            model.train()
            for p in gen.permutation(train_p):
                logits, _ = model(tbags[p])
                loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([cidx[str(labels[p])]]), weight=weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        proba, attn = [], {}
        with torch.no_grad():
            for p in test_p:
                logits, w = model(tbags[p])
                proba.append(torch.softmax(logits, 0).numpy())
                attn[p] = w.numpy()
        proba_a = np.stack(proba)
        yt = y[te]
        pred = np.array(classes)[proba_a.argmax(1)]
        mean_tr = np.stack([((bags[p] - mu) / sd).mean(0) for p in train_p])
        mean_te = np.stack([((bags[p] - mu) / sd).mean(0) for p in test_p])
        lr_model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(mean_tr, y[tr])
        proba_b = lr_model.predict_proba(mean_te)
        res.folds.append({
            "fold": fold, "test_patients": test_p,
            "abmil_auroc": _auroc(yt, proba_a, classes), "abmil_balanced_accuracy": balanced_accuracy(yt, pred),
            "meanpool_auroc": _auroc(yt, proba_b, list(lr_model.classes_)),
            "meanpool_balanced_accuracy": balanced_accuracy(yt, lr_model.predict(mean_te)),
        })
        res.attention.update(attn)
    return res
