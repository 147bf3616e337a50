"""Running the slide-level tasks (``slide_expression``, ``slide_retrieval``): slide embeddings (the mean of each
slide's patch embeddings), the slides' ``tables/slide_profile`` aligned on their common genes, patient groups."""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.errors import InputError

SLIDE_TASKS = ("slide_expression", "slide_retrieval")


def run_slide_task(t: Any, r: Any, ids: list[str], embs: dict[str, np.ndarray], groups_of: dict[str, str]
                   ) -> dict[str, Any]:
    """metric -> [("pooled", value)] (out-of-fold predictions pooled over all slides), plus per-gene values."""
    from hestdata.bench.tasks.slide_level import slide_expression_protocol, slide_retrieval_protocol

    empty = [s for s in ids if len(embs[s]) == 0]
    if empty:
        raise InputError(None, f"slide(s) without patches: {empty}")
    emb = np.stack([embs[s].mean(axis=0) for s in ids])
    from hestdata.store.profiles import aligned_profiles

    profiles, genes = aligned_profiles(r, ids)
    groups = np.array([groups_of[s] for s in ids])
    proto = slide_expression_protocol if t.type == "slide_expression" else slide_retrieval_protocol
    from hestdata.bench.genes import gene_option

    res = proto(emb, profiles, groups, genes, **gene_option(t.options))
    out: dict[str, Any] = {k: [("pooled", v)] for k, v in res.metrics.items()}
    if res.per_gene:
        out["_per_gene"] = [("pooled", g, m["pearson"]) for g, m in res.per_gene.items()]
    return out
