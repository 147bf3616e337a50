"""10x Xenium reader: cells, transcripts, boundaries, the DAPI morphology image (and its pixel size).

Coordinates in Xenium outputs are micrometres. The pixel size of the morphology image comes from
``experiment.xenium`` (``pixel_size``), else the OME-XML ``PhysicalSizeX``, else ``pixel_size_um`` given by the
user — never a guess: without any of them the read fails with a clear message. ``image_origin_um`` is where the
image's top-left corner lies (non-zero for cropped images). Feature types (gene expression, negative-control
probes/codewords, unassigned codewords) are kept apart: the expression table holds genes; control counts are
kept per cell in ``obsm['control_counts']``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field, field_validator

from hestdata.errors import InputError
from hestdata.model import CellSample, PixelSizeEvidence
from hestdata.options import CellOptions, UserPixelSize
from hestdata.sources.registry import Source, register_source

if TYPE_CHECKING:  # pandas (and scipy) load when a reader runs: `hestdata --help` does not pay for them
    import pandas as pd

XENIUM_FULLRES_PIXEL_UM = 0.2125
GENE = "Gene Expression"


def _first(folder: Path, *names: str) -> Path | None:
    return next((folder / n for n in names if (folder / n).exists()), None)


def _table(folder: Path, stem: str, required: bool = True) -> pd.DataFrame | None:
    import pandas as pd

    p = _first(folder, f"{stem}.parquet", f"{stem}.csv.gz", f"{stem}.csv")
    if p is None:
        if required:
            raise InputError(folder, f"{stem}.parquet / {stem}.csv.gz not found")
        return None
    try:
        df = pd.read_parquet(p) if p.suffix == ".parquet" else pd.read_csv(p)
    except Exception as exc:
        raise InputError(p, f"cannot read table: {exc}") from exc
    for c in df.columns:
        if df[c].dtype == object and len(df) and isinstance(df[c].iloc[0], bytes):
            df[c] = df[c].str.decode("utf-8")
    df.attrs["path"] = str(p)
    return df


def _polygons(df: pd.DataFrame) -> dict[str, np.ndarray]:
    need = {"cell_id", "vertex_x", "vertex_y"}
    if not need <= set(df.columns):
        raise InputError(df.attrs.get("path"), f"boundaries lack column(s) {sorted(need - set(df.columns))}")
    ids = df["cell_id"].astype(str).to_numpy()
    xy = df[["vertex_x", "vertex_y"]].to_numpy(np.float64)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    return {ids[a]: xy[a:b] for a, b in zip(starts, ends, strict=True)}


def read_alignment(path: str | Path) -> np.ndarray:
    """10x H&E alignment CSV: a 3x3 matrix (comma-separated, optional header) mapping H&E pixels to
    full-resolution morphology pixels."""
    p = Path(path)
    rows = []
    for line in p.read_text().splitlines():
        parts = [x.strip() for x in line.split(",") if x.strip()]
        try:
            rows.append([float(x) for x in parts])
        except ValueError:
            continue  # a header
    m = np.asarray(rows, dtype=np.float64)
    if m.shape != (3, 3) or not np.allclose(m[2], [0, 0, 1], atol=1e-6) or abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise InputError(p, f"expected a 3x3 affine matrix with last row 0,0,1; got shape {m.shape}")
    return m


def parse_affine(text: str) -> np.ndarray:
    """'a,b,c,d,e,f' -> [[a, b, c], [d, e, f], [0, 0, 1]] (H&E pixel -> µm)."""
    vals = [float(v) for v in text.split(",")]
    if len(vals) != 6:
        raise ValueError(f"an affine needs 6 numbers 'a,b,c,d,e,f', got {text!r}")
    m = np.array([vals[:3], vals[3:], [0.0, 0.0, 1.0]])
    if abs(np.linalg.det(m[:2, :2])) < 1e-12:
        raise ValueError(f"affine {text!r} is singular")
    return m


def read_xenium(folder: str | Path, *, sample_id: str, pixel_size_um: float | None = None,
                image_origin_um: tuple[float, float] = (0.0, 0.0), image: str = "focus",
                he_image: str | Path | None = None, he_alignment: str | Path | None = None,
                he_affine_um: np.ndarray | None = None) -> CellSample:
    """Read a Xenium output folder (any version whose files carry these standard names).

    A registered H&E (``he_image``) needs either 10x's alignment CSV (``he_alignment``: H&E pixels →
    full-resolution morphology pixels) or ``he_affine_um`` (H&E pixels → µm, 3x3).
    """
    d = Path(folder)
    if not d.is_dir():
        raise InputError(d, "Xenium folder not found")
    experiment = _read_experiment(d)
    cells, fm = _read_cells(d)
    transcripts = _read_transcripts(d, fm)
    cell_polys, nuc_polys = _polygons(_table(d, "cell_boundaries")), _polygons(_table(d, "nucleus_boundaries"))
    ev = PixelSizeEvidence(user=pixel_size_um)
    warnings: list[str] = []
    img = _read_morphology(d, image, ev, warnings)
    if experiment.get("pixel_size"):
        ev.embedded, ev.embedded_from = float(experiment["pixel_size"]), "experiment.xenium pixel_size"
    if img is not None and ev.embedded is None and ev.user is None:
        raise InputError(d, "no experiment.xenium and no physical pixel size in the morphology OME-XML",
                         f"pass --pixel-size-um (Xenium's full-resolution morphology is {XENIUM_FULLRES_PIXEL_UM} µm/px)")
    he, affine, kind = _read_he(he_image, he_alignment, he_affine_um)
    return CellSample(sample_id=sample_id, technology="xenium", pixel_size=ev, source_files=[d], warnings=warnings,
                      folder=d, cells=cells, transcripts=transcripts, cell_polygons=cell_polys,
                      nucleus_polygons=nuc_polys, image=img, image_origin_um=tuple(map(float, image_origin_um)),
                      experiment=experiment, he=he, he_affine=affine, he_affine_kind=kind)


def _read_experiment(d: Path) -> dict[str, Any]:
    exp_path = d / "experiment.xenium"
    if not exp_path.is_file():
        return {}
    try:
        return json.loads(exp_path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(exp_path, f"invalid JSON: {exc}") from exc


def _read_cells(d: Path) -> tuple[Any, Any]:
    """The cell table (genes only; control probes/codewords per cell in ``obsm``) and the feature matrix."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    from hestdata.sources.tenx import read_10x_h5

    fm = read_10x_h5(d / "cell_feature_matrix.h5")
    cells_df = _table(d, "cells")
    if "cell_id" not in cells_df.columns:
        raise InputError(cells_df.attrs["path"], "cells table has no cell_id column")
    cells_df["cell_id"] = cells_df["cell_id"].astype(str)
    cells_df = cells_df.set_index("cell_id")
    missing = pd.Index(fm.barcodes).difference(cells_df.index)
    if len(missing):
        raise InputError(cells_df.attrs["path"], f"{len(missing)} cell(s) of the matrix absent, e.g. {missing[0]!r}")
    obs = cells_df.loc[fm.barcodes].copy()
    obs["x_um"] = obs["x_centroid"].astype(np.float64)
    obs["y_um"] = obs["y_centroid"].astype(np.float64)
    gene = (fm.features["feature_type"] == GENE).to_numpy()
    var = fm.features[gene].set_index("name")
    var.index = var.index.astype(str)
    cells = ad.AnnData(X=sp.csr_matrix(fm.counts[:, np.flatnonzero(gene)]), obs=obs, var=var)
    ctrl = np.flatnonzero(~gene)
    cells.obsm["control_counts"] = fm.counts[:, ctrl].toarray().astype(np.int32)
    cells.uns["control_features"] = {"name": fm.features["name"].to_numpy()[ctrl].tolist(),
                                     "feature_type": fm.features["feature_type"].to_numpy()[ctrl].tolist()}
    return cells, fm


