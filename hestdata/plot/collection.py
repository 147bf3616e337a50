"""``hestdata plot ROOT ID`` for an image collection: its stored patches, one row per class of a label column
(with each class's count), a title that says the pixel size — or that it is unknown, which is why a fit geometry
gets no scale bar (its items differ in scale) — and a scale bar for a physical geometry."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError
from hestdata.store import layout as L


def plot_collection(s: Any, out: str | os.PathLike[str], *, label: str | None = None, patches: str | None = None,
                    per_class: int = 8, seed: int = 0) -> Path:
    """Draw ``per_class`` random stored patches of each class of ``label`` (default: the first label column)."""
    from anndata.io import read_elem

    from hestdata.plot.style import pyplot, save, scale_bar

    meta = s.metadata
    arrays = s.patch_arrays()
    name = patches or (arrays[0] if arrays else None)
    if not name or name not in arrays:
        raise InputError(s.path, f"no patch array {name!r} to draw (it has {arrays})")
    g = s.patch_group(name)
    obs = read_elem(s.table(L.ITEMS_TABLE)["obs"])
    cq = meta.qc.collection
    columns = list(cq.labels) if cq is not None else []
    label = label or (columns[0] if columns else None)
    if label is not None and label not in obs.columns:
        raise InputError(s.path, f"no label column {label!r}; the items have {columns}")
    rows = np.asarray(g[L.PATCH_OBS_INDEX][:])
    values = obs[label].astype(object).to_numpy()[rows] if label else np.array(["all items"] * len(rows), object)
    classes = sorted({str(v) for v in values if v is not None and v == v})
    rng = np.random.default_rng(seed)
    plt = pyplot()
    fig, axes = plt.subplots(len(classes), 1, figsize=(1.6 * per_class, 1.75 * len(classes) + 0.9), squeeze=False)
    imgs = g[L.PATCH_IMAGES]
    p = int(g.attrs["patch_size_px"])
    um = g.attrs.get("pixel_size_um")
    for ax, c in zip(axes[:, 0], classes, strict=True):
        idx = np.flatnonzero(values.astype(str) == c)
        pick = np.sort(rng.choice(idx, min(per_class, len(idx)), replace=False))
        strip = np.zeros((p, p * per_class + 4 * (per_class - 1), 3), np.uint8) + 255
        for j, i in enumerate(pick):
            strip[:, j * (p + 4):j * (p + 4) + p] = np.asarray(imgs[int(i)])
        ax.imshow(strip)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(f"{c}\n(n = {len(idx)})", rotation=0, ha="right", va="center", fontsize="medium")
        if um:
            scale_bar(ax, p * float(um) / 2, units_per_um=1 / float(um), loc="lower right")
    ps = meta.pixel_size_um
    size = (f"{ps.value:.4g} µm/px ({ps.trusted})" if ps is not None else
            "pixel size unknown — patches are resized to fit, so no scale bar")
    n_unl = (cq.n_unlabelled.get(label, 0) if cq is not None and label else 0)
    fig.suptitle(f"{meta.id} — image collection, {len(rows)} {cq.kind if cq else 'items'} in {name}; {size}\n"
                 f"rows: {label or 'items'} (random {per_class} each"
                 + (f"; {n_unl} unlabelled not shown" if n_unl else "") + ")", fontsize="medium")
    fig.tight_layout()
    return save(fig, out)
