"""Multiplex samples: ``images/if`` (canonical channel names, native dtype, pyramid), per-marker statistics in
the metadata, and optional grid patch arrays stored losslessly."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hestdata.convert import stages
from hestdata.errors import InputError
from hestdata.metadata import QC, ImageInfo, MarkerInfo, PatchQC
from hestdata.model import ChannelSample
from hestdata.options import ChannelOptions
from hestdata.units import PatchGeometry


def _tile(image: np.ndarray, x0: float, y0: float, win: float, p: int) -> np.ndarray:
    """One (C, p, p) tile: a plain crop when the window is p pixels, else a bilinear resample of the window."""
    from PIL import Image

    if abs(win - p) < 1e-6:
        xi, yi = int(round(x0)), int(round(y0))
        return image[:, yi:yi + p, xi:xi + p]
    chans = []
    for ch in image:
        f = Image.fromarray(ch.astype(np.float32), mode="F")
        r = f.resize((p, p), Image.Resampling.BILINEAR, box=(x0, y0, x0 + win, y0 + win))
        chans.append(np.asarray(r).astype(ch.dtype))
    return np.stack(chans)


def grid_patches(image: np.ndarray, pixel_size_um: float, g: PatchGeometry, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Non-overlapping tiles of ``g`` covering the image (whole tiles only), resampled if the pixel sizes differ;
    returns (N, C, P, P) in the native dtype and the tile centres in µm."""
    from hestdata.curation.levels import check_resolution

    check_resolution(g, pixel_size_um, where=where)
    c, h, w = image.shape
    win = g.patch_size_px * g.pixel_size_um / pixel_size_um
    n_y, n_x = int(h // win), int(w // win)
    tiles = [_tile(image, ix * win, iy * win, win, g.patch_size_px) for iy in range(n_y) for ix in range(n_x)]
    centres = [((ix + 0.5) * win * pixel_size_um, (iy + 0.5) * win * pixel_size_um)
               for iy in range(n_y) for ix in range(n_x)]
    if not tiles:
        return np.zeros((0, c, g.patch_size_px, g.patch_size_px), image.dtype), np.zeros((0, 2))
    return np.stack(tiles), np.asarray(centres)


def convert_channels(req: stages.Request, ms: ChannelSample, o: ChannelOptions, publish_root: bool) -> Path:
    """The multiplex variant's pipeline."""
    from hestdata.curation.markers import marker_stats
    from hestdata.store.sample import SampleWriter

    if ms.image.ndim != 3 or ms.image.shape[0] != len(ms.markers):
        raise InputError(req.where, f"image shape {ms.image.shape} does not hold {len(ms.markers)} marker channel(s)")
    ps = stages.resolve_pixel_size(req)
    infos = [MarkerInfo(name=m.name, marker_id=m.marker_id, nuclear=m.nuclear, channel=ch, channel_index=i, **st)
             for i, (m, ch, st) in enumerate(zip(ms.markers, ms.channels, marker_stats(ms.image), strict=True))]
    tiles = [(g, *grid_patches(ms.image, ps.value, g, req.where)) for g in map(PatchGeometry.parse, o.patches)]
    with SampleWriter(req.root, ms.sample_id, overwrite=req.overwrite) as w:
        hwc = np.moveaxis(ms.image, 0, -1)
        shapes, _ = stages.write_pyramid(w, hwc, ps.value, min_size_px=32, name="if",
                                         channel_names=[m.name for m in ms.markers])
        pqc = {}
        for g, arr, centres in tiles:
            w.write_lossless_patches(g.name, arr, centres, {"pixel_size_um": g.pixel_size_um,
                                                             "markers": [m.name for m in ms.markers]})
            pqc[g.name] = PatchQC(n_patches=len(arr), n_skipped_off_image=0, n_skipped_low_tissue=0,
                                  n_partial_outside_image=0, min_tissue_fraction=0.0, source_pixel_size_um=ps.value,
                                  jpeg_quality=100)
        qc = QC(n_obs=0, n_genes=0, counts_integer=True, patches=pqc, warnings=req.warnings)
        meta = stages.sample_metadata(
            req, pixel_size_um=ps, qc=qc, markers=infos, dropped_channels=ms.dropped,
            panel=req.fields.pop("panel", None) or f"{len(infos)}-plex",
            image=ImageInfo(source_path=str(ms.source), kind="fullres", pixel_size_um=ps.value,
                            width_px=int(hwc.shape[1]), height_px=int(hwc.shape[0]), n_levels=len(shapes)))
        return stages.commit_and_publish(w, req, meta, publish_root)
