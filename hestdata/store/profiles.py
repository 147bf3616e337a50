"""Reading the slide-level tables of stored samples (``tables/slide_profile``), for the slide loader and the
slide-level benchmark tasks."""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.errors import InputError

PROFILE_TABLE = "slide_profile"
ALTERATIONS_TABLE = "slide_alterations"


def read_profile(root_url: str, sid: str, storage_options: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """(genes,) values and gene names of a sample's ``tables/slide_profile``; an error naming the sample if it
    has none."""
    from anndata.io import read_elem

    from hestdata.store.access import open_sample_group

    try:
        g = open_sample_group(root_url, sid, "tables", PROFILE_TABLE, storage_options=storage_options)
    except (FileNotFoundError, KeyError) as exc:
        raise InputError(sid, "no tables/slide_profile (convert with a profile file, or an ST sample with "
                              "pseudobulk on)") from exc
    X = read_elem(g["X"])
    var = read_elem(g["var"])
    return np.asarray(X.toarray() if hasattr(X, "toarray") else X, np.float64).ravel(), [str(v) for v in var.index]


def aligned_profiles(root_url: str, ids: list[str], storage_options: dict[str, Any]) -> tuple[np.ndarray, list[str]]:
    """(slides, genes) profiles on the genes every slide has, in the first slide's order."""
    vals, names = zip(*(read_profile(root_url, s, storage_options) for s in ids), strict=True)
    common = set(names[0]).intersection(*map(set, names[1:]))
    genes = [g for g in names[0] if g in common]
    if not genes:
        raise InputError(None, f"the slide profiles of {ids} share no gene")
    out = []
    for v, n in zip(vals, names, strict=True):
        pos = {g: i for i, g in enumerate(n)}  # once per slide
        out.append(v[[pos[g] for g in genes]])
    return np.stack(out), genes
