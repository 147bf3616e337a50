"""Whole-slide images through OpenSlide (SVS, NDPI, MRXS, SCN, generic tiled TIFF, DICOM) or tifffile (OME-TIFF),
read region by region — a slide is never decoded whole.

Microns per pixel: OpenSlide's ``openslide.mpp-x``, then the TIFF resolution tags, then OME-XML, then an explicit
``pixel_size_um``; without any, the read fails (never a guess). Values above 50 µm/px are screen-resolution
defaults (72 dpi = 352.8 µm/px), not scans, and are refused the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, model_validator

from hestdata.curation.levels import finest_level_for
from hestdata.errors import InputError
from hestdata.model import PixelSizeEvidence, SlideSample
from hestdata.options import SlideOptions, UserPixelSize
from hestdata.sources.registry import Source, register_source
from hestdata.units import DEFAULT_SLIDE_TILE, PatchGeometry

PLAUSIBLE_MAX_UM = 50.0


@dataclass
class WSI:
    path: Path
    backend: str  # openslide | tifffile
    handle: Any
    level_dimensions: list[tuple[int, int]]  # (width, height)
    level_downsamples: list[float]
    pixel_size: PixelSizeEvidence
    magnification: str | None = None

    @property
    def width(self) -> int:
        return self.level_dimensions[0][0]

    @property
    def height(self) -> int:
        return self.level_dimensions[0][1]

    def read_region(self, level: int, x0: int, y0: int, w: int, h: int) -> np.ndarray:
        """(h, w, 3) uint8 of a level; ``x0, y0`` in level-0 pixels (OpenSlide's convention), zero outside."""
        if self.backend == "openslide":
            img = self.handle.read_region((int(x0), int(y0)), level, (int(w), int(h)))
            rgba = np.asarray(img)
            rgb = np.ascontiguousarray(rgba[:, :, :3])
            alpha = rgba[:, :, 3]
            if (alpha != 255).any():  # OpenSlide marks outside-the-slide as transparent: make it black (zero)
                rgb[alpha == 0] = 0
            return rgb
        arr = self.handle[level]
        ds = self.level_downsamples[level]
        lx, ly = int(round(x0 / ds)), int(round(y0 / ds))
        out = np.zeros((h, w, 3), np.uint8)
        lh, lw = arr.shape[:2]
        sx0, sy0, sx1, sy1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
        if sx1 > sx0 and sy1 > sy0:
            out[sy0 - ly:sy1 - ly, sx0 - lx:sx1 - lx] = np.asarray(arr[sy0:sy1, sx0:sx1])[..., :3]
        return out

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample``."""
        return finest_level_for(1.0, downsample, self.level_downsamples)


def open_wsi(path: str | Path, *, pixel_size_um: float | None = None) -> WSI:
    """Open a slide with OpenSlide (tifffile for OME-TIFF); its µm/px from the file or ``pixel_size_um``."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "slide file not found")
    ev = PixelSizeEvidence(user=pixel_size_um)
    if not p.name.lower().endswith((".ome.tif", ".ome.tiff")):
        try:
            import openslide

            s = openslide.OpenSlide(str(p))
            mpp = s.properties.get("openslide.mpp-x")
            if mpp:
                ev.embedded, ev.embedded_from = float(mpp), "openslide.mpp-x"
            mag = s.properties.get("openslide.objective-power")
            w = WSI(p, "openslide", s, list(s.level_dimensions), list(s.level_downsamples), ev,
                    f"{mag}x" if mag else None)
            return _checked(w)
        except ImportError:
            pass
        except Exception as exc:  # OpenSlide's errors: not a slide it knows; try tifffile below
            if p.suffix.lower() not in (".tif", ".tiff"):
                raise InputError(p, f"OpenSlide cannot open the slide ({type(exc).__name__}: {exc})") from exc
    import tifffile
    import zarr

    from hestdata.sources.images import tiff_pixel_size_um

    try:
        tif = tifffile.TiffFile(p)
        series = tif.series[0]
        store = tifffile.imread(p, aszarr=True)
        z = zarr.open(store, mode="r")
        arrays = [z[str(i)] for i in range(len(series.levels))] if hasattr(z, "keys") else [z]
    except Exception as exc:
        raise InputError(p, f"cannot read slide ({type(exc).__name__}: {exc})") from exc
    emb, src = tiff_pixel_size_um(tif)
    if emb:
        ev.embedded, ev.embedded_from = emb, src
    dims = [(int(a.shape[1]), int(a.shape[0])) for a in arrays]
    downs = [dims[0][0] / d[0] for d in dims]
    return _checked(WSI(p, "tifffile", arrays, dims, downs, ev))


def _checked(w: WSI) -> WSI:
    from hestdata.sources.images import check_image_size

    check_image_size(w.path, w.level_dimensions[0][1], w.level_dimensions[0][0], decoded_whole=False)
    ev = w.pixel_size
    if ev.embedded is not None and ev.embedded > PLAUSIBLE_MAX_UM:
        ev.embedded = None  # 72/96 dpi screen defaults, not a scan
    if ev.embedded is None and ev.user is None:
        raise InputError(w.path, "no microns-per-pixel in the slide (OpenSlide, TIFF tags, OME-XML)",
                         "pass --pixel-size-um; a pixel size is never guessed")
    return w


def read_wsi(path: str | Path, *, sample_id: str, pixel_size_um: float | None = None) -> SlideSample:
    """Open a whole slide as an image-only sample (regions are read on demand by the conversion)."""
    w = open_wsi(path, pixel_size_um=pixel_size_um)
    return SlideSample(sample_id=sample_id, technology="wsi", pixel_size=w.pixel_size, source_files=[w.path],
                       slide=w, magnification=w.magnification)


class WSIOptions(SlideOptions, UserPixelSize):
    """Options of the ``wsi`` source; ``tile_px``/``tile_um`` are a shorthand for one tile geometry."""

    aliases: ClassVar[dict[str, str]] = {"tile_px": "patches", "tile_um": "patches"}

    tile_px: int | None = Field(default=None, ge=8, le=4096, description="tile size in pixels (with tile_um)")
    tile_um: float | None = Field(default=None, gt=0, description="tile size in µm (STAMP: 256; TITAN: 512 px at 20x)")

    @model_validator(mode="after")
    def _tile(self) -> WSIOptions:
        if self.tile_px is None and self.tile_um is None:
            return self
        if "patches" in self.model_fields_set:
            raise ValueError("give either patches or tile_px/tile_um, not both")
        px = self.tile_px or DEFAULT_SLIDE_TILE.patch_size_px
        um = self.tile_um or DEFAULT_SLIDE_TILE.field_of_view_um
        g = DEFAULT_SLIDE_TILE if (px, um) == (224, 256.0) else PatchGeometry(px, um / px)
        object.__setattr__(self, "patches", [g.name])
        return self


def _read(inputs: dict[str, Path], sample_id: str, o: WSIOptions) -> SlideSample:
    return read_wsi(inputs["slide"], sample_id=sample_id, pixel_size_um=o.pixel_size_um)


SOURCE = register_source(Source(
    name="wsi", summary="whole-slide image (SVS, NDPI, MRXS, SCN, tiled TIFF, DICOM, OME-TIFF), read by region",
    variant="slide", technologies=("wsi",), inputs={"slide": "the slide file"}, options=WSIOptions,
    elements=("images/he", "shapes/tissue", "patches"), reader=_read))
