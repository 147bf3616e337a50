"""Cell or nucleus segmentations from other tools, as centres (and outlines) for cell-centred crops.

Accepted files (the ``cells`` input of any source with an H&E):

* **GeoJSON** (QuPath, HoVer-Net, CellViT, StarDist exports): a FeatureCollection of Polygon / MultiPolygon /
  Point features **in full-resolution image pixels** (QuPath's convention). The centre of a polygon is its
  centroid (of the largest part); ``properties`` ``id``/``objectId``/``name`` give the cell id and
  ``classification.name`` / ``class`` / ``type`` a label, when present.
* **CSV / TSV** with ``x_um, y_um`` (micrometres) or ``x_px, y_px`` (full-resolution pixels) columns, optionally
  ``cell_id`` and ``label``. Bare ``x, y`` are refused: the unit would be a guess.

Everything is returned in µm once the pixel size is known (:func:`centres_um`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError


@dataclass
class Segmentation:
    """Cells of a segmentation: ids, centres (in ``unit``), optional labels and outlines (same unit)."""

    path: Path
    cell_ids: list[str]
    centres: np.ndarray  # (n, 2) x, y
    unit: str  # "px" (full resolution) or "um"
    labels: list[str] | None = None
    outlines: list[Any] | None = None  # shapely geometries, same unit

    def centres_um(self, pixel_size_um: float) -> np.ndarray:
        return self.centres * (pixel_size_um if self.unit == "px" else 1.0)

    def outlines_um(self, pixel_size_um: float) -> list[Any] | None:
        if self.outlines is None:
            return None
        import shapely

        f = pixel_size_um if self.unit == "px" else 1.0
        return [shapely.affinity.scale(g, f, f, origin=(0, 0)) for g in self.outlines]


def _label(props: dict[str, Any]) -> str:
    c = props.get("classification")
    if isinstance(c, dict) and c.get("name"):
        return str(c["name"])
    return str(props.get("class") or props.get("type") or props.get("label") or "")


def read_geojson(path: Path) -> Segmentation:
    import shapely

    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"cannot read the GeoJSON ({type(exc).__name__}: {exc})") from exc
    feats = doc.get("features") if isinstance(doc, dict) else doc
    if not isinstance(feats, list) or not feats:
        raise InputError(path, "no features (expected a GeoJSON FeatureCollection of cells)")
    ids, centres, labels, outlines = [], [], [], []
    for i, f in enumerate(feats):
        try:
            geom = shapely.geometry.shape(f["geometry"])
        except Exception as exc:  # shapely raises several types for bad geometries
            raise InputError(path, f"feature {i}: invalid geometry ({type(exc).__name__}: {exc})") from exc
        if geom.is_empty:
            raise InputError(path, f"feature {i}: empty geometry")
        if geom.geom_type == "MultiPolygon":
            geom = max(geom.geoms, key=lambda g: g.area)
        if geom.geom_type not in ("Polygon", "Point"):
            raise InputError(path, f"feature {i}: {geom.geom_type} is not a cell (Polygon or Point)")
        c = geom.centroid
        props = f.get("properties") or {}
        ids.append(str(f.get("id") or props.get("id") or props.get("objectId") or props.get("name") or i))
        centres.append((c.x, c.y))
        labels.append(_label(props))
        outlines.append(geom)
    if len(set(ids)) != len(ids):
        raise InputError(path, "duplicate cell ids")
    return Segmentation(path, ids, np.asarray(centres, np.float64), "px",
                        labels if any(labels) else None, outlines)


def read_table(path: Path) -> Segmentation:
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="," if path.suffix.lower() == ".csv" else "\t")
    except Exception as exc:  # pandas' parser errors come in several types
        raise InputError(path, f"cannot read the table ({type(exc).__name__}: {exc})") from exc
    cols = set(df.columns)
    if {"x_um", "y_um"} <= cols:
        xy, unit = df[["x_um", "y_um"]], "um"
    elif {"x_px", "y_px"} <= cols:
        xy, unit = df[["x_px", "y_px"]], "px"
    else:
        raise InputError(path, f"needs x_um, y_um (µm) or x_px, y_px (full-resolution px) columns; has {sorted(cols)}",
                         "bare x, y are refused: their unit would be a guess")
    centres = xy.to_numpy(np.float64)
    if not np.isfinite(centres).all():
        raise InputError(path, "non-finite cell coordinates")
    ids = df["cell_id"].astype(str).tolist() if "cell_id" in cols else [str(i) for i in range(len(df))]
    if len(set(ids)) != len(ids):
        raise InputError(path, "duplicate cell ids")
    labels = df["label"].astype(str).tolist() if "label" in cols else None
    return Segmentation(path, ids, centres, unit, labels)


def read_segmentation(path: str | Path) -> Segmentation:
    """A segmentation from a GeoJSON or CSV/TSV file (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "segmentation file not found")
    if p.suffix.lower() in (".geojson", ".json"):
        return read_geojson(p)
    if p.suffix.lower() in (".csv", ".tsv", ".txt"):
        return read_table(p)
    raise InputError(p, f"unsupported segmentation format '{p.suffix}'", "use GeoJSON, CSV or TSV")
