"""Space Ranger building blocks shared by the Visium and Visium HD readers.

Feature-barcode matrices (HDF5 v2/v3 and the MTX folder), spot positions (``tissue_positions_list.csv``
without header before Space Ranger 2.0, ``tissue_positions.csv`` with header after, ``.parquet`` for HD) and
``scalefactors_json.json``.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hestdata.curation.counts import check_csr_arrays, check_unique_ids
from hestdata.errors import InputError

if TYPE_CHECKING:  # pandas and scipy load when a reader runs: `hestdata --help` does not pay for them
    import pandas as pd
    import scipy.sparse as sp

POSITION_COLUMNS = ["barcode", "in_tissue", "array_row", "array_col", "pxl_row_in_fullres", "pxl_col_in_fullres"]
MATRIX_H5_NAMES = ("filtered_feature_bc_matrix.h5", "raw_feature_bc_matrix.h5")
MATRIX_DIR_NAMES = ("filtered_feature_bc_matrix", "raw_feature_bc_matrix")


@dataclass
class FeatureMatrix:
    """Counts (barcodes x features, CSR) with barcode and feature annotations."""

    counts: sp.csr_matrix
    barcodes: list[str]
    features: pd.DataFrame  # columns: name, gene_id, feature_type
    path: Path


def _decode(values: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def read_10x_h5(path: str | Path) -> FeatureMatrix:
    """Read a Cell Ranger / Space Ranger HDF5 matrix (v3 ``matrix`` group or v2 per-genome group)."""
    import h5py
    import pandas as pd
    import scipy.sparse as sp

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "matrix file not found")
    try:
        with h5py.File(p, "r") as f:
            if "matrix" in f:
                g = f["matrix"]
                feats = g["features"]
                names = _decode(feats["name"][:])
                ids = _decode(feats["id"][:])
                ftype = _decode(feats["feature_type"][:]) if "feature_type" in feats else ["Gene Expression"] * len(ids)
            else:
                groups = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
                if len(groups) != 1:
                    raise InputError(p, f"not a 10x matrix: no 'matrix' group and {len(groups)} genome groups")
                g = f[groups[0]]
                names = _decode(g["gene_names"][:])
                ids = _decode(g["genes"][:])
                ftype = ["Gene Expression"] * len(ids)
            data = g["data"][:]
            indices = g["indices"][:]
            indptr = g["indptr"][:]
            shape = tuple(int(x) for x in g["shape"][:])
            barcodes = _decode(g["barcodes"][:])
    except InputError:
        raise
    except KeyError as exc:
        raise InputError(p, f"not a 10x feature-barcode matrix: missing dataset {exc}") from exc
    except OSError as exc:
        raise InputError(p, f"cannot read HDF5 (truncated or corrupt?): {exc}") from exc
    n_features, n_barcodes = shape
    if len(indptr) != n_barcodes + 1 or len(barcodes) != n_barcodes or len(names) != n_features:
        raise InputError(p, f"inconsistent matrix: shape {shape}, {len(barcodes)} barcodes, {len(names)} features")
    # stored column-major: features x barcodes in CSC == barcodes x features in CSR
    check_csr_arrays(data, indices, indptr, (n_barcodes, n_features), p)
    check_unique_ids(barcodes, p, "barcode")
    counts = sp.csr_matrix((data, indices, indptr), shape=(n_barcodes, n_features))
    features = pd.DataFrame({"name": names, "gene_id": ids, "feature_type": ftype})
    return FeatureMatrix(counts, barcodes, features, p)


def is_gzip(path: Path) -> bool:
    """True if the file starts with the gzip magic (some '.gz' files in the wild are plain text)."""
    with open(path, "rb") as fh:
        return fh.read(2) == b"\x1f\x8b"


def read_10x_mtx(folder: str | Path) -> FeatureMatrix:
    """Read an MTX folder (``matrix.mtx[.gz]``, ``barcodes.tsv[.gz]``, ``features.tsv[.gz]`` or ``genes.tsv``)."""
    import pandas as pd
    import scipy.io
    import scipy.sparse as sp

    d = Path(folder)

    def find(*names: str) -> Path:
        for n in names:
            for cand in (d / n, d / f"{n}.gz"):
                if cand.is_file():
                    return cand
        raise InputError(d, f"MTX folder lacks {' or '.join(names)}")

    mtx, bc, ft = find("matrix.mtx"), find("barcodes.tsv"), find("features.tsv", "genes.tsv")
    try:
        if is_gzip(mtx):
            with gzip.open(mtx, "rb") as fh:
                m = scipy.io.mmread(fh)
        else:
            with open(mtx, "rb") as fh:
                m = scipy.io.mmread(fh)
    except Exception as exc:
        raise InputError(mtx, f"cannot parse Matrix Market file: {exc}") from exc
    opener = gzip.open if is_gzip(bc) else open
    try:
        with opener(bc, "rt") as fh:
            barcodes = [line.strip().split("\t")[0].strip('"') for line in fh if line.strip()]
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(bc, f"cannot read barcodes (truncated or corrupt?): {exc}") from exc
    try:
        fcols = pd.read_csv(ft, sep="\t", header=None, compression="gzip" if is_gzip(ft) else None)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(ft, f"cannot read features (truncated or corrupt?): {exc}") from exc
    fcols = fcols.astype(str).apply(lambda c: c.str.strip('"'))
    ids = fcols[0].tolist()
    names = fcols[1].tolist() if fcols.shape[1] > 1 else ids
    ftype = fcols[2].tolist() if fcols.shape[1] > 2 else ["Gene Expression"] * len(ids)
    if len(barcodes) != m.shape[1]:
        raise InputError(bc, f"{len(barcodes)} barcode(s) for the {m.shape[1]} column(s) of {mtx.name} "
                             "(truncated or from another matrix?)")
    if len(ids) != m.shape[0]:
        raise InputError(ft, f"{len(ids)} feature(s) for the {m.shape[0]} row(s) of {mtx.name} "
                             "(truncated or from another matrix?)")
    counts = sp.csr_matrix(m.T)
    if counts.dtype.kind == "f" and np.all(np.mod(counts.data, 1) == 0):
        counts = counts.astype(np.int32)  # Matrix Market 'integer' fields come back as float64
    if counts.shape != (len(barcodes), len(ids)):
        raise InputError(mtx, f"matrix shape {m.shape} does not match {len(ids)} features x {len(barcodes)} barcodes")
    return FeatureMatrix(counts, barcodes, pd.DataFrame({"name": names, "gene_id": ids, "feature_type": ftype}), mtx)


def find_matrix(folder: Path) -> FeatureMatrix:
    """The filtered (else raw) matrix in a Space Ranger output folder, HDF5 preferred over MTX."""
    for name in MATRIX_H5_NAMES:
        if (folder / name).exists():
            return read_10x_h5(folder / name)
    for name in MATRIX_DIR_NAMES:
        if (folder / name).is_dir():
            return read_10x_mtx(folder / name)
    raise InputError(folder, "no feature-barcode matrix found",
                     f"expected one of {', '.join(MATRIX_H5_NAMES + MATRIX_DIR_NAMES)}")


def read_positions(spatial: Path) -> pd.DataFrame:
    """Spot positions indexed by barcode, with the six Space Ranger columns (any version)."""
    import pandas as pd

    candidates = [spatial / "tissue_positions.parquet", spatial / "tissue_positions.csv",
                  spatial / "tissue_positions_list.csv"]
    path = next((c for c in candidates if c.is_file()), None)
    if path is None:
        raise InputError(spatial, "no tissue_positions(.csv|.parquet) or tissue_positions_list.csv found")
    try:
        if path.suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            with open(path) as fh:
                first = fh.readline()
            has_header = first.split(",")[0].strip() == "barcode"
            df = pd.read_csv(path, header=0 if has_header else None)
            if not has_header:
                if df.shape[1] != 6:
                    raise InputError(path, f"expected 6 columns, found {df.shape[1]}")
                df.columns = POSITION_COLUMNS
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot parse positions: {exc}") from exc
    missing = [c for c in POSITION_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"positions lack column(s) {missing}")
    df = df[POSITION_COLUMNS].copy()
    df["barcode"] = df["barcode"].astype(str)
    if df["barcode"].duplicated().any():
        dup = df["barcode"][df["barcode"].duplicated()].iloc[0]
        raise InputError(path, f"duplicate barcode {dup!r} in positions")
    for c in ("pxl_row_in_fullres", "pxl_col_in_fullres"):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    df = df.set_index("barcode")
    df.attrs["path"] = str(path)
    return df


def read_scalefactors(spatial: Path) -> dict[str, float]:
    """``scalefactors_json.json`` as a dict (empty if absent)."""
    path = spatial / "scalefactors_json.json"
    if not path.is_file():
        return {}
    try:
        sf = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(path, f"invalid JSON: {exc}") from exc
    if not isinstance(sf, dict):
        raise InputError(path, "expected a JSON object of scale factors")
    for k, v in sf.items():
        if k.endswith(("_scalef", "_fullres", "microns_per_pixel")) and v is not None:
            if not isinstance(v, int | float) or not np.isfinite(v) or v <= 0:
                raise InputError(path, f"scale factor {k} = {v!r} must be a positive number")
    return sf


def join_positions(fm: FeatureMatrix, positions: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Positions of the matrix barcodes, in matrix order; error if a barcode has no position or NaN coords.

    Returns the obs frame and the number of positions rows that have no counts (counted, not an error).
    """
    import pandas as pd

    ppath = positions.attrs.get("path", "positions")
    bc = pd.Index(fm.barcodes)
    missing = bc.difference(positions.index)
    if len(missing):
        raise InputError(ppath, f"{len(missing)} barcode(s) of {fm.path.name} absent from the positions file, "
                                f"e.g. {missing[0]!r}")
    obs = positions.loc[bc].copy()
    xy = obs[["pxl_row_in_fullres", "pxl_col_in_fullres"]].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(xy.to_numpy(np.float64)).all(axis=1)
    if bad.any():
        raise InputError(ppath, f"{int(bad.sum())} spot(s) have NaN/non-numeric pixel coordinates, "
                                f"e.g. {obs.index[bad][0]!r}")
    return obs, int(len(positions) - len(obs))
