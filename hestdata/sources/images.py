"""Decode H&E images (JPEG, PNG, TIFF incl. pyramidal / BigTIFF) into one RGB uint8 array.

One full-resolution copy at most: JPEG goes through libjpeg-turbo (simplejpeg) straight into the array, TIFF
level 0 through tifffile. Embedded pixel sizes are read from TIFF resolution tags or OME-XML.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from hestdata.errors import InputError
from hestdata.model import RasterImage

JPEG_SUFFIXES = {".jpg", ".jpeg"}
PNG_SUFFIXES = {".png"}
TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8", ".svs"}


def _to_rgb(arr: np.ndarray, path: Path) -> np.ndarray:
    """Normalise (y, x[, c]) or (c, y, x) arrays of any common dtype to (y, x, 3) uint8."""
    if arr.ndim == 3 and arr.shape[0] in (3, 4) and arr.shape[2] not in (3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(path, f"unsupported image shape {arr.shape}; expected (y, x), (y, x, 3) or (y, x, 4)")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.uint16:
        return np.ascontiguousarray((arr >> 8).astype(np.uint8))
    if arr.dtype == bool:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.floating):
        hi = float(np.nanmax(arr)) if arr.size else 1.0
        scale = 255.0 if hi <= 1.0 else 1.0
        return np.ascontiguousarray(np.clip(np.nan_to_num(arr) * scale, 0, 255).astype(np.uint8))
    raise InputError(path, f"unsupported pixel type {arr.dtype}")


def tiff_pixel_size_um(tif: object) -> tuple[float | None, str | None]:
    """Pixel size from OME-XML PhysicalSizeX or the TIFF X resolution tag (µm/px), if present."""
    import re

    ome = getattr(tif, "ome_metadata", None)
    if ome:
        m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
        unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
        if m and (unit is None or unit.group(1) in ("µm", "um", "micron", "\u00b5m")):
            return float(m.group(1)), "OME-XML PhysicalSizeX"
    page = tif.pages[0]  # type: ignore[attr-defined]
    tags = page.tags
    if "XResolution" in tags and "ResolutionUnit" in tags:
        num, den = tags["XResolution"].value
        unit = int(tags["ResolutionUnit"].value)
        if num and den:
            per_unit = num / den
            if unit == 3 and per_unit > 1:  # centimetre
                return 1e4 / per_unit, "TIFF XResolution (cm)"
            if unit == 2 and per_unit > 1:  # inch; 72/96/300 dpi are screen/print defaults, not scans
                if per_unit not in (72.0, 96.0, 150.0, 300.0):
                    return 25400.0 / per_unit, "TIFF XResolution (inch)"
    desc = getattr(page, "description", "") or ""
    m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)
    if m:
        return float(m.group(1)), "Aperio MPP"
    return None, None


class _TiffLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.ERROR or any(w in msg.lower() for w in ("missing", "corrupt", "truncat")):
            self.messages.append(re.sub(r"^<[^>]*>\s*", "", msg))


@contextlib.contextmanager
def strict_tiff(path: str | Path, what: str | None = None) -> Iterator[None]:
    """Make tifffile's logged data problems errors: a truncated TIFF read with ``asarray`` is zero-filled and only
    logged ("Missing data are zeroed"), which would store black channels as if they were measured.

    With ``what``, any other failure inside the block becomes an :class:`InputError` ``cannot read <what>``
    naming the file (an ``InputError`` raised inside passes through unchanged)."""
    log = logging.getLogger("tifffile")
    handler = _TiffLog()
    log.addHandler(handler)
    try:
        yield
    except InputError:
        raise
    except Exception as exc:
        if what is None:
            raise
        raise InputError(path, f"cannot read {what} ({type(exc).__name__}: {exc})") from exc
    finally:
        log.removeHandler(handler)
    if handler.messages:
        raise InputError(path, f"truncated or corrupt TIFF: {handler.messages[0]}",
                         "the file is incomplete; copy it again")


def load_image(path: str | Path, kind: str = "fullres", scale_to_fullres: float = 1.0) -> RasterImage:
    """Decode ``path`` into a :class:`RasterImage`; raise ``InputError`` naming the file on any failure."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "image file not found")
    suffix = p.suffix.lower()
    embedded: float | None = None
    try:
        if suffix in JPEG_SUFFIXES:
            import simplejpeg

            data = p.read_bytes()
            arr = simplejpeg.decode_jpeg(data, colorspace="RGB")
            del data
        elif suffix in PNG_SUFFIXES:
            from PIL import Image

            with Image.open(p) as im:
                im.load()
                if im.mode not in ("RGB", "RGBA", "L", "I;16", "I"):
                    im = im.convert("RGB")
                arr = np.asarray(im)
        elif suffix in TIFF_SUFFIXES:
            import tifffile

            with strict_tiff(p), tifffile.TiffFile(p) as tif:
                embedded, _src = tiff_pixel_size_um(tif)
                arr = tif.series[0].levels[0].asarray()
            if arr.ndim == 4 and arr.shape[0] == 1:
                arr = arr[0]
        else:
            raise InputError(p, f"unsupported image format '{suffix}'", "use TIFF, JPEG or PNG")
    except InputError:
        raise
    except Exception as exc:  # decoder errors come in many types; name the file and the cause
        raise InputError(p, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    rgb = _to_rgb(arr, p)
    del arr
    return RasterImage(
        array=rgb,
        source_path=p,
        kind=kind,  # type: ignore[arg-type]
        scale_to_fullres=scale_to_fullres,
        embedded_pixel_size_um=embedded,
    )


def blank_reason(arr: np.ndarray) -> str | None:
    """Why ``arr`` looks blank ('all black', 'all white', 'uniform'), or None if it has content.

    Checked on a strided sample so that it costs milliseconds on a 10k x 10k image.
    """
    step = max(1, int(np.sqrt(arr.shape[0] * arr.shape[1] / 250_000)))
    sample = arr[::step, ::step].astype(np.float32)
    mean, std = float(sample.mean()), float(sample.std())
    if std < 2.0:
        if mean < 10:
            return f"all black (mean {mean:.1f}, std {std:.2f})"
        if mean > 245:
            return f"all white (mean {mean:.1f}, std {std:.2f})"
        return f"uniform (mean {mean:.1f}, std {std:.2f})"
    return None
