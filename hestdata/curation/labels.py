"""Region labels on spots (and cells): a per-spot label table joined to a sample's spots at conversion.

The table (CSV/TSV, optionally gzipped) is keyed either by **barcode** (a column whose values are the spots' or
cells' ids, or the first column) or, for spots, by **array coordinates** (``array_row`` / ``array_col``, or legacy ST's ``x`` / ``y``
rounded to the nearest integer: the her2st pathologist files give the spot file's ``new_x`` / ``new_y``). Every
other column named ``label…``, or holding text, is a label column; it becomes the obs column
``label_<name>`` of ``tables/expression`` (``label`` itself stays ``label``), a categorical with missing
values for spots without a label. Values in ``mask`` (``undetermined`` by default, case-insensitive) are stored as
missing and counted, never as a class. Rows without a position, rows that match no spot and duplicate keys are
counted (duplicates with different labels are an error naming the file).

**Polygons** (a GeoJSON file, ``.geojson`` or ``.json``: QuPath's annotation export, or any FeatureCollection of
polygons) label every spot or cell whose centre lies inside one. A feature's label is its
``properties.classification.name`` (QuPath), else ``label``, ``class`` or ``name``. Coordinates are the sample's
full-resolution pixels (the H&E's, as QuPath writes them; a cell sample's morphology pixels), or µm when the
collection says ``"unit": "um"`` at its top level. A centre inside polygons of different labels takes the
smallest one's (a region drawn inside another is the more specific annotation), counted in ``n_overlaps``;
features that are not polygons and polygons holding no centre are counted. Such a sample is written in store
format 3 (its label QC has ``key: polygon``).
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


REGION_SUFFIXES = (".geojson", ".json")
LABEL_PROPERTIES = ("label", "class", "name")


def read_label_regions(path: Path) -> tuple[list[Any], list[str | None], str, int]:
    """(polygons, their labels, the coordinate unit ``px`` or ``um``, features that are not polygons)."""
    import json

    import shapely
    from shapely.geometry import shape

    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(path, f"not a readable GeoJSON file ({exc})") from None
    feats = doc.get("features") if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" else \
        doc if isinstance(doc, list) else [doc] if isinstance(doc, dict) and doc.get("type") == "Feature" else None
    if feats is None:
        raise InputError(path, "not a GeoJSON FeatureCollection (or a list of features)")
    unit = str(doc.get("unit", "px")).lower() if isinstance(doc, dict) else "px"
    if unit not in ("px", "um", "µm"):
        raise InputError(path, f"unit {unit!r}: px (full-resolution pixels) or um")
    polys, labels, skipped = [], [], 0
    for f in feats:
        try:
            g = shape(f["geometry"])
        except (KeyError, TypeError, ValueError, AttributeError):
            skipped += 1
            continue
        if g.geom_type not in ("Polygon", "MultiPolygon") or g.is_empty:
            skipped += 1
            continue
        props = f.get("properties") or {}
        cls = props.get("classification")
        value = cls.get("name") if isinstance(cls, dict) else cls
        for k in LABEL_PROPERTIES:
            value = value if value not in (None, "") else props.get(k)
        polys.append(shapely.make_valid(g))
        labels.append(None if value in (None, "") else str(value).strip())
    if not polys:
        raise InputError(path, f"no polygon among its {len(feats)} feature(s)")
    return polys, labels, "um" if unit in ("um", "µm") else "px", skipped


def attach_region_labels(obs: Any, path: Path, pixel_size_um: float | None,
                         mask: tuple[str, ...] = DEFAULT_MASK) -> tuple[Any, dict[str, Any]]:
    """``obs`` with ``label`` from the polygons containing each centre (module docstring) and the counts."""
    import pandas as pd
    import shapely

    polys, labels, unit, skipped = read_label_regions(path)
    xy = obs[["x_um", "y_um"]].to_numpy(np.float64)
    if unit == "px":
        if not pixel_size_um:
            raise InputError(path, "polygons in pixels need the sample's pixel size", 'add "unit": "um" if they are in µm')
        xy = xy / pixel_size_um
    tree = shapely.STRtree(polys)
    pts = shapely.points(xy[:, 0], xy[:, 1])
    spot_i, poly_i = tree.query(pts, predicate="within")
    area = np.array([g.area for g in polys])
    best: dict[int, int] = {}
    overlaps = set()
    for i, j in zip(spot_i.tolist(), poly_i.tolist(), strict=True):
        if i in best and labels[best[i]] != labels[j]:
            overlaps.add(i)
        if i not in best or area[j] < area[best[i]]:
            best[i] = j
    masked = {m.lower() for m in mask}
    values = np.full(len(obs), None, dtype=object)
    n_masked = 0
    for i, j in best.items():
        v = labels[j]
        if v is None or v.lower() in masked:
            n_masked += v is not None
            continue
        values[i] = v
    out = obs.copy()
    out["label"] = pd.Categorical(values)
    used = set(poly_i.tolist())
    return out, {"file": path.name, "key": "polygon", "n_rows": len(polys) + skipped,
                 "n_rows_without_position": skipped, "n_rows_unmatched": int(sum(j not in used for j in range(len(polys)))),
                 "n_masked": n_masked, "n_spots_labelled": int(sum(v is not None for v in values)),
                 "n_overlaps": len(overlaps),
                 "columns": {"label": {str(k): int(v) for k, v in pd.Series(values).value_counts().items()}}}


def attach_labels(obs: Any, path: str | Path, mask: tuple[str, ...] = DEFAULT_MASK,
                  pixel_size_um: float | None = None) -> tuple[Any, dict[str, Any]]:
    """``obs`` with the label columns joined (module docstring) and what the join counted; a GeoJSON file labels
    by polygons (``pixel_size_um`` converts the sample's µm centres to its full-resolution pixels)."""
    import pandas as pd

    p = Path(path)
    if p.suffix.lower() in REGION_SUFFIXES:
        if not p.is_file():
            raise InputError(p, "labels file not found")
        return attach_region_labels(obs, p, pixel_size_um, mask)
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
