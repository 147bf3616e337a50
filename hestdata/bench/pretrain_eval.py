"""How well two embeddings of the same spots retrieve each other, as HESCAPE reports it and as it should be.

- **Whole held-out set** (ours): recall@1/5/10 image→gene and gene→image over every held-out pair; chance is
  k/n. Tie-aware (:func:`hestdata.bench.metrics.recall_at_k`): a constant embedding scores chance, not 1.
- **Within random batches of 64** (HESCAPE's protocol): the held-out set shuffled into full batches of
  ``batch`` pairs, recall computed inside each batch and averaged over batches and ``repeats`` shuffles; chance
  is k/batch (R@5 = 5/64 ≈ 0.078).
- **Batch effect** (how much of the retrieval is slide identity): recall when the candidates are the match and
  the *other* slides' spots only (the same-slide distractors removed), recall within the query's slide only
  (chance k/n_slide), the fraction of top-1 hits that land on the query's own slide beside its base rate, and a
  slide-classification probe on each embedding (:func:`hestdata.bench.tasks.probes.batch_effect`: 5-fold logistic
  regression, balanced accuracy; silhouette by slide). Retrieval that mostly matches slides shows a high
  same-slide rate and within-slide recall near chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.bench.metrics import recall_at_k

KS = (1, 5, 10)


def _both(sim: np.ndarray, prefix: str, ks: tuple[int, ...]) -> dict[str, float]:
    out = {}
    for name, s in (("img2gene", sim), ("gene2img", sim.T)):
        for k, v in recall_at_k(s, ks).items():
            out[f"{prefix}{name}_{k}"] = v
    return out


def in_batch_recall(sim: np.ndarray, batch: int, repeats: int, seed: int, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HESCAPE's recall: mean over full random batches of ``batch`` held-out pairs (``repeats`` shuffles)."""
    n = len(sim)
    if n < batch:
        return {}
    rng = np.random.default_rng(seed)
    acc: dict[str, list[float]] = {}
    for _ in range(repeats):
        perm = rng.permutation(n)
        for s in range(0, n - batch + 1, batch):
            idx = perm[s:s + batch]
            for k, v in _both(sim[np.ix_(idx, idx)], "batch_", ks).items():
                acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items() if "median_rank" not in k}


def slide_retrieval(sim: np.ndarray, slides: np.ndarray, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Recall with the query's own slide's distractors removed (``otherslides_``) and with only them
    (``withinslide_``, its chance averaged over queries), and how often the top-1 hit is on the query's slide."""
    same = slides[:, None] == slides[None, :]
    eye = np.eye(len(sim), dtype=bool)
    out: dict[str, float] = {}
    out.update(_both(np.where(same & ~eye, -np.inf, sim), "otherslides_", ks))
    out.update(_both(np.where(~same, -np.inf, sim), "withinslide_", ks))
    n_same = same.sum(axis=1)
    for k in ks:
        out[f"chance_withinslide_recall@{k}"] = float(np.mean(np.minimum(k, n_same) / n_same))
    for name, s in (("img2gene", sim), ("gene2img", sim.T)):
        top = s.max(axis=1, keepdims=True)
        hits = s == top  # ties share the top-1 slot
        out[f"{name}_top1_same_slide"] = float(np.mean((hits & same).sum(1) / hits.sum(1)))
    out["chance_top1_same_slide"] = float(np.mean(n_same / len(sim)))
    return out


def retrieval_report(z_img: np.ndarray, z_gene: np.ndarray, slides: Any, *, batch: int = 64, repeats: int = 20,
                     seed: int = 0, ks: tuple[int, ...] = KS) -> dict[str, float]:
    """Every retrieval figure of a held-out set of unit-norm embedding pairs (rows match), with chance levels."""
    from hestdata.bench.tasks.probes import batch_effect

    a = np.asarray(z_img, dtype=np.float64)
    b = np.asarray(z_gene, dtype=np.float64)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"image and gene embeddings must be paired (same shape, >= 2 rows): {a.shape} vs {b.shape}")
    sl = np.asarray(slides).astype(str)
    sim = a @ b.T
    n = len(sim)
    out = {"n_test": float(n), "n_slides": float(len(np.unique(sl)))}
    out.update(_both(sim, "", ks))
    out.update({f"chance_recall@{k}": min(k, n) / n for k in ks})
    out.update(in_batch_recall(sim, batch, repeats, seed, ks))
    if n >= batch:
        out.update({f"chance_batch_recall@{k}": min(k, batch) / batch for k in ks})
    if len(np.unique(sl)) > 1:
        out.update(slide_retrieval(sim, sl, ks))
        for name, z in (("img", a), ("gene", b)):
            for k, v in batch_effect(z, sl, seed=seed).items():
                out[f"{name}_{k}"] = v
        out["chance_slide_probe"] = 1.0 / len(np.unique(sl))
    return out
