"""Write a multiplex sample: ``images/if`` (canonical channel names, native dtype, pyramid), per-marker
statistics in the metadata, and optional grid patch arrays stored losslessly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hestdata._version import __version__
from hestdata.errors import InputError
from hestdata.metadata import QC, ImageInfo, MarkerInfo, PatchQC, SampleMetadata, now_iso
from hestdata.sources.multiplex import MultiplexSample, marker_stats
from hestdata.units import PatchGeometry


def grid_patches(image: np.ndarray, pixel_size_um: float, g: PatchGeometry, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping tiles of ``g`` covering the image (whole tiles only), resampled if the pixel sizes differ;
    returns (N, C, P, P) in the native dtype and the tile centres in µm."""
    from PIL import Image

    if pixel_size_um > g.pixel_size_um * 1.5:
        raise InputError(where, f"cannot make {g.name} patches from a {pixel_size_um:g} µm/px image (limit 1.5x)")
    c, h, w = image.shape
    win = g.patch_size_px * g.pixel_size_um / pixel_size_um
    n_y, n_x = int(h // win), int(w // win)
    tiles, centres = [], []
    for iy in range(n_y):
        for ix in range(n_x):
            x0, y0 = ix * win, iy * win
            chans = []
            for ch in image:
                if abs(win - g.patch_size_px) < 1e-6:
                    xi, yi = int(round(x0)), int(round(y0))
                    chans.append(ch[yi:yi + g.patch_size_px, xi:xi + g.patch_size_px])
                else:
                    f = Image.fromarray(ch.astype(np.float32), mode="F")
                    r = f.resize((g.patch_size_px, g.patch_size_px), Image.Resampling.BILINEAR,
                                 box=(x0, y0, x0 + win, y0 + win))
                    chans.append(np.asarray(r).astype(ch.dtype))
            tiles.append(np.stack(chans))
            centres.append(((x0 + win / 2) * pixel_size_um, (y0 + win / 2) * pixel_size_um))
    if not tiles:
        return np.zeros((0, c, g.patch_size_px, g.patch_size_px), image.dtype), np.zeros((0, 2))
    return np.stack(tiles), np.asarray(centres)


def convert_multiplex(ms: MultiplexSample, root: str | Path, *, patches: Sequence[str] = (), overwrite: bool = False,
                      metadata: dict[str, Any] | None = None, publish_root: bool = True,
                   input_sha256: str | None = None) -> Path:

    from hestdata.curation.pixel_size import resolve_pixel_size
    from hestdata.curation.pyramid import iter_pyramid, pyramid_shapes
    from hestdata.store.catalog import publish
    from hestdata.store.sample import SampleWriter

    extra = dict(metadata or {})
    ps, warns = resolve_pixel_size(ms.pixel_size, ms.technology, None, str(ms.source))
    stats = marker_stats(ms.image)
    infos = [MarkerInfo(name=m.name, marker_id=m.marker_id, nuclear=m.nuclear, channel=ch, channel_index=i, **st)
             for i, (m, ch, st) in enumerate(zip(ms.markers, ms.channels, stats, strict=True))]
    geometries = [PatchGeometry.parse(p) for p in patches]
    tiles = [(g, *grid_patches(ms.image, ps.value, g, str(ms.source))) for g in geometries]
    with SampleWriter(root, ms.sample_id, overwrite=overwrite) as w:
        hwc = np.moveaxis(ms.image, 0, -1)
        shapes = pyramid_shapes(hwc.shape[0], hwc.shape[1], min_size_px=32)
        w.write_image(shapes, hwc.shape[2], hwc.dtype, ps.value, iter_pyramid(hwc, len(shapes)), name="if",
                      channel_names=[m.name for m in ms.markers])
        pqc = {}
        for g, arr, centres in tiles:
            w.write_lossless_patches(g.name, arr, centres, {"pixel_size_um": g.pixel_size_um,
                                                             "markers": [m.name for m in ms.markers]})
            pqc[g.name] = PatchQC(n_patches=len(arr), n_skipped_off_image=0, n_skipped_low_tissue=0,
                                  n_partial_outside_image=0, min_tissue_fraction=0.0, source_pixel_size_um=ps.value,
                                  jpeg_quality=100)
        qc = QC(n_obs=0, n_genes=0, counts_integer=True, patches=pqc, warnings=ms.warnings + warns)
        meta = SampleMetadata(
            id=ms.sample_id, technology=ms.technology, pixel_size_um=ps, qc=qc, markers=infos,
            dropped_channels=ms.dropped, panel=extra.pop("panel", None) or f"{len(infos)}-plex",
            image=ImageInfo(source_path=str(ms.source), kind="fullres", pixel_size_um=ps.value,
                            width_px=int(hwc.shape[1]), height_px=int(hwc.shape[0]), n_levels=len(shapes)),
            hestdata_version=__version__, created_at=now_iso(), input_sha256=input_sha256, **extra)
        path = w.commit(meta)
    if publish_root:
        publish(root, [ms.sample_id])
    return path
