"""Multiplex images: OME-TIFF (incl. IMC per-ROI OME-TIFFs with a panel), Akoya/PerkinElmer QPTIFF, and plain
TIFFs with an MCMICRO ``markers.csv``. Channels are mapped to the canonical marker vocabulary; the image keeps its
native dtype (uint8/uint16/float32)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from hestdata.curation.markers import read_mapping, read_panel, resolve_all
from hestdata.errors import InputError
from hestdata.model import ChannelSample, PixelSizeEvidence
from hestdata.options import ChannelOptions, UserPixelSize
from hestdata.sources.registry import Source, register_source


def _ome_channels(ome: str) -> list[str]:
    out = []
    for tag in re.findall(r"<Channel\b[^>]*>", ome):
        name = re.search(r'\bName="([^"]*)"', tag)
        fluor = re.search(r'\bFluor="([^"]*)"', tag)
        out.append(name.group(1) if name and name.group(1) else fluor.group(1) if fluor else "")
    return out


def _qptiff_channels(tif: object) -> tuple[list[str], list[int]]:
    """Names and page indices of the full-resolution channel pages of a QPTIFF (vendor XML per page)."""
    names, pages = [], []
    for i, page in enumerate(tif.pages):  # type: ignore[attr-defined]
        desc = page.description or ""
        if "PerkinElmer-QPI-ImageDescription" not in desc:
            continue
        kind = re.search(r"<ImageType>([^<]+)</ImageType>", desc)
        if kind and kind.group(1).strip() != "FullResolution":
            continue
        name = re.search(r"<Name>([^<]*)</Name>", desc) or re.search(r"<Biomarker>([^<]*)</Biomarker>", desc)
        names.append(name.group(1).strip() if name else f"Channel {len(names) + 1}")
        pages.append(i)
    return names, pages


def read_multiplex(path: str | Path, *, sample_id: str, panel: str | Path | None = None,
                   markers_csv: str | Path | None = None, mapping: str | Path | None = None,
                   pixel_size_um: float | None = None, technology: str | None = None) -> ChannelSample:
    """Read a multiplex image and map its channels to canonical markers.

    Channel names come from the QPTIFF vendor XML, the OME-XML, or ``markers_csv`` (``marker_name`` column, in
    channel order). ``panel`` (IMC) resolves metal tags to targets. ``mapping`` (``channel,marker`` CSV)
    overrides; ``-`` drops a channel (e.g. a background metal).
    """
    import tifffile

    from hestdata.sources.images import strict_tiff, tiff_pixel_size_um

    p = Path(path)
    if not p.is_file():
        raise InputError(p, "image file not found")
    with strict_tiff(p, "image"), tifffile.TiffFile(p) as tif:
        embedded, src = tiff_pixel_size_um(tif)
        if tif.is_qpi or p.suffix.lower() == ".qptiff":
            names, pages = _qptiff_channels(tif)
            if not pages:
                raise InputError(p, "no full-resolution channel pages with PerkinElmer XML found")
            arr = np.stack([tif.pages[i].asarray() for i in pages])
            tech = technology or "multiplex"
        else:
            arr = tif.series[0].levels[0].asarray()
            names = _ome_channels(tif.ome_metadata) if tif.ome_metadata else []
            tech = technology or ("imc" if panel is not None else "multiplex")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InputError(p, f"expected (channels, y, x), got shape {arr.shape}")
    flat = [i for i, ch in enumerate(arr) if ch.size == 0 or float(np.nanmax(ch)) == float(np.nanmin(ch))]
    if len(flat) == arr.shape[0]:
        raise InputError(p, f"image is blank: all {arr.shape[0]} channel(s) are constant",
                         "check the file; a blank image cannot be converted")
    if markers_csv is not None:
        import pandas as pd

        mc = pd.read_csv(markers_csv)
        if "marker_name" not in mc.columns:
            raise InputError(markers_csv, "markers.csv needs a 'marker_name' column")
        names = mc["marker_name"].astype(str).tolist()
    if len(names) != arr.shape[0]:
        raise InputError(markers_csv or p, f"{len(names)} channel name(s) for {arr.shape[0]} image channel(s)")
    pnl = read_panel(panel) if panel is not None else None
    mp = read_mapping(mapping) if mapping is not None else None
    markers = resolve_all(names, panel=pnl, mapping=mp, where=p)
    keep = [i for i, m in enumerate(markers) if m is not None]
    ev = PixelSizeEvidence(user=pixel_size_um)
    if embedded:
        ev.embedded, ev.embedded_from = embedded, f"{p.name} {src}"
    if tech == "imc":  # IMC images are the ablation grid: one pixel per 1 µm laser shot
        ev.estimated, ev.estimated_from = 1.0, "IMC ablation grid (1 µm per pixel)"
    if ev.embedded is None and ev.user is None and ev.estimated is None:
        raise InputError(p, "no physical pixel size in the file", "pass --pixel-size-um")
    warnings = [f"{p}: channel {names[i]!r} is constant ({float(arr[i].flat[0]):g} everywhere)"
                for i in flat if markers[i] is not None]
    return ChannelSample(sample_id=sample_id, technology=tech, pixel_size=ev, source_files=[p], source=p,
                         warnings=warnings,
                         image=np.ascontiguousarray(arr[keep]), channels=[names[i] for i in keep],
                         markers=[markers[i] for i in keep],
                         dropped=[names[i] for i, m in enumerate(markers) if m is None])


class MultiplexOptions(ChannelOptions, UserPixelSize):
    """Options of the ``multiplex`` source."""

    technology: Literal["multiplex", "imc"] | None = Field(
        default=None, description="imc or multiplex (default: imc with a panel)")


def _read(inputs: dict[str, Path], sample_id: str, o: MultiplexOptions) -> ChannelSample:
    return read_multiplex(inputs["image"], sample_id=sample_id, panel=inputs.get("panel"),
                          markers_csv=inputs.get("markers_csv"), mapping=inputs.get("mapping"),
                          pixel_size_um=o.pixel_size_um, technology=o.technology)


SOURCE = register_source(Source(
    name="multiplex", summary="multiplex IF / IMC image (OME-TIFF, QPTIFF, TIFF + markers.csv), canonical markers",
    variant="channels", technologies=("multiplex", "imc"), inputs={"image": "OME-TIFF, QPTIFF or TIFF"},
    optional_inputs={"panel": "IMC panel CSV (Metal Tag, Target)", "markers_csv": "MCMICRO markers.csv",
                     "mapping": "channel,marker CSV; '-' drops a channel"},
    options=MultiplexOptions, elements=("images/if", "patches"), reader=_read))
