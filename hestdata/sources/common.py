"""Small helpers shared by readers: AnnData assembly and image-candidate selection."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hestdata.curation.counts import check_unique_ids
from hestdata.errors import InputError
from hestdata.model import RasterImage
from hestdata.sources.images import blank_reason, load_image

if TYPE_CHECKING:
    import anndata
    import pandas as pd
    import scipy.sparse as sp


def make_anndata(counts: sp.spmatrix | np.ndarray, obs: pd.DataFrame, features: pd.DataFrame,
                 source: Path) -> anndata.AnnData:
    """AnnData with CSR counts as given, obs as given, var indexed by the source feature name."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    X = sp.csr_matrix(counts)
    check_unique_ids(obs.index, source, "spot id")
    var = features.copy()
    var.index = pd.Index(var.pop("name").astype(str), name=None)
    if X.shape != (len(obs), len(var)):
        raise InputError(source, f"counts shape {X.shape} does not match {len(obs)} spots x {len(var)} features")
    obs = obs.copy()
    obs.index = obs.index.astype(str)
    with warnings.catch_warnings():  # duplicate names are resolved (or rejected) by gene unification
        warnings.filterwarnings("ignore", message="Variable names are not unique")
        return ad.AnnData(X=X, obs=obs, var=var)


def pick_image(candidates: list[tuple[Path, str, float]], explicit: bool, warnings_out: list[str]) -> RasterImage | None:
    """Load the first usable image of ``(path, kind, scale_to_fullres)`` candidates.

    A blank (all-black/white/uniform) explicit image is an error; a blank Space Ranger PNG is a loud warning,
    recorded in the sample's metadata, and the next candidate is tried. Nothing is ever silently patched.
    """
    for path, kind, scale in candidates:
        if not path.is_file():
            if explicit:
                raise InputError(path, "image file not found")
            continue
        img = load_image(path, kind=kind, scale_to_fullres=scale)
        reason = blank_reason(img.raster)
        if reason is None:
            return img
        if explicit:
            raise InputError(path, f"image is blank: {reason}", "check the file; a blank image cannot be patched")
        msg = f"{path}: {kind} image is blank ({reason}); skipped"
        warnings.warn(msg, stacklevel=3)
        warnings_out.append(msg)
    return None
