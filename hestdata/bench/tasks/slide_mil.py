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


def _transformer_mil(d_in: int, n_classes: int, hidden: int = 128, heads: int = 4, layers: int = 2,
                     dropout: float = 0.1) -> Any:
    """A small pre-norm transformer over patch features with a class token (the transformer MSI pipeline of
    Wagner et al., 2023, scaled to benchmark size). With coordinates, a 2D sinusoidal encoding of each patch's
    position (µm, relative to the bag's centre, in units of 256 µm) is added to its token. ``forward`` returns
    the logits and the class token's attention over the patches in the last layer (mean over heads), which the
    heatmaps show as they show ABMIL's weights."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(hidden), nn.LayerNorm(hidden)
            self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout),
                                     nn.Linear(2 * hidden, hidden))

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.n1(x)
            a, w = self.attn(h, h, h, need_weights=True, average_attn_weights=True)
            x = x + a
            return x + self.mlp(self.n2(x)), w

    class TransformerMIL(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout))
            self.cls = nn.Parameter(torch.zeros(1, 1, hidden))
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.norm = nn.LayerNorm(hidden)
            self.head = nn.Linear(hidden, n_classes)

        def position(self, coords: torch.Tensor) -> torch.Tensor:
            c = (coords - coords.mean(0)) / 256.0
            k = hidden // 4
            freq = torch.exp(torch.arange(k, dtype=torch.float32) * (-np.log(100.0) / max(k - 1, 1)))
            ang = torch.cat([c[:, :1] * freq, c[:, 1:2] * freq], dim=1)
            return torch.cat([ang.sin(), ang.cos()], dim=1)[:, :hidden]

        def forward(self, bag: torch.Tensor, coords: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor]:
            h = self.embed(bag)
            if coords is not None:
                h = h + self.position(coords)
            x = torch.cat([self.cls[0], h], dim=0)[None]
            w = torch.zeros(len(bag))
            for blk in self.blocks:
                x, att = blk(x)
                w = att[0, 0, 1:]
            return self.head(self.norm(x[0, 0])), w / w.sum().clamp_min(1e-12)  # over patches (not the token)

    return TransformerMIL()


AGGREGATORS = ("abmil", "transformer")


def _forward(model: Any, aggregator: str, bag: Any, pos: Any) -> Any:
    """(logits, weights over patches) of one bag; the transformer also takes the patch positions."""
    return model(bag, pos) if aggregator == "transformer" else model(bag)


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
                       epochs: int = 40, lr: float = 5e-4, hidden: int = 128, aggregator: str = "abmil",
                       coords: dict[str, np.ndarray] | None = None) -> MilResult:
    """Per fold: train the aggregator (gated ABMIL or a transformer, ``aggregator``) and the mean-pool baseline on
    the training patients, evaluate AUROC and balanced accuracy on the held-out patients. Fold metrics are
    named ``<aggregator>_auroc`` / ``<aggregator>_balanced_accuracy``; ``coords`` (patient → (n, 2) µm, aligned
    with the bag) give the transformer its positional encoding."""
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
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown MIL aggregator {aggregator!r}; choose one of {AGGREGATORS}")
    res = MilResult()
    cidx = {c: i for i, c in enumerate(classes)}
    for fold, (tr, te) in enumerate(StratifiedKFold(k, shuffle=True, random_state=seed).split(patients, y)):
        train_p, test_p = [patients[i] for i in tr], [patients[i] for i in te]
        allx = np.concatenate([bags[p] for p in train_p])
        mu, sd = allx.mean(0), allx.std(0) + 1e-6
        torch.manual_seed(seed + fold)
        gen = np.random.default_rng(seed + fold)
        model = (_transformer_mil(allx.shape[1], len(classes), hidden) if aggregator == "transformer"
                 else _gated_abmil(allx.shape[1], len(classes), hidden))
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        counts = np.bincount([cidx[str(labels[p])] for p in train_p], minlength=len(classes)).astype(np.float32)
        weight = torch.tensor(counts.sum() / np.maximum(counts, 1) / len(classes))
        tbags = {p: torch.tensor((bags[p] - mu) / sd, dtype=torch.float32) for p in patients}
        tpos = {p: torch.tensor(coords[p], dtype=torch.float32) for p in patients} if coords else {}

        for _ in range(epochs):
            model.train()
            for p in gen.permutation(train_p):
                logits, _ = _forward(model, aggregator, tbags[p], tpos.get(p))
                loss = torch.nn.functional.cross_entropy(logits[None], torch.tensor([cidx[str(labels[p])]]), weight=weight)
                opt.zero_grad()
                loss.backward()
                opt.step()
        model.eval()
        proba, attn = [], {}
        with torch.no_grad():
            for p in test_p:
                logits, w = _forward(model, aggregator, tbags[p], tpos.get(p))
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
            f"{aggregator}_auroc": _auroc(yt, proba_a, classes),
            f"{aggregator}_balanced_accuracy": balanced_accuracy(yt, pred),
            "meanpool_auroc": _auroc(yt, proba_b, list(lr_model.classes_)),
            "meanpool_balanced_accuracy": balanced_accuracy(yt, lr_model.predict(mean_te)),
        })
        res.attention.update(attn)
    return res
