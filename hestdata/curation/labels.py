"""Region labels on spots (and cells): a per-spot label table joined to a sample's spots at conversion.

The table (CSV/TSV, optionally gzipped) is keyed either by **barcode** (a column whose values are the spots' or
cells' ids, or the first column) or, for spots, by **array coordinates** (``array_row`` / ``array_col``, or legacy ST's ``x`` / ``y``
rounded to the nearest integer: the her2st pathologist files give the spot file's ``new_x`` / ``new_y``). Every
other column named ``label…``, or holding text, is a label column; it becomes the obs column
``label_<name>`` of ``tables/expression`` (``label`` itself stays ``label``), a categorical with missing
values for spots without a label. Values in ``mask`` (``undetermined`` by default, case-insensitive) are stored as
missing and counted, never as a class. Rows without a position, rows that match no spot and duplicate keys are
counted (duplicates with different labels are an error naming the file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError

DEFAULT_MASK = ("undetermined",)
ID_COLUMNS = {"row.names", "patient_id", "ids", "patient", "sample", "sample_id", "section"}
POSITION_COLUMNS = {"x", "y", "array_row", "array_col", "pixel_x", "pixel_y", "new_x", "new_y", "warped_x",
                    "warped_y", "pxl_row_in_fullres", "pxl_col_in_fullres", "x_um", "y_um", "in_tissue",
                    "selected", "barcode"}


def read_label_table(path: str | Path) -> Any:
    """The label table as a DataFrame (separator from the extension: tab for .tsv/.txt, else sniffed)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "labels file not found")
    name = p.name.lower().removesuffix(".gz")
    try:
        sep = "\t" if name.endswith((".tsv", ".txt")) else None
        df = pd.read_csv(p, sep=sep, engine="python" if sep is None else "c")
    except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise InputError(p, f"not a readable CSV/TSV label table: {exc}") from None
    if df.empty:
        raise InputError(p, "the label table has no rows")
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _label_columns(df: Any, key_cols: list[str]) -> list[str]:
    out = []
    for c in df.columns:
        low = c.lower()
        if c in key_cols or low in ID_COLUMNS or low in POSITION_COLUMNS or low.startswith("unnamed"):
            continue
        if "label" in low or df[c].dtype == object:
            out.append(c)
    return out


def _keys(df: Any, obs: Any, p: Path) -> tuple[str, list[Any], list[str], np.ndarray]:
    """(key kind, each row's key or None, the key columns, each spot's key)."""
    import pandas as pd

    ids = set(obs.index.astype(str))
    for c in df.columns:  # a column of spot ids (the first, unnamed one of a written index included)
        vals = df[c].astype(str)
        if vals.isin(ids).mean() >= 0.5:
            return "barcode", list(vals), [c], obs.index.astype(str).to_numpy()
    cols = {c.lower(): c for c in df.columns}
    if not {"array_row", "array_col"} <= set(obs.columns):  # cells: ids only
        raise InputError(p, f"no column holds the cells' ids (e.g. {sorted(ids)[:2]})", "key cell labels by cell id")
    spot_keys = np.array([f"{r}x{c}" for r, c in zip(obs["array_row"], obs["array_col"], strict=True)])
    if "array_row" in cols and "array_col" in cols:
        r, c = cols["array_row"], cols["array_col"]
    elif "x" in cols and "y" in cols:  # legacy ST: x is the array column, y the row
        r, c = cols["y"], cols["x"]
    else:
        raise InputError(p, f"no key: no column holds the spots' ids (e.g. {sorted(ids)[:2]}) and there are no "
                            "array_row/array_col or x/y columns", "key the labels by barcode or array coordinates")
    rr, cc = pd.to_numeric(df[r], errors="coerce"), pd.to_numeric(df[c], errors="coerce")
    keys = [None if not (np.isfinite(a) and np.isfinite(b)) else f"{int(round(a))}x{int(round(b))}"
            for a, b in zip(rr, cc, strict=True)]
    return "array", keys, [r, c], spot_keys


def attach_labels(obs: Any, path: str | Path, mask: tuple[str, ...] = DEFAULT_MASK) -> tuple[Any, dict[str, Any]]:
    """``obs`` with the label columns joined (module docstring) and what the join counted."""
    import pandas as pd

    p = Path(path)
    df = read_label_table(p)
    kind, keys, key_cols, spot_keys = _keys(df, obs, p)
    columns = _label_columns(df, key_cols)
    if not columns:
        raise InputError(p, f"no label column (a column named label… or holding text); columns: {list(df.columns)}")
    if kind == "array" and len(set(spot_keys)) != len(spot_keys):
        raise InputError(p, "several spots share array coordinates: key these labels by barcode")
    pos = {k: i for i, k in enumerate(spot_keys)}
    masked = {m.lower() for m in mask}
    out = obs.copy()
    qc: dict[str, Any] = {"file": p.name, "key": kind, "n_rows": int(len(df)),
                          "n_rows_without_position": int(sum(k is None for k in keys)) if kind == "array" else 0,
                          "n_rows_unmatched": int(sum(k is not None and k not in pos for k in keys)),
                          "n_masked": 0, "columns": {}}
    seen: dict[int, int] = {}
    for j, k in enumerate(keys):
        if k is not None and k in pos:
            i = pos[k]
            if i in seen and any(str(df[c].iloc[seen[i]]) != str(df[c].iloc[j]) for c in columns):
                raise InputError(p, f"spot {obs.index[i]} has two rows with different labels (rows {seen[i] + 2} and "
                                    f"{j + 2})")
            seen[i] = j
    rows = np.array(sorted(seen), dtype=np.int64)
    src = np.array([seen[i] for i in rows], dtype=np.int64)
    for c in columns:
        name = "label" if c.lower() == "label" else f"label_{c}"
        values = np.full(len(out), None, dtype=object)
        vals = df[c].to_numpy()[src]
        keep = np.array([not (pd.isna(v) or str(v).strip().lower() in masked) for v in vals], dtype=bool)
        qc["n_masked"] += int((~keep & ~pd.isna(vals)).sum())
        values[rows[keep]] = [str(v).strip() for v in vals[keep]]
        out[name] = pd.Categorical(values)
        qc["columns"][name] = {str(k): int(v) for k, v in pd.Series(values).value_counts().items()}
    qc["n_spots_labelled"] = int(len(rows))
    return out, qc
