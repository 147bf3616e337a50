"""Slide-level molecular profiles: one row per slide, for models that learn at slide level (Threads, TITAN-style
slide encoders, MSI prediction).

* A **profile** is a gene → value vector for the whole slide: a bulk transcriptome given as a file, or the
  **pseudo-bulk** of an ST sample (the sum of the counts of its in-tissue spots; the spot set is recorded).
  Genes go through the same unification as spot tables (symbols, Ensembl ids), so a profile and a spot table of
  one sample share their vocabulary.
* **Alterations** are slide-level labels (MSI status, mutations, copy-number calls): one row, a column each,
  binary or categorical.

Profile files: CSV or TSV (``.csv``, ``.tsv``, ``.txt``, optionally ``.gz``), either *long* — two columns, a gene
and a value (a header row is optional) — or *wide* — one header row of genes and one row of values. Alteration
files: a header row and one data row (an ``id`` or ``sample`` column, if present, is dropped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError

ID_COLUMNS = ("id", "sample", "sample_id", "slide", "slide_id")


def _read_table(path: Path, header: bool) -> Any:
    import pandas as pd

    name = path.name.lower().removesuffix(".gz")
    sep = "," if name.endswith(".csv") else "\t"
    try:
        return pd.read_csv(path, sep=sep, header=0 if header else None, dtype=str, keep_default_na=False)
    except FileNotFoundError as exc:
        raise InputError(path, "file not found") from exc
    except Exception as exc:  # pandas' parser errors come in several types; name the file
        raise InputError(path, f"cannot read the table ({type(exc).__name__}: {exc})") from exc


def _numbers(values: list[str], path: Path, what: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in values], dtype=np.float64)
    except ValueError as exc:
        raise InputError(path, f"{what}: not a number ({exc})") from exc
    if not np.all(np.isfinite(out)):
        raise InputError(path, f"{what}: NaN or infinite values")
    if (out < 0).any():
        raise InputError(path, f"{what}: negative values (expected counts or non-negative expression)")
    return out


def read_profile(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Genes (as written in the file) and their values, from a long or wide profile file."""
    p = Path(path)
    raw = _read_table(p, header=False)
    if raw.shape[0] == 0:
        raise InputError(p, "empty profile")
    if raw.shape[1] == 2 and raw.shape[0] >= 2:  # long: gene, value (first row may be a header)
        first = raw.iloc[0, 1]
        try:
            float(first)
            body = raw
        except ValueError:
            body = raw.iloc[1:]
        genes, values = body.iloc[:, 0].astype(str).tolist(), body.iloc[:, 1].tolist()
    elif raw.shape[0] == 2:  # wide: a header of genes, one row of values
        cols = [c for c in range(raw.shape[1]) if str(raw.iloc[0, c]).lower() not in ID_COLUMNS]
        genes, values = [str(raw.iloc[0, c]) for c in cols], [raw.iloc[1, c] for c in cols]
    else:
        raise InputError(p, f"a profile is two columns (gene, value) or two rows (genes, values); got {raw.shape[0]} "
                            f"row(s) x {raw.shape[1]} column(s)")
    if len(set(genes)) != len(genes):
        dup = sorted({g for g in genes if genes.count(g) > 1})[:3]
        raise InputError(p, f"duplicate genes in the profile, e.g. {dup}")
    return genes, _numbers(values, p, "profile values")


def read_alterations(path: str | Path) -> dict[str, Any]:
    """Column → value of a one-row alterations table; 0/1/true/false columns become booleans, numbers floats,
    the rest strings (categories)."""
    p = Path(path)
    df = _read_table(p, header=True)
    if len(df) != 1:
        raise InputError(p, f"an alterations table has one row (this slide); got {len(df)}")
    out: dict[str, Any] = {}
    for c in df.columns:
        if str(c).lower() in ID_COLUMNS:
            continue
        v = str(df.iloc[0][c]).strip()
        if v.lower() in ("1", "true", "yes", "0", "false", "no"):
            out[str(c)] = v.lower() in ("1", "true", "yes")
        else:
            try:
                out[str(c)] = float(v)
            except ValueError:
                out[str(c)] = v
    if not out:
        raise InputError(p, "no alteration columns")
    return out


def pseudobulk(X: Any, in_tissue: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(genes,) sum of the counts of the in-tissue spots, and the boolean spot set summed. When the source
    marks no spot as in tissue, every spot is summed (recorded as such)."""
    import scipy.sparse as sp

    mask = np.asarray(in_tissue, dtype=bool)
    if not mask.any():
        mask = np.ones(len(mask), dtype=bool)
    Xc = X.tocsr() if sp.issparse(X) else np.asarray(X)
    total = np.asarray(Xc[np.flatnonzero(mask)].sum(axis=0)).ravel()
    return total.astype(np.float64), mask


def normalise_profiles(profiles: np.ndarray) -> np.ndarray:
    """log1p of counts per 10,000 per row (rows with no counts stay zero): how profiles are compared."""
    p = np.asarray(profiles, dtype=np.float64)
    tot = p.sum(axis=1, keepdims=True)
    return np.log1p(np.divide(p * 1e4, tot, out=np.zeros_like(p), where=tot > 0))
