"""Per-patch scores (attention, predictions) as a coloured overlay on a slide thumbnail (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hestdata.store import layout as L


def _colour(v: float) -> tuple[int, int, int]:
    """A blue → yellow → red ramp for v in [0, 1]."""
    v = float(np.clip(v, 0, 1))
    if v < 0.5:
        t = v / 0.5
        return int(40 + 215 * t), int(70 + 185 * t), int(200 * (1 - t))
    t = (v - 0.5) / 0.5
    return 255, int(255 * (1 - t)), 0


def render_heatmap(sample: Any, patch: str, scores: np.ndarray, png: str | Path,
                   max_px: int = 1024, alpha: float = 0.45) -> Path:
    """Overlay ``scores`` (one per patch of ``patch``, min-max scaled) on the H&E thumbnail of ``sample`` (a
    :class:`hestdata.store.root.StoredSample`)."""
    from PIL import Image, ImageDraw

    from hestdata.store.root import StoredSample

    sample = StoredSample.of(sample)
    he = sample.image(L.IMAGE_HE)
    ms = he.attrs["ome"]["multiscales"][0]
    k = next((i for i, d in enumerate(ms["datasets"]) if max(he[d["path"]].shape[1:]) <= max_px), len(ms["datasets"]) - 1)
    thumb = np.moveaxis(he[ms["datasets"][k]["path"]][:], 0, -1)
    tr = ms["coordinateTransformations"][0]
    ps = (tr["transformations"][0] if tr["type"] == "sequence" else tr)["scale"][-1] * 2 ** k
    g = sample.patch_group(patch)
    centres = g[L.PATCH_CENTERS][:]
    half = int(g.attrs["patch_size_px"]) * float(g.attrs["pixel_size_um"]) / 2
    s = np.asarray(scores, dtype=np.float64)
    if len(s) != len(centres):
        raise ValueError(f"{len(s)} scores for {len(centres)} patches")
    s = (s - s.min()) / (np.ptp(s) or 1.0)
    base = Image.fromarray(thumb).convert("RGBA")
    layer = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    for (cx, cy), v in zip(centres, s, strict=True):
        draw.rectangle([(cx - half) / ps, (cy - half) / ps, (cx + half) / ps, (cy + half) / ps],
                       fill=(*_colour(v), int(255 * alpha)))
    out = Image.alpha_composite(base, layer).convert("RGB")
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    out.save(png)
    return Path(png)
