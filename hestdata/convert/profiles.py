"""Slide-level tables of any sample: ``tables/slide_profile`` (a profile file's genes, or the pseudo-bulk of the
sample's spots or cells) and ``tables/slide_alterations`` (one row of slide labels). See
:mod:`hestdata.curation.profiles` for the file formats."""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.convert import stages
from hestdata.metadata import SlideProfileInfo
from hestdata.model import Sample
from hestdata.store.profiles import ALTERATIONS_TABLE, PROFILE_TABLE


def profile_table(req: stages.Request, s: Sample, table: Any | None, species: str | None, pseudobulk: bool
                  ) -> tuple[Any | None, SlideProfileInfo | None]:
    """The one-row profile AnnData and its metadata: from ``s.slide_inputs['profile']`` if given (genes unified
    like a spot table's), else the pseudo-bulk of ``table`` (its ``in_tissue`` rows; the rows summed are
    marked in its ``obs['in_profile']``), else nothing."""
    import anndata as ad
    import pandas as pd

    from hestdata.curation.genes import unify_genes
    from hestdata.curation.profiles import pseudobulk as pseudo
    from hestdata.curation.profiles import read_profile

    path = s.slide_inputs.get("profile")
    if path is not None:
        genes, values = read_profile(path)
        var, _, _ = unify_genes(pd.DataFrame(index=pd.Index(genes)), species, path)
        info = SlideProfileInfo(kind="file", n_genes=len(genes), source=str(path), total=float(values.sum()))
    elif table is not None and pseudobulk and table.n_obs:
        marked = table.obs["in_tissue"].to_numpy() > 0 if "in_tissue" in table.obs else np.ones(table.n_obs, bool)
        values, mask = pseudo(table.X, marked)
        table.obs["in_profile"] = mask.astype(np.int8)
        var = table.var.copy()
        info = SlideProfileInfo(kind="pseudobulk", n_genes=int(table.n_vars), n_spots=int(mask.sum()),
                                total=float(values.sum()))
    else:
        return None, None
    prof = ad.AnnData(X=values[None, :].astype(np.float64), obs=pd.DataFrame(index=[s.sample_id]), var=var)
    prof.uns["profile"] = info.model_dump(mode="json")
    return prof, info


def alterations_table(s: Sample) -> tuple[Any | None, dict[str, Any]]:
    """The one-row alterations AnnData (values in ``obs``) and the values, from ``s.slide_inputs['alterations']``."""
    import anndata as ad
    import pandas as pd

    from hestdata.curation.profiles import read_alterations

    path = s.slide_inputs.get("alterations")
    if path is None:
        return None, {}
    values = read_alterations(path)
    obs = pd.DataFrame({k: [v] for k, v in values.items()}, index=[s.sample_id])
    for k, v in values.items():
        if isinstance(v, str):
            obs[k] = obs[k].astype("category")
    return ad.AnnData(obs=obs), values


def write_slide_tables(w: Any, prof: Any | None, alt: Any | None) -> None:
    """Write whichever of the two tables exist (plain tables: they annotate no spatial element)."""
    if prof is not None:
        w.write_plain_table(prof, PROFILE_TABLE)
    if alt is not None:
        w.write_plain_table(alt, ALTERATIONS_TABLE)