def _read_transcripts(d: Path, fm: Any) -> pd.DataFrame:
    import pandas as pd

    tx = _table(d, "transcripts")
    need = {"feature_name", "x_location", "y_location"}
    if not need <= set(tx.columns):
        raise InputError(tx.attrs["path"], f"transcripts lack column(s) {sorted(need - set(tx.columns))}")
    ftype = dict(zip(fm.features["name"], fm.features["feature_type"], strict=True))
    transcripts = pd.DataFrame({
        "x": tx["x_location"].astype(np.float64), "y": tx["y_location"].astype(np.float64),
        "z": tx["z_location"].astype(np.float64) if "z_location" in tx else 0.0,
        "gene": pd.Categorical(tx["feature_name"].astype(str)),
        "qv": tx["qv"].astype(np.float32) if "qv" in tx else np.float32(np.nan),
        "cell_id": tx["cell_id"].astype(str) if "cell_id" in tx else "",
        "overlaps_nucleus": tx["overlaps_nucleus"].astype(np.int8) if "overlaps_nucleus" in tx else np.int8(0),
    })
    transcripts["feature_type"] = pd.Categorical(tx["feature_name"].astype(str).map(ftype).fillna("unknown"))
    if not np.isfinite(transcripts[["x", "y"]].to_numpy()).all():
        raise InputError(tx.attrs["path"], "transcripts with NaN/inf coordinates")
    return transcripts


