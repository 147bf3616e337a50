"""Reading the slide-level tables of stored samples (``tables/slide_profile``), for the slide loader and the
slide-level benchmark tasks."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from hestdata.errors import InputError
from hestdata.store import layout as L

if TYPE_CHECKING:
    from hestdata.store.root import Root, StoredSample

PROFILE_TABLE = L.PROFILE_TABLE
ALTERATIONS_TABLE = "slide_alterations"


def read_profile(sample: StoredSample) -> tuple[np.ndarray, list[str]]:
    """(genes,) values and gene names of a sample's ``tables/slide_profile``; an error naming the sample if it
    has none."""
    got = sample.profile()
    if got is None:
        raise InputError(sample.id, "no tables/slide_profile (convert with a profile file, or an ST sample with "
                                    "pseudobulk on)")
    return got


def aligned_profiles(root: Root, ids: list[str]) -> tuple[np.ndarray, list[str]]:
    """(slides, genes) profiles on the genes every slide has, in the first slide's order."""
    vals, names = zip(*(read_profile(root.sample(s)) for s in ids), strict=True)
    common = set(names[0]).intersection(*map(set, names[1:]))
    genes = [g for g in names[0] if g in common]
    if not genes:
        raise InputError(None, f"the slide profiles of {ids} share no gene")
    out = []
    for v, n in zip(vals, names, strict=True):
        pos = {g: i for i, g in enumerate(n)}  # once per slide
        out.append(v[[pos[g] for g in genes]])
    return np.stack(out), genes
