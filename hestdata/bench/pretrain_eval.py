"""How well two embeddings of the same spots retrieve each other, as HESCAPE reports it and as it should be.

- **Whole held-out set** (ours): recall@1/5/10 image→gene and gene→image over every held-out pair; chance is
  k/n. Tie-aware, as :func:`hestdata.bench.metrics.recall_at_k` (a constant embedding scores chance, not 1), and
  computed in row blocks, so a held-out set of 100,000 cells never holds an n × n matrix.
- **Within random batches of 64** (HESCAPE's protocol): the held-out set shuffled into full batches of
  ``batch`` pairs, recall computed inside each batch and averaged over batches and ``repeats`` shuffles; chance
  is k/batch (R@5 = 5/64 ≈ 0.078).
- **Batch effect** (how much of the retrieval is slide identity): recall when the candidates are the match and
  the *other* slides' spots only (the same-slide distractors removed), recall within the query's slide only
  (chance k/n_slide), the fraction of top-1 hits that land on the query's own slide beside its base rate, and a
  slide-classification probe on each embedding (:func:`hestdata.bench.tasks.probes.batch_effect`: 5-fold logistic
  regression, balanced accuracy; silhouette by slide; on at most ``probe_rows`` rows drawn per slide).
  Retrieval that mostly matches slides shows a high same-slide rate and within-slide recall near chance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.bench.metrics import recall_at_k, recall_from_counts

KS = (1, 5, 10)
BLOCK_ROWS = 1024


def _recall(higher: np.ndarray, tied: np.ndarray, n: int, ks: tuple[int, ...], prefix: str) -> dict[str, float]:
    return {f"{prefix}{k}": v for k, v in recall_from_counts(higher, tied, n, ks).items()}


def _direction(q: np.ndarray, c: np.ndarray, slides: np.ndarray | None) -> dict[str, np.ndarray]:
    """Per query (row of ``q``; its match is the same row of ``c``): how many candidates score above and equal to
    the match — over all candidates, over other slides' only, over the query's slide's only — and the share of
    its top-1 hits on its own slide. Row blocks of :data:`BLOCK_ROWS`."""
    n = len(q)
    keys = ("higher", "tied") + (("higher_other", "tied_other", "higher_same", "tied_same", "top1_same")
                                 if slides is not None else ())
    out = {k: np.zeros(n) for k in keys}
    for s in range(0, n, BLOCK_ROWS):
        rows = np.arange(s, min(n, s + BLOCK_ROWS))
        sim = q[rows] @ c.T
        sim = np.where(np.isnan(sim), -np.inf, sim)
        correct = sim[np.arange(len(rows)), rows][:, None]
        above, equal = sim > correct, sim == correct
        equal[np.arange(len(rows)), rows] = False  # the match itself
        out["higher"][rows], out["tied"][rows] = above.sum(1), equal.sum(1)
        if slides is None:
            continue
        same = slides[rows][:, None] == slides[None, :]
        out["higher_other"][rows], out["tied_other"][rows] = (above & ~same).sum(1), (equal & ~same).sum(1)
        out["higher_same"][rows], out["tied_same"][rows] = (above & same).sum(1), (equal & same).sum(1)
        hits = sim == sim.max(axis=1, keepdims=True)  # ties share the top-1 slot
        out["top1_same"][rows] = (hits & same).sum(1) / hits.sum(1)
    return out


def in_batch_recall(a: np.ndarray, b: np.ndarray, batch: int, repeats: int, seed: int,
                    ks: tuple[int, ...] = KS) -> dict[str, float]:
    """HESCAPE's recall: mean over full random batches of ``batch`` held-out pairs (``repeats`` shuffles)."""
    n = len(a)
    if n < batch:
        return {}
    rng = np.random.default_rng(seed)
    acc: dict[str, list[float]] = {}
    for _ in range(repeats):
        perm = rng.permutation(n)
        for s in range(0, n - batch + 1, batch):
            idx = perm[s:s + batch]
            sim = a[idx] @ b[idx].T
            for name, m in (("img2gene", sim), ("gene2img", sim.T)):
                for k, v in recall_at_k(m, ks).items():
                    if k != "median_rank":
                        acc.setdefault(f"batch_{name}_{k}", []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def _probe_rows(slides: np.ndarray, max_rows: int, seed: int) -> np.ndarray:
    """At most ``max_rows`` row indices, the same share from every slide (all rows when there are fewer)."""
    if len(slides) <= max_rows:
        return np.arange(len(slides))
    rng = np.random.default_rng(seed)
    uniq = np.unique(slides)
    per = max(2, max_rows // len(uniq))
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(slides == s))[:per] for s in uniq]))


def retrieval_report(z_img: np.ndarray, z_gene: np.ndarray, slides: Any, *, batch: int = 64, repeats: int = 20,
                     seed: int = 0, ks: tuple[int, ...] = KS, probe_rows: int = 5000) -> dict[str, float]:
    """Every retrieval figure of a held-out set of unit-norm embedding pairs (rows match), with chance levels."""
    from hestdata.bench.tasks.probes import batch_effect

    a = np.asarray(z_img, dtype=np.float64)
    b = np.asarray(z_gene, dtype=np.float64)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"image and gene embeddings must be paired (same shape, >= 2 rows): {a.shape} vs {b.shape}")
    sl = np.asarray(slides).astype(str)
    n, many = len(a), len(np.unique(sl)) > 1
    out = {"n_test": float(n), "n_slides": float(len(np.unique(sl)))}
    for name, q, c in (("img2gene", a, b), ("gene2img", b, a)):
        d = _direction(q, c, sl if many else None)
        out.update(_recall(d["higher"], d["tied"], n, ks, f"{name}_"))
        if many:
            out.update(_recall(d["higher_other"], d["tied_other"], n, ks, f"otherslides_{name}_"))
            out.update(_recall(d["higher_same"], d["tied_same"], n, ks, f"withinslide_{name}_"))
            out[f"{name}_top1_same_slide"] = float(d["top1_same"].mean())
    out.update({f"chance_recall@{k}": min(k, n) / n for k in ks})
    out.update(in_batch_recall(a, b, batch, repeats, seed, ks))
    if n >= batch:
        out.update({f"chance_batch_recall@{k}": min(k, batch) / batch for k in ks})
    if many:
        n_same = (sl[:, None] == np.unique(sl)[None, :]).sum(0)[np.searchsorted(np.unique(sl), sl)]
        for k in ks:
            out[f"chance_withinslide_recall@{k}"] = float(np.mean(np.minimum(k, n_same) / n_same))
        out["chance_top1_same_slide"] = float(np.mean(n_same / n))
        rows = _probe_rows(sl, probe_rows, seed)
        for name, z in (("img", a), ("gene", b)):
            for k, v in batch_effect(z[rows], sl[rows], seed=seed).items():
                out[f"{name}_{k}"] = v
        out["chance_slide_probe"] = 1.0 / len(np.unique(sl))
    return out
