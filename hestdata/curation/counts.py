"""Counts that enter a store are structurally sound: a valid CSR matrix, finite, non-negative, unique ids.

A corrupt sparse matrix (an ``indptr`` that jumps past the data, a column index past the gene count) is not
caught by scipy's constructor; it converts, validates and then crashes the loader (or silently drops values).
These checks run where data enters (readers, the conversion pipeline) and in ``hestdata validate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.errors import InputError


def check_csr_arrays(data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int],
                     where: Any, what: str = "count matrix") -> None:
    """Full structural check of compressed-sparse arrays (rows = ``shape[0]``, columns = ``shape[1]``)."""
    n_rows, n_cols = shape
    problems = []
    if len(indptr) != n_rows + 1:
        problems.append(f"indptr has {len(indptr)} entries for {n_rows} rows")
    elif len(indptr):
        if indptr[0] != 0:
            problems.append(f"indptr starts at {indptr[0]}, not 0")
        steps = np.diff(indptr.astype(np.int64))
        if (steps < 0).any():
            r = int(np.flatnonzero(steps < 0)[0])
            problems.append(f"indptr decreases at row {r} ({indptr[r]} -> {indptr[r + 1]})")
        if indptr[-1] != len(indices) or len(indices) != len(data):
            problems.append(f"indptr ends at {indptr[-1]} but there are {len(indices)} indices and {len(data)} values")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
        bad = int(indices.max()) if indices.max() >= n_cols else int(indices.min())
        problems.append(f"index {bad} outside [0, {n_cols})")
    if problems:
        raise InputError(where, f"corrupt {what}: " + "; ".join(problems))


def check_counts(X: Any, where: Any) -> tuple[Any, bool]:
    """``X`` as a checked CSR matrix and whether it holds integer counts (stored as int32/int64 then).

    NaN/inf and negative values are errors; non-integer finite values are kept as float (the caller flags them).
    """
    import scipy.sparse as sp

    X = X.tocsr() if sp.issparse(X) else sp.csr_matrix(np.asarray(X))
    check_csr_arrays(X.data, X.indices, X.indptr, X.shape, where)
    data = X.data
    if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.complexfloating):
        bad = ~np.isfinite(data)
        if bad.any():
            r = int(np.searchsorted(X.indptr, np.flatnonzero(bad)[0], side="right") - 1)
            raise InputError(where, f"{int(bad.sum())} count(s) are NaN or infinite (first in row {r})",
                             "counts must be finite numbers")
    if data.size and (data < 0).any():
        n = int((data < 0).sum())
        raise InputError(where, f"{n} negative count(s) (min {data.min()}): counts must be >= 0",
                         "pass raw counts, not centred or log-ratio values")
    integer = bool(np.issubdtype(data.dtype, np.integer) or np.all(np.mod(data, 1) == 0))
    if integer:
        hi = int(data.max()) if data.size else 0
        X = X.astype(np.int32 if hi < 2**31 else np.int64)
    return X, integer


def check_unique_ids(ids: Any, where: Any, what: str = "spot/cell id") -> None:
    """Every id once: two rows with one id would put one spot's counts at another's place."""
    import pandas as pd

    idx = pd.Index(ids)
    if idx.has_duplicates:
        dups = idx[idx.duplicated()].unique()
        raise InputError(where, f"{len(dups)} duplicate {what}(s), e.g. {str(dups[0])!r}",
                         "every barcode / spot / cell must appear once")
