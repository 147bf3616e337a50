"""AnnData + image reader (scanpy/squidpy convention; also HEST-1k's ``st/<id>.h5ad``).

``obsm['spatial']`` holds spot centres (x = column, y = row) in pixels of the given image;
``uns['spatial'][library]['scalefactors']`` gives ``spot_diameter_fullres``. Counts are taken from
``layers['counts']``, else ``raw.X``, else ``X`` — as given, flagged when not integer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from hestdata.errors import InputError
from hestdata.model import PixelSizeEvidence, SpotSample
from hestdata.options import SpotOptions, UserPixelSize
from hestdata.sources.common import make_anndata, pick_image
from hestdata.sources.registry import Source, register_source
from hestdata.sources.visium import (
    SPACERANGER_SPOT_REFERENCE_UM,
    VISIUM_SPOT_DIAMETER_UM,
    VISIUM_SPOT_SPACING_UM,
)

# (physical spot diameter, centre-to-centre spacing, the diameter that spot_diameter_fullres refers to)
SPOT_GEOMETRY = {"visium": (VISIUM_SPOT_DIAMETER_UM, VISIUM_SPOT_SPACING_UM, SPACERANGER_SPOT_REFERENCE_UM),
                 "st": (100.0, 200.0, 100.0)}
GRID_LAYOUT = {"visium": "hexagonal", "st": "square"}


def read_anndata(h5ad: str | Path, *, image: str | Path, sample_id: str, technology: str = "visium",
                 library_id: str | None = None, pixel_size_um: float | None = None) -> SpotSample:
    """Read an ``.h5ad`` with spot centres in ``obsm['spatial']`` and the image they refer to."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    path = Path(h5ad)
    if not path.is_file():
        raise InputError(path, "h5ad file not found")
    if technology not in SPOT_GEOMETRY:
        raise InputError(path, f"technology {technology!r} not supported here; use one of {sorted(SPOT_GEOMETRY)}")
    try:
        src = ad.read_h5ad(path)
    except Exception as exc:
        raise InputError(path, f"cannot read h5ad (truncated or corrupt?): {type(exc).__name__}: {exc}") from exc
    if "spatial" not in src.obsm:
        raise InputError(path, "obsm['spatial'] (spot centres in image pixels) is missing")
    xy = np.asarray(src.obsm["spatial"], dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] < 2:
        raise InputError(path, f"obsm['spatial'] has shape {xy.shape}; expected (n_spots, 2)")
    if not np.isfinite(xy[:, :2]).all():
        bad = int((~np.isfinite(xy[:, :2])).any(axis=1).sum())
        raise InputError(path, f"{bad} spot(s) have NaN/inf coordinates in obsm['spatial']")
    if "counts" in src.layers:
        X, var, origin = src.layers["counts"], src.var, "layers['counts']"
    elif src.raw is not None:
        X, var, origin = src.raw.X, src.raw.var, "raw.X"
    else:
        X, var, origin = src.X, src.var, "X"
    obs = pd.DataFrame(index=src.obs_names.astype(str))
    obs["in_tissue"] = src.obs["in_tissue"].to_numpy() if "in_tissue" in src.obs else 1
    for c in ("array_row", "array_col"):
        obs[c] = src.obs[c].to_numpy() if c in src.obs else -1
    obs["pxl_col_in_fullres"] = xy[:, 0]
    obs["pxl_row_in_fullres"] = xy[:, 1]
    gene_ids = var["gene_ids"].astype(str).tolist() if "gene_ids" in var else [""] * var.shape[0]
    features = pd.DataFrame({"name": var.index.astype(str), "gene_id": gene_ids,
                             "feature_type": ["Gene Expression"] * var.shape[0]})
    adata = make_anndata(sp.csr_matrix(X), obs, features, path)

    warnings_out: list[str] = []
    img = pick_image([(Path(image), "fullres", 1.0)], explicit=True, warnings_out=warnings_out)
    evidence = PixelSizeEvidence(user=pixel_size_um)
    if img is not None and img.embedded_pixel_size_um:
        evidence.embedded, evidence.embedded_from = img.embedded_pixel_size_um, "image tags"
    spatial = src.uns.get("spatial", {})
    libs = list(spatial.keys()) if isinstance(spatial, dict) else []
    lib = library_id or (libs[0] if len(libs) == 1 else None)
    if library_id and library_id not in libs:
        raise InputError(path, f"library {library_id!r} not in uns['spatial'] (has {libs})")
    sf = dict(spatial[lib].get("scalefactors", {})) if lib else {}
    diameter_um, spacing_um, reference_um = SPOT_GEOMETRY[technology]
    if sf.get("spot_diameter_fullres"):
        evidence.estimated = reference_um / float(sf["spot_diameter_fullres"])
        evidence.estimated_from = f"spot_diameter_fullres ({reference_um:g} µm reference spot)"
    return SpotSample(
        sample_id=sample_id, technology=technology, expression=adata, image=img, pixel_size=evidence,
        spot_shape="circle", spot_diameter_um=diameter_um, inter_spot_distance_um=spacing_um,
        grid_layout=GRID_LAYOUT[technology],
        source_files=[path, Path(image)], metadata={"counts_from": origin, "scalefactors": sf},
        warnings=warnings_out,
    )


class AnnDataOptions(SpotOptions, UserPixelSize):
    """Options of the ``anndata`` source."""

    technology: Literal["visium", "st"] = Field(default="visium", description="spot geometry: visium or st")
    library_id: str | None = Field(default=None, description="key in uns['spatial']")


def _read(inputs: dict[str, Path], sample_id: str, o: AnnDataOptions) -> SpotSample:
    return read_anndata(inputs["h5ad"], image=inputs["image"], sample_id=sample_id, technology=o.technology,
                        library_id=o.library_id, pixel_size_um=o.pixel_size_um)


SOURCE = register_source(Source(
    name="anndata", summary="AnnData + image (scanpy/squidpy convention, HEST-1k st/<id>.h5ad)",
    variant="spots", technologies=(),
    inputs={"h5ad": "AnnData with obsm['spatial'] in image pixels", "image": "the image obsm['spatial'] refers to"},
    options=AnnDataOptions, elements=("images/he", "shapes/spots", "shapes/tissue", "tables/expression", "patches"), reader=_read))
