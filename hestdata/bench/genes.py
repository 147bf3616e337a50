"""Which genes an expression benchmark scores: a named, documented choice.

* ``"hest"`` — HEST-Benchmark's criterion (``hest.bench`` ``get_k_genes(criteria="var")``): genes detected
  (count > 0) in at least ``ceil(10 %)`` of the spots of **every** slide, names containing ``BLANK`` or
  ``Control`` dropped, then scanpy's ``highly_variable_genes(n_top_genes=k)`` (the ``seurat`` flavour) on
  ``log1p`` of the stacked raw counts; the first ``k`` highly variable genes in name order, as HEST takes them.
  Re-implemented here with numpy and pandas (scanpy is not a dependency) and checked against scanpy itself
  (``tests/data/hvg_seurat_reference.json``). Unlike HEST's shipped lists it is computed on each fold's
  **training** slides only.
* ``"variance"`` — the ``k`` genes with the highest variance of the targets on the training rows (the earlier
  default; on her2st it tracks sequencing depth, see benchmarks/RESULTS.md).
* a list of names, or a path to HEST's per-dataset ``var_50genes.json`` (``{"genes": [...]}``): fixed genes,
  the same in every fold.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

GENE_CHOICES = ("hest", "variance")
HEST_MIN_CELLS_PCT = 0.10
HEST_EXCLUDED = ("BLANK", "Control")


def top_variable_genes(values_train: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` columns with the highest variance on the training rows (ties: lower index first);
    columns constant on the training rows are never chosen."""
    var = values_train.var(axis=0)
    order = np.lexsort((np.arange(len(var)), -var))
    order = order[var[order] > 0]
    return np.sort(order[:k])


def seurat_dispersions(log_counts: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """scanpy's ``seurat``-flavour normalised dispersion per column of ``log1p`` data (NaN where undefined).

    Means and variances (ddof=1) of ``expm1`` of the data; dispersion = var / mean (mean 0 -> 1e-12), its log
    (0 -> NaN); genes binned by ``log1p(mean)`` into ``n_bins`` equal-width bins (``pandas.cut``); within a bin
    the dispersion is z-scored; a gene alone in its bin gets 1."""
    import pandas as pd

    x = np.expm1(np.asarray(log_counts, dtype=np.float64))
    n = x.shape[0]
    mean = x.mean(axis=0)
    var = (np.mean(x * x, axis=0) - mean**2) * (n / (n - 1)) if n > 1 else np.zeros_like(mean)
    mean[mean == 0] = 1e-12
    disp = var / mean
    disp[disp == 0] = np.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.log(disp)
    df = pd.DataFrame({"means": np.log1p(mean), "dispersions": disp})
    df["mean_bin"] = pd.cut(df["means"], bins=n_bins)
    stats = df.groupby("mean_bin", observed=False)["dispersions"].agg(["mean", "std"])
    one = stats["std"].isnull()
    stats.loc[one, "std"] = stats.loc[one, "mean"]
    stats.loc[one, "mean"] = 0.0
    avg = stats["mean"].reindex(df["mean_bin"]).to_numpy(dtype=np.float64)
    sd = stats["std"].reindex(df["mean_bin"]).to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (df["dispersions"].to_numpy() - avg) / sd


def seurat_hvg(log_counts: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of scanpy's ``highly_variable_genes(n_top_genes=k, flavor="seurat")``: every gene whose
    normalised dispersion is at least the ``k``-th highest (ties can give more than ``k``)."""
    d = seurat_dispersions(log_counts)
    finite = d[~np.isnan(d)]
    if not len(finite):
        return np.zeros(len(d), dtype=bool)
    cut = np.sort(finite)[::-1][min(k, len(finite)) - 1]
    return np.nan_to_num(d, nan=-np.inf) >= cut


def hest_genes(counts_train: np.ndarray, slides_train: np.ndarray, names: list[Any], k: int,
               min_cells_pct: float = HEST_MIN_CELLS_PCT) -> np.ndarray:
    """Column indices (ascending) of HEST's ``k`` genes on these training rows (raw counts, one slide id per row)."""
    names_s = [str(n) for n in names]
    keep = np.ones(len(names_s), dtype=bool)
    for s in np.unique(slides_train):
        rows = counts_train[slides_train == s]
        keep &= (rows > 0).sum(axis=0) >= math.ceil(min_cells_pct * len(rows))
    keep &= np.array([not any(x in n for x in HEST_EXCLUDED) for n in names_s], dtype=bool)
    cand = np.flatnonzero(keep)
    if not len(cand):
        raise ValueError(f"no gene is detected in >= {min_cells_pct:.0%} of the spots of every training slide")
    cand = cand[np.argsort([names_s[i] for i in cand], kind="stable")]  # HEST intersects names: sorted order
    log = np.log1p(counts_train[:, cand].astype(np.float32))
    hv = cand[seurat_hvg(log, k)]
    by_name = hv[np.argsort([names_s[i] for i in hv], kind="stable")][:k]  # HEST: var_names[hv][:k]
    return np.sort(by_name)


def fixed_gene_list(fixed: Any) -> list[str]:
    """A gene list: a list, or a HEST-style ``var_50genes.json`` (``{"genes": [...]}``) path."""
    if isinstance(fixed, str | Path):
        p = Path(fixed)
        try:
            doc = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            from hestdata.errors import InputError

            raise InputError(p, f"cannot read the gene list: {exc}") from exc
        return [str(g) for g in (doc["genes"] if isinstance(doc, dict) else doc)]
    return [str(g) for g in fixed]


def is_fixed(genes: Any) -> bool:
    """Whether a ``genes`` choice is a fixed list (or a file naming one) rather than a criterion."""
    return not (isinstance(genes, str) and genes in GENE_CHOICES)


def choose_genes(choice: Any, k: int, values_train: np.ndarray, counts_train: np.ndarray,
                 slides_train: np.ndarray | None, names: list[Any]) -> np.ndarray:
    """Column indices of the genes one fold scores, from its training rows only.

    ``values_train`` are the targets (for ``"variance"``), ``counts_train`` the raw counts and ``slides_train``
    the slide of each row (for ``"hest"``; without slides the rows count as one slide)."""
    if choice == "variance":
        return top_variable_genes(values_train, k)
    if choice == "hest":
        slides = slides_train if slides_train is not None else np.zeros(len(counts_train), dtype=int)
        return hest_genes(counts_train, np.asarray(slides), names, k)
    return fixed_positions(choice, names, "every sample's table")


def fixed_positions(choice: Any, names: list[Any], where: str) -> np.ndarray:
    """Column indices, in the list's order, of a fixed gene list (or ``var_50genes.json``) among ``names``; a gene
    that is not there is an error naming ``where`` it was looked for."""
    fixed = fixed_gene_list(choice)
    pos = {str(n): i for i, n in enumerate(names)}
    missing = [g for g in fixed if g not in pos]
    if missing:
        raise ValueError(f"{len(missing)} fixed gene(s) absent from {where}, e.g. {missing[:5]}")
    return np.array([pos[g] for g in fixed], dtype=np.int64)


def gene_option(options: dict[str, Any]) -> dict[str, Any]:
    """Task options with the gene choice under one name: a task file says ``genes: hest`` (or ``variance``, a
    list, a ``var_50genes.json`` path); the protocols call it ``gene_selection``."""
    o = dict(options)
    if "genes" in o:
        if "gene_selection" in o:
            from hestdata.errors import InputError

            raise InputError(None, "a task's options give both 'genes' and 'gene_selection'; keep one")
        o["gene_selection"] = o.pop("genes")
    return o
