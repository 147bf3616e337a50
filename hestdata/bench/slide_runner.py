"""Running the slide-level tasks (``slide_expression``, ``slide_retrieval``): slide embeddings (the mean of each
slide's patch embeddings), the slides' ``tables/slide_profile`` aligned on their common genes, patient groups."""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.errors import InputError

SLIDE_TASKS = ("slide_expression", "slide_retrieval", "slide_pretrain")


def run_slide_task(t: Any, r: Any, ids: list[str], embs: dict[str, np.ndarray], groups_of: dict[str, str],
                   encoder: Any = None, cache_dir: Any = None) -> dict[str, Any]:
    """metric -> [("pooled", value)] (out-of-fold predictions pooled over all slides), plus per-gene values."""
    from hestdata.bench.tasks.slide_level import slide_expression_protocol, slide_retrieval_protocol

    empty = [s for s in ids if len(embs[s]) == 0]
    if empty:
        raise InputError(None, f"slide(s) without patches: {empty}")
    emb = np.stack([embs[s].mean(axis=0) for s in ids])
    from hestdata.store.profiles import aligned_profiles

    profiles, genes = aligned_profiles(r, ids)
    groups = np.array([groups_of[s] for s in ids])
    if t.type == "slide_pretrain":
        return _slide_pretrain(t, r, ids, embs, profiles, genes, groups, encoder, cache_dir)
    proto = slide_expression_protocol if t.type == "slide_expression" else slide_retrieval_protocol
    from hestdata.bench.genes import gene_option

    res = proto(emb, profiles, groups, genes, **gene_option(t.options))
    out: dict[str, Any] = {k: [("pooled", v)] for k, v in res.metrics.items()}
    if res.per_gene:
        out["_per_gene"] = [("pooled", g, m["pearson"]) for g, m in res.per_gene.items()]
    return out


def _slide_pretrain(t: Any, r: Any, ids: list[str], embs: dict[str, np.ndarray], profiles: np.ndarray,
                    genes: list[str], groups: np.ndarray, encoder: Any, cache_dir: Any) -> dict[str, Any]:
    """Threads-style alignment of each slide's patch embeddings with its profile; ``options.alteration`` names a
    column of the slides' ``tables/slide_alterations`` to predict from the aligned embedding; ``options.grid``
    (e.g. ``512px_0.5um``) takes the bags from a feature grid's tissue cells (TITAN-style) instead of the patch
    array (local roots)."""
    from hestdata.bench.tasks.slide_pretrain import slide_pretrain_protocol

    opts = dict(t.options)
    grid = opts.pop("grid", None)
    if grid is not None:
        from hestdata.bench.grid import embed_grid

        if encoder is None or not r.is_local:
            raise InputError(None, f"task {t.name}: feature-grid bags need an image encoder and a local root")
        grids = embed_grid(r.path, encoder, ids, grid=str(grid), cache_dir=cache_dir)
        embs = {s: g.features[g.mask] for s, g in grids.items()}
        empty = [s for s, b in embs.items() if len(b) == 0]
        if empty:
            raise InputError(None, f"task {t.name}: no tissue cell in the {grid} grid of {empty}")
    column = opts.pop("alteration", None)
    labels = None
    if column is not None:
        labels = {s: r.metadata(s).alterations.get(column) for s in ids}
        if all(v is None for v in labels.values()):
            raise InputError(None, f"task {t.name}: no selected slide has the alteration {column!r} "
                                   "(tables/slide_alterations; convert with --alterations)")
    from hestdata.bench.leaderboard import pooled_results

    return pooled_results(slide_pretrain_protocol(embs, profiles, ids, groups, genes, labels=labels, **opts).metrics)
