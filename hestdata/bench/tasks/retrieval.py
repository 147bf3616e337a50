"""HESCAPE-style cross-modal retrieval between frozen image embeddings and expression.

Projection heads (linear or a small MLP) map image embeddings and expression features (log1p counts → PCA fit on
the training rows) into a shared 128-d space, trained with the symmetric InfoNCE (CLIP) loss. Recall@1/5/10 and
the median rank are computed over the **whole** held-out set (HESCAPE computes them within 64-sample batches,
where chance recall@5 is 5/64 ≈ 0.078; over n held-out items chance is k/n).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hestdata.bench.metrics import recall_at_k
from hestdata.bench.tasks.expression import _folds, targets


@dataclass
class RetrievalResult:
    folds: list[dict[str, Any]] = field(default_factory=list)

    def mean(self, key: str) -> float:
        return float(np.mean([f[key] for f in self.folds]))

    def std(self, key: str) -> float:
        return float(np.std([f[key] for f in self.folds]))


def _head(d_in: int, d_out: int, mlp: bool) -> Any:
    import torch.nn as nn

    if not mlp:
        return nn.Linear(d_in, d_out)
    return nn.Sequential(nn.Linear(d_in, 256), nn.GELU(), nn.Linear(256, d_out))


def train_heads(img_tr: np.ndarray, expr_tr: np.ndarray, *, dim: int = 128, mlp: bool = False, epochs: int = 60,
                batch_size: int = 64, temperature: float = 0.07, lr: float = 1e-3, seed: int = 1) -> tuple[Any, Any]:
    """Fit the two projection heads with symmetric InfoNCE; deterministic for ``seed``."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    a = torch.as_tensor(img_tr, dtype=torch.float32)
    b = torch.as_tensor(expr_tr, dtype=torch.float32)
    fi, fe = _head(a.shape[1], dim, mlp), _head(b.shape[1], dim, mlp)
    opt = torch.optim.AdamW(list(fi.parameters()) + list(fe.parameters()), lr=lr, weight_decay=1e-4)
    n = len(a)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            idx = perm[s:s + batch_size]
            if len(idx) < 2:
                continue
            za, zb = F.normalize(fi(a[idx]), dim=1), F.normalize(fe(b[idx]), dim=1)
            logits = za @ zb.T / temperature
            target = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
    return fi.eval(), fe.eval()


def retrieval_protocol(embeddings: np.ndarray, counts: Any, groups: Any, *, pca_dim: int = 256, dim: int = 128,
                       mlp: bool = False, epochs: int = 60, seed: int = 1, n_folds: int | None = None,
                       normalize: str = "log1p", library_size: np.ndarray | None = None) -> RetrievalResult:
    """Per held-out group: train heads on the other groups, retrieve over the whole held-out set both ways.

    ``normalize``: the expression side as ``log1p`` of raw counts (HESCAPE's) or ``cp10k_log1p`` (per 10,000 of
    each spot's library — ``library_size``, its total over the whole table, when given), which keeps sequencing
    depth from being what the two sides agree on."""
    import scipy.sparse as sp
    import torch
    import torch.nn.functional as F
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(embeddings, dtype=np.float32)
    c = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    y = targets(c, normalize, library_size).astype(np.float32)
    g = np.asarray(groups).astype(str)
    res = RetrievalResult()
    for tr, te, label in _folds(g, n_folds):
        sx = StandardScaler().fit(x[tr])
        pca = PCA(n_components=min(pca_dim, len(tr), y.shape[1]), random_state=seed).fit(y[tr])
        e_tr, e_te = pca.transform(y[tr]), pca.transform(y[te])
        se = StandardScaler().fit(e_tr)
        fi, fe = train_heads(sx.transform(x[tr]), se.transform(e_tr), dim=dim, mlp=mlp, epochs=epochs, seed=seed)
        with torch.inference_mode():
            za = F.normalize(fi(torch.as_tensor(sx.transform(x[te]), dtype=torch.float32)), dim=1)
            zb = F.normalize(fe(torch.as_tensor(se.transform(e_te), dtype=torch.float32)), dim=1)
            sim = (za @ zb.T).numpy()
        i2e = recall_at_k(sim)
        e2i = recall_at_k(sim.T)
        fold = {"test_group": label, "n_test": int(len(te))}
        fold.update({f"img2expr_{k}": v for k, v in i2e.items()})
        fold.update({f"expr2img_{k}": v for k, v in e2i.items()})
        res.folds.append(fold)
    return res
