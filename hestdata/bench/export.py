"""Patch features in the layouts other tools read.

* STAMP (v2): ``<dest>/<extractor>-<hash8>/<slide>.h5`` with ``feats`` (N, D) float16 and ``coords`` (N, 2) float
  µm top-left; attrs ``stamp_version``, ``extractor``, ``unit="um"``, ``tile_size_um``, ``tile_size_px``,
  ``code_hash``, ``feat_type="tile"``.
* TRIDENT: ``<dest>/features_<encoder>/<slide>.h5`` with ``features`` (N, D) float32 and ``coords`` (N, 2) int64
  level-0 top-left pixels; ``coords`` attrs ``patch_size``, ``patch_size_level0``, ``level0_magnification``,
  ``target_magnification``, ``overlap``, ``level0_width``, ``level0_height``, ``name``.

Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError
from hestdata.store import layout as L

STAMP_VERSION = "2.0.0"


def _slides(root: Any, patch: str, sample_ids: list[str] | None) -> list[str]:
    return [i for i in root.select(patch=patch).ids if sample_ids is None or i in sample_ids]


def _write_h5(path: Path, datasets: dict[str, np.ndarray], attrs: dict[str, Any],
              dataset_attrs: dict[str, dict[str, Any]] | None = None) -> None:
    import h5py

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with h5py.File(tmp, "w") as f:
        for k, v in datasets.items():
            f.create_dataset(k, data=v)
            for ak, av in (dataset_attrs or {}).get(k, {}).items():
                f[k].attrs[ak] = av
        for k, v in attrs.items():
            f.attrs[k] = v
    os.replace(tmp, path)


def export_features(root: str | Path, encoder: Any, dest: str | Path, *, layout: str, patch: str = "224px_1.14286um",
                    sample_ids: list[str] | None = None, batch_size: int = 64, num_workers: int = 0,
                    device: Any = None) -> list[Path]:
    """Embed (cached) and export every slide with ``patch``; returns the written files."""
    from hestdata.bench.embed import embed_samples
    from hestdata.bench.encoders import load_encoder
    from hestdata.store.root import Root

    r, out = Root.open(root), Path(dest)
    enc = load_encoder(encoder)
    ids = _slides(r, patch, sample_ids)
    embs = embed_samples(r, enc, ids, patch=patch, batch_size=batch_size, num_workers=num_workers, device=device)
    written = []
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", enc.name)
    for sid in ids:
        sample = r.sample(sid)
        meta = sample.metadata
        g = sample.patch_group(patch)
        centers = g[L.PATCH_CENTERS][:]
        p = int(g.attrs["patch_size_px"])
        if g.attrs.get("pixel_size_um") is None:  # an image collection fitted to <px>px: no µm coordinates
            raise InputError(sample.path, f"patch array {patch} has no pixel size (an image collection); STAMP and "
                                          "TRIDENT features carry µm or level-0 pixel coordinates")
        mpp = float(g.attrs["pixel_size_um"])
        fov = p * mpp
        top_left = centers - fov / 2
        feats = embs[sid]
        if layout == "stamp":
            path = out / f"{safe}-{enc.fingerprint[:8]}" / f"{sid}.h5"
            _write_h5(path, {"feats": feats.astype(np.float16), "coords": top_left.astype(np.float64)},
                      {"stamp_version": STAMP_VERSION, "extractor": enc.name, "unit": "um", "tile_size_um": fov,
                       "tile_size_px": p, "code_hash": enc.fingerprint[:8], "feat_type": "tile"})
        elif layout == "trident":
            l0 = meta.pixel_size_um.value
            mag0 = float(re.sub(r"[^0-9.]", "", meta.magnification)) if meta.magnification else 10.0 / l0  # 20x ≈ 0.5 µm/px
            path = out / f"features_{safe}" / f"{sid}.h5"
            _write_h5(path, {"features": feats.astype(np.float32), "coords": np.round(top_left / l0).astype(np.int64)},
                      {"encoder": enc.name},
                      {"coords": {"patch_size": p, "patch_size_level0": int(round(fov / l0)),
                                  "level0_magnification": mag0, "target_magnification": mag0 * l0 / mpp,
                                  "overlap": 0, "level0_width": meta.image.width_px if meta.image else 0,
                                  "level0_height": meta.image.height_px if meta.image else 0, "name": sid}})
        else:
            raise ValueError(f"layout must be 'stamp' or 'trident', got {layout!r}")
        written.append(path)
    return written
