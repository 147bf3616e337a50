"""Legacy Spatial Transcriptomics reader (100 µm spots on a 200 µm grid; about half of HEST-1k).

Inputs: a counts table (spots x genes, TSV, rows named ``"{x}x{y}"`` by array coordinates), a spot file
(``x y new_x new_y pixel_x pixel_y selected``; ``pixel_x``/``pixel_y`` = column/row in the full-resolution
image) and the full-resolution H&E. The pixel size is estimated from the spot spacing during curation.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hestdata.errors import InputError
from hestdata.model import PixelSizeEvidence, SpotSample
from hestdata.options import SpotOptions, UserPixelSize
from hestdata.sources.common import make_anndata, pick_image
from hestdata.sources.registry import Source, register_source

if TYPE_CHECKING:  # pandas (and scipy) load when a reader runs: `hestdata --help` does not pay for them
    import pandas as pd

ST_SPOT_DIAMETER_UM = 100.0
ST_SPOT_SPACING_UM = 200.0


def _read_counts(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise InputError(path, "counts table not found")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt") as fh:
            header = fh.readline().rstrip("\n").split("\t")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise InputError(path, f"cannot read counts table: {exc}") from exc
    genes = [g.strip().strip('"') for g in header[1:]]
    if {"pixel_x", "pixel_y"} <= {h.strip().strip('"') for h in header}:
        raise InputError(path, "this is a spot file (it has pixel_x/pixel_y columns), not a counts table",
                         "counts and --spots swapped? the counts table comes first, the spot file after --spots")
    seen: set[str] = set()
    dups = sorted({g for g in genes if g in seen or seen.add(g)})  # type: ignore[func-returns-value]
    if dups:
        raise InputError(path, f"{len(dups)} duplicate gene name(s) in the header, e.g. {dups[:3]}",
                         "a gene must appear once; merge or rename the columns")
    try:
        df = pd.read_csv(path, sep="\t", index_col=0, compression="infer")
    except Exception as exc:
        raise InputError(path, f"cannot parse counts table: {exc}") from exc
    df.columns = genes
    df.index = df.index.astype(str)
    if df.index.duplicated().any():
        raise InputError(path, f"duplicate spot name {df.index[df.index.duplicated()][0]!r}")
    if not all(np.issubdtype(t, np.number) for t in df.dtypes.unique()):
        raise InputError(path, "counts table has non-numeric values")
    return df


def _read_spots(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise InputError(path, "spot file not found")
    try:
        spots = pd.read_csv(path, sep="\t")
    except Exception as exc:
        raise InputError(path, f"cannot parse spot file: {exc}") from exc
    need = {"x", "y", "pixel_x", "pixel_y"}
    if not need <= set(spots.columns) and len(spots.columns) > 50:
        raise InputError(path, f"this looks like a counts table ({len(spots.columns)} columns), not a spot file",
                         "counts and --spots swapped? the counts table comes first, the spot file after --spots")
    if not need <= set(spots.columns):
        raise InputError(path, f"spot file lacks column(s) {sorted(need - set(spots.columns))}")
    xy = spots[["x", "y", "pixel_x", "pixel_y"]].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise InputError(path, f"{int(bad.sum())} spot row(s) with a missing, non-numeric or infinite x/y/pixel_x/"
                               f"pixel_y, e.g. line {r + 2}: {spots.iloc[r][['x', 'y', 'pixel_x', 'pixel_y']].tolist()}")
    spots["barcode"] = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    if spots["barcode"].duplicated().any():
        raise InputError(path, f"duplicate array position {spots['barcode'][spots['barcode'].duplicated()].iloc[0]}")
    return spots.set_index("barcode")


def read_st(counts: str | Path, *, spots: str | Path, image: str | Path, sample_id: str,
            pixel_size_um: float | None = None) -> SpotSample:
    """Read one legacy-ST section; every counts row must have a spot-file row with pixel coordinates."""
    import pandas as pd

    cpath, spath = Path(counts), Path(spots)
    df = _read_counts(cpath)
    sp_df = _read_spots(spath)
    missing = df.index.difference(sp_df.index)
    if len(missing):
        raise InputError(spath, f"{len(missing)} spot(s) of {cpath.name} absent from the spot file, e.g. {missing[0]!r}")
    s = sp_df.loc[df.index]
    obs = pd.DataFrame(index=df.index)
    obs["in_tissue"] = (s["selected"].astype(int) if "selected" in s else pd.Series(1, index=s.index)).to_numpy()
    obs["array_row"] = s["y"].astype(int).to_numpy()
    obs["array_col"] = s["x"].astype(int).to_numpy()
    obs["pxl_row_in_fullres"] = pd.to_numeric(s["pixel_y"], errors="coerce").to_numpy(np.float64)
    obs["pxl_col_in_fullres"] = pd.to_numeric(s["pixel_x"], errors="coerce").to_numpy(np.float64)
    bad = obs[["pxl_row_in_fullres", "pxl_col_in_fullres"]].isna().any(axis=1)
    if bad.any():
        raise InputError(spath, f"{int(bad.sum())} spot(s) have NaN pixel coordinates, e.g. {obs.index[bad][0]!r}")
    values = df.to_numpy()
    features = pd.DataFrame({"name": list(df.columns), "gene_id": [""] * df.shape[1],
                             "feature_type": ["Gene Expression"] * df.shape[1]})
    adata = make_anndata(values, obs, features, cpath)
    warnings_out: list[str] = []
    img = pick_image([(Path(image), "fullres", 1.0)], explicit=True, warnings_out=warnings_out)
    evidence = PixelSizeEvidence(user=pixel_size_um)
    if img is not None and img.embedded_pixel_size_um:
        evidence.embedded, evidence.embedded_from = img.embedded_pixel_size_um, f"{Path(image).name} tags"
    return SpotSample(
        sample_id=sample_id, technology="st", expression=adata, image=img, pixel_size=evidence,
        spot_shape="circle", spot_diameter_um=ST_SPOT_DIAMETER_UM, inter_spot_distance_um=ST_SPOT_SPACING_UM,
        grid_layout="square",
        source_files=[cpath, spath, Path(image)], warnings=warnings_out,
        n_positions_without_counts=int(len(sp_df) - len(df)),
    )


class STOptions(SpotOptions, UserPixelSize):
    """Options of the ``st`` source."""


def _read(inputs: dict[str, Path], sample_id: str, o: STOptions) -> SpotSample:
    return read_st(inputs["counts"], spots=inputs["spots"], image=inputs["image"], sample_id=sample_id,
                   pixel_size_um=o.pixel_size_um)


SOURCE = register_source(Source(
    name="st", summary="legacy Spatial Transcriptomics: counts TSV, spot file and H&E of one section",
    variant="spots", technologies=("st",),
    inputs={"counts": "counts TSV (spots x genes, rows '{x}x{y}')", "spots": "spot file with pixel_x/pixel_y",
            "image": "full-resolution H&E"},
    options=STOptions, elements=("images/he", "shapes/spots", "shapes/tissue", "tables/expression", "patches"), reader=_read))