def _read_morphology(d: Path, image: str, ev: PixelSizeEvidence, warnings: list[str]) -> np.ndarray | None:
    """The DAPI morphology image (c, y, x); its OME pixel size goes into ``ev``."""
    import tifffile

    from hestdata.sources.images import strict_tiff, tiff_pixel_size_um

    candidates = ["morphology_focus.ome.tif", "morphology_mip.ome.tif", "morphology.ome.tif"]
    if image == "mip":
        candidates = candidates[1:2] + candidates[:1] + candidates[2:]
    ipath = _first(d, *candidates) or _first(d / "morphology_focus", "morphology_focus_0000.ome.tif")
    if ipath is None:
        warnings.append(f"{d}: no morphology image found")
        return None
    with strict_tiff(ipath, "the morphology image"), tifffile.TiffFile(ipath) as tif:
        ps, src = tiff_pixel_size_um(tif)
        arr = tif.series[0].levels[0].asarray()
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim > 3:
        arr = arr.reshape((-1,) + arr.shape[-2:])
    if ps:
        ev.embedded, ev.embedded_from = ps, f"{ipath.name} {src}"
    return arr


def _read_he(he_image: str | Path | None, he_alignment: str | Path | None,
             he_affine_um: np.ndarray | None) -> tuple[Any, np.ndarray | None, str]:
    if he_image is None:
        return None, None, "um"
    from hestdata.sources.images import blank_reason, load_image

    if (he_alignment is None) == (he_affine_um is None):
        raise InputError(he_image, "an H&E image needs exactly one of --he-alignment or --he-affine-um")
    he = load_image(he_image)
    reason = blank_reason(he.raster)
    if reason:
        raise InputError(he_image, f"image is blank: {reason}")
    if he_alignment is not None:
        return he, read_alignment(he_alignment), "morphology_px"
    return he, np.asarray(he_affine_um, dtype=np.float64), "um"


def parse_origin(text: str | None) -> tuple[float, float]:
    if not text:
        return (0.0, 0.0)
    m = re.match(r"^\s*([-0-9.eE+]+)\s*,\s*([-0-9.eE+]+)\s*$", text)
    if not m:
        raise ValueError(f"image origin must be 'X,Y' in µm, got {text!r}")
    return float(m.group(1)), float(m.group(2))


class XeniumOptions(CellOptions, UserPixelSize):
    """Options of the ``xenium`` source."""

    image_origin_um: tuple[float, float] = Field(default=(0.0, 0.0),
                                                 description="image top-left in µm, 'X,Y' (cropped images)")
    he_affine_um: tuple[float, float, float, float, float, float] | None = Field(
        default=None, description="H&E px -> µm affine 'a,b,c,d,e,f' (instead of he_alignment)")
    image: Literal["focus", "mip"] = Field(default="focus", description="morphology image: focus or mip")

    @field_validator("image_origin_um", "he_affine_um", mode="before")
    @classmethod
    def _numbers(cls, v: Any) -> Any:
        return [float(x) for x in v.split(",")] if isinstance(v, str) else v


def _read(inputs: dict[str, Path], sample_id: str, o: XeniumOptions) -> CellSample:
    affine = parse_affine(",".join(map(str, o.he_affine_um))) if o.he_affine_um is not None else None
    return read_xenium(inputs["dir"], sample_id=sample_id, pixel_size_um=o.pixel_size_um,
                       image_origin_um=o.image_origin_um, image=o.image, he_image=inputs.get("he_image"),
                       he_alignment=inputs.get("he_alignment"), he_affine_um=affine)


SOURCE = register_source(Source(
    name="xenium", summary="10x Xenium output folder: cells, transcripts, boundaries, DAPI, optional H&E",
    variant="cells", technologies=("xenium",), inputs={"dir": "Xenium output folder"},
    optional_inputs={"he_image": "registered H&E image", "he_alignment": "10x alignment CSV (H&E px -> morphology px)"},
    options=XeniumOptions, reader=_read,
    elements=("images/if", "images/he", "points/transcripts", "shapes/cells", "shapes/nuclei", "tables/expression",
              "tables/expression_pseudospots_<d>um", "patches")))
