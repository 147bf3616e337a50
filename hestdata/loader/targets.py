"""Expression targets: which genes, and their values for a set of table rows.

Targets are ``log1p`` of raw counts (HEST-Benchmark's) or ``raw``; a gene a sample lacks is zero and masked.
Small per-sample target matrices are densified once (fast row gathers); larger ones stay sparse.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

TARGETS = ("log1p", "raw")
DENSE_TARGETS_BYTES = 64 * 1024 * 1024  # per sample; larger target matrices stay sparse


def gene_list(genes: Sequence[str] | str | None, var_names: list[list[str]]) -> list[str]:
    """The requested genes: a list, or the ``"union"`` (default) / ``"intersection"`` of the samples' genes."""
    if genes is None:
        genes = "union"
    if isinstance(genes, str):
        if genes == "union":
            seen: dict[str, None] = {}
            for v in var_names:
                seen.update(dict.fromkeys(v))
            return list(seen)
        if genes == "intersection":
            common = set(var_names[0]).intersection(*map(set, var_names[1:]))
            return [g for g in var_names[0] if g in common]
        raise ValueError(f"genes must be a list, 'union' or 'intersection', got {genes!r}")
    out = list(genes)
    if len(set(out)) != len(out):
        raise ValueError("the requested gene list has duplicates")
    return out


def gene_positions(genes: list[str], var_names: list[str]) -> np.ndarray:
    """For each requested gene, its column in a sample's table (-1 if absent)."""
    gindex = {g: j for j, g in enumerate(genes)}
    pos = np.full(len(genes), -1, dtype=np.int64)
    for c, name in enumerate(var_names):
        j = gindex.get(name)
        if j is not None:
            pos[j] = c
    return pos


class Targets:
    """A sample's count matrix, loaded lazily in the process that needs it (never pickled to workers)."""

    def __init__(self, sample: Any, table: str, gene_pos: np.ndarray) -> None:
        self.sample, self.table, self.gene_pos = sample, table, gene_pos  # sample: a store.root.StoredSample
        self._X: Any = None
        self._pid = -1
        self._dense: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_X": None, "_pid": -1, "_dense": None}

    def X(self) -> Any:
        """The counts as CSR (read once per process)."""
        if self._X is None or self._pid != os.getpid():
            from hestdata.store.elements import read_matrix

            self._X = read_matrix(self._node())
            self._pid = os.getpid()
        return self._X

    def _node(self) -> Any:
        """The table's ``X`` element (a zarr group or array; its metadata only)."""
        return self.sample.group(self.table, "X")

    def n_obs(self) -> int:
        """Rows of the table (from its metadata: nothing is read)."""
        if self._X is None:
            node = self._node()
            shape = node.attrs.get("shape") or getattr(node, "shape", None)  # sparse groups / dense arrays
            if shape:
                return int(shape[0])
        return int(self.X().shape[0])

    def dense(self, targets: str) -> np.ndarray | None:
        """(n_obs, n_requested_genes) float32 targets, precomputed once when small (<= DENSE_TARGETS_BYTES)."""
        if self._dense is None:
            n_obs = self.n_obs()
            present = self.gene_pos >= 0
            if n_obs * len(self.gene_pos) * 4 > DENSE_TARGETS_BYTES:
                self._dense = False
            else:
                d = np.zeros((n_obs, len(self.gene_pos)), dtype=np.float32)
                if present.any():
                    from hestdata.store.elements import read_columns

                    d[:, present] = read_columns(self._node(), self.gene_pos[present])
                if targets == "log1p":
                    np.log1p(d, out=d)
                self._dense = d
        return None if self._dense is False else self._dense

    def rows(self, rows: np.ndarray, targets: str) -> tuple[np.ndarray, np.ndarray]:
        """(targets of ``rows`` (n, n_genes) float32, mask of genes the sample has)."""
        present = self.gene_pos >= 0
        if not len(self.gene_pos):  # images only (e.g. embedding extraction): never load the table
            return np.zeros((len(rows), 0), dtype=np.float32), present
        dense = self.dense(targets)
        if dense is not None:
            return dense[rows], present
        out = np.zeros((len(rows), len(self.gene_pos)), dtype=np.float32)
        if present.any():
            out[:, present] = self.X()[rows][:, self.gene_pos[present]].toarray()
        if targets == "log1p":
            np.log1p(out, out=out)
        return out, present


def label_codes(samples: list[Any], column: str, tables: list[str]) -> tuple[list[str], list[np.ndarray | None]]:
    """(classes, per sample the class index of every table row, -1 where the row has no label): the values of
    the obs column ``column`` (e.g. ``label`` from ``convert … --labels``) over the selected samples, classes
    sorted; a sample without the column gets ``None`` (its items are -1)."""
    import pandas as pd
    from anndata.io import read_elem

    values: list[Any] = []
    for s, table in zip(samples, tables, strict=True):
        obs = s.table(table[len("tables/"):])["obs"] if table else None
        values.append(pd.Series(read_elem(obs[column])) if obs is not None and column in obs else None)
    if all(v is None for v in values):
        from hestdata.errors import StoreError

        raise StoreError(f"no selected sample has the obs column {column!r} (convert with --labels)")
    classes = sorted({str(x) for v in values if v is not None for x in v.dropna().unique()})
    pos = {c: i for i, c in enumerate(classes)}
    codes = [None if v is None else np.array([pos[str(x)] if pd.notna(x) else -1 for x in v], dtype=np.int64)
             for v in values]
    return classes, codes
