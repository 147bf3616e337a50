"""H&E image files (JPEG, PNG, TIFF incl. pyramidal / BigTIFF / OME-TIFF) as lazy RGB rasters.

TIFF level 0 is read tile by tile (or strip by strip) through tifffile, so a gigapixel image is never held
whole; JPEG goes through libjpeg-turbo (simplejpeg) — its overview by DCT scaling, level 0 decoded once when a
conversion needs it. Embedded pixel sizes are read from TIFF resolution tags or OME-XML.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from hestdata.errors import InputError
from hestdata.model import RasterImage
from hestdata.raster import ArrayRaster, Raster, channel_axis, to_rgb

JPEG_SUFFIXES = {".jpg", ".jpeg"}
PNG_SUFFIXES = {".png"}
TIFF_SUFFIXES = {".tif", ".tiff", ".btf", ".tf8", ".svs"}


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


class JpegRaster(Raster):
    """A JPEG file: dimensions from the header, overview by libjpeg-turbo's DCT scaling (1/2 … 1/8, never a full
    decode), level 0 decoded once on the first ``read`` — JPEG has no random access — and dropped by
    :meth:`release`."""

    def __init__(self, path: str | Path) -> None:
        import simplejpeg

        self.source_path = Path(path)
        with self.source_path.open("rb") as f:
            head = f.read(1 << 20)
        try:
            self.height_px, self.width_px, _, _ = simplejpeg.decode_jpeg_header(head)
        except ValueError as exc:
            raise InputError(self.source_path, f"cannot decode image (not a readable JPEG: {exc})") from exc
        self._full: np.ndarray | None = None
        self._lock = threading.Lock()

    def _decode(self, **scale: int) -> np.ndarray:
        import simplejpeg

        try:
            return simplejpeg.decode_jpeg(self.source_path.read_bytes(), colorspace="RGB", **scale)
        except (ValueError, OSError) as exc:
            raise InputError(self.source_path, f"cannot decode image ({type(exc).__name__}: {exc})") from exc

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        with self._lock:
            if self._full is None:
                self._full = self._decode()
        return self._full[y0:y1, x0:x1]

    def overview(self, max_px: int = 1024) -> np.ndarray:
        if self._full is not None:
            return ArrayRaster(self._full, self.source_path).overview(max_px)
        f = max(self.height_px, self.width_px) / max_px
        k = 8 if f >= 8 else 4 if f >= 4 else 2 if f >= 2 else 1
        return self._decode(min_height=-(-self.height_px // k), min_width=-(-self.width_px // k))

    def probe(self) -> np.ndarray:
        return self.overview(512)

    def release(self) -> None:
        with self._lock:
            self._full = None


class TiffRaster(Raster):
    """Level 0 of a TIFF's first series (TIFF, BigTIFF, OME-TIFF, QPTIFF, SVS), read lazily: by ``pread`` of the
    rows asked for when the pixels are uncompressed and contiguous, else by tifffile decoding only the tiles or
    strips a read touches (in parallel). A file stored as one compressed strip has no random access and is
    decoded once, on demand.
    Truncated data is an error naming the file, never zeros. The overview comes from the file's own pyramid
    when it has one."""

    def __init__(self, path: str | Path) -> None:
        import tifffile

        self.source_path = Path(path)
        with strict_tiff(self.source_path, "image"), tifffile.TiffFile(self.source_path) as tif:
            self.embedded_pixel_size_um, _ = tiff_pixel_size_um(tif)
            series = tif.series[0]
            shape = tuple(int(v) for v in series.levels[0].shape)
            self._level_shapes = [tuple(int(v) for v in lv.shape) for lv in series.levels]
            self.dtype = np.dtype(series.dtype)
        self._lead = 0
        while len(shape) > 3 and shape[0] == 1:  # (1, y, x, c) and the like
            shape, self._lead = shape[1:], self._lead + 1
        if len(shape) not in (2, 3):
            raise InputError(self.source_path, f"unsupported image shape {shape}; expected (y, x), (y, x, c) or (c, y, x)")
        self._caxis = channel_axis(shape)
        self.height_px, self.width_px = (shape[1], shape[2]) if self._caxis == 0 else (shape[0], shape[1])
        self._arr: Any = None  # something indexable like the series' level 0, opened on the first read
        self._float_scale: float | None = None
        self._lock = threading.Lock()

    def _open(self) -> Any:
        import tifffile

        with tifffile.TiffFile(self.source_path) as tif:
            lvl = tif.series[0].levels[0]
            offset = lvl.dataoffset if lvl.keyframe.compression == 1 else None
            if offset is not None:  # uncompressed and contiguous: rows are read with pread, no decode, no mmap
                dtype = np.dtype(lvl.dtype).newbyteorder(tif.byteorder)
                return _ContiguousRows(self.source_path, int(offset), tuple(int(v) for v in lvl.shape), dtype)
            if len(lvl.keyframe.dataoffsets) == 1:  # one compressed strip: no random access, decode once
                return lvl.asarray()
        return _Segments(self.source_path)

    def _index(self, y0: int, y1: int, x0: int, x1: int) -> tuple[Any, ...]:
        lead = (0,) * self._lead
        if self._caxis == 0:
            return lead + (slice(None), slice(y0, y1), slice(x0, x1))
        return lead + (slice(y0, y1), slice(x0, x1))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        with self._lock, strict_tiff(self.source_path, "image"):
            if self._arr is None:
                self._arr = self._open()
            region = np.asarray(self._arr[self._index(y0, y1, x0, x1)])
        if self._caxis == 0:
            region = np.moveaxis(region, 0, -1)
        if np.issubdtype(self.dtype, np.floating) and self._float_scale is None:
            hi = float(np.nanmax(self.overview(512)))  # one scale for the whole image, not per region
            self._float_scale = 255.0 if hi <= 1.0 else 1.0
        return to_rgb(region, self.source_path, self._float_scale)

    def _pyramid_level(self, max_px: int) -> int | None:
        """The smallest stored level whose longer side is still ≥ ``max_px`` (None if the file has one level)."""
        if len(self._level_shapes) < 2:
            return None
        sizes = [max(s[-3:-1]) if self._caxis != 0 else max(s[-2:]) for s in self._level_shapes]
        fits = [i for i, m in enumerate(sizes) if m >= max_px]
        return fits[-1] if fits else 0

    def overview(self, max_px: int = 1024) -> np.ndarray:
        import tifffile

        level = self._pyramid_level(max_px)
        if level is None or level == 0:
            return super().overview(max_px)
        with strict_tiff(self.source_path, "image"), tifffile.TiffFile(self.source_path) as tif:
            arr = tif.series[0].levels[level].asarray()
        while arr.ndim > 3 and arr.shape[0] == 1:
            arr = arr[0]
        rgb = to_rgb(arr, self.source_path, 255.0 if np.issubdtype(arr.dtype, np.floating)
                     and float(np.nanmax(arr)) <= 1.0 else None)
        step = max(1, int(max(rgb.shape[:2]) // max_px))
        return rgb[::step, ::step]

    def probe(self) -> np.ndarray:
        if self._pyramid_level(512) not in (None, 0):
            return self.overview(512)
        return super().probe()

    def release(self) -> None:
        with self._lock:
            self._arr = None


class _Segments:
    """Index level 0 of a tiled or multi-strip TIFF: tifffile decodes only the segments a selection touches, on
    every core."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __getitem__(self, index: tuple[Any, ...]) -> np.ndarray:
        import tifffile

        return tifffile.imread(self.path, series=0, level=0, selection=index, maxworkers=os.cpu_count() or 1)


class _ContiguousRows:
    """Index (rows, cols) boxes of an uncompressed, contiguous TIFF image by reading just those rows from the file
    (a memory map would count the whole file against the address space and, once touched, the resident set)."""

    def __init__(self, path: Path, offset: int, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.offset, self.shape, self.dtype = path, offset, shape, dtype

    def __getitem__(self, index: tuple[Any, ...]) -> np.ndarray:
        shape, index = list(self.shape), list(index)
        while len(shape) > 3 or (len(shape) == 3 and isinstance(index[0], int)):  # leading singleton axes
            shape, index = shape[1:], index[1:]
        planar = len(index) == 3  # (c, y, x)
        ys, xs = index[-2], index[-1]
        planes = range(shape[0]) if planar else [0]
        h, w = (shape[1], shape[2]) if planar else (shape[0], shape[1])
        per_px = self.dtype.itemsize * (1 if planar or len(shape) == 2 else shape[2])
        out = []
        with open(self.path, "rb") as f:
            for c in planes:
                start = self.offset + (c * h * w + ys.start * w) * per_px
                n = (ys.stop - ys.start) * w * per_px
                buf = os.pread(f.fileno(), n, start)
                if len(buf) != n:
                    raise InputError(self.path, "truncated or corrupt TIFF: image data end before the declared size",
                                     "the file is incomplete; copy it again")
                rows = np.frombuffer(buf, dtype=self.dtype).reshape((ys.stop - ys.start, w, -1))
                out.append(rows[:, xs.start:xs.stop])
        block = np.stack([o[..., 0] for o in out]) if planar else out[0]
        return block if len(shape) == 3 or planar else block[..., 0]


MAX_IMAGE_PIXELS = 50_000_000_000  # 224k x 224k: above any slide scanned today (HEST-1k's largest ~2e10 px)
MAX_DECODED_PIXELS = 2_000_000_000  # JPEG / PNG are decoded whole (no random access): 6 GB of RGB at this cap


def image_limits() -> tuple[int, int]:
    """(largest image, largest whole-decoded JPEG/PNG) in pixels; ``HESTDATA_MAX_IMAGE_PIXELS`` and
    ``HESTDATA_MAX_DECODED_PIXELS`` override them."""
    import os

    def env(name: str, default: int) -> int:
        try:
            return int(float(os.environ.get(name, default)))
        except ValueError:
            raise InputError(None, f"${name} must be a number of pixels, got {os.environ[name]!r}") from None

    return env("HESTDATA_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS), env("HESTDATA_MAX_DECODED_PIXELS", MAX_DECODED_PIXELS)


def check_image_size(path: Path, height_px: int, width_px: int, decoded_whole: bool) -> None:
    """Refuse, before anything is allocated, an image whose declared size is above the limits (the numbers and
    the override in the message)."""
    cap, whole = image_limits()
    n = int(height_px) * int(width_px)
    if n > cap:
        raise InputError(path, f"declares {width_px:,} x {height_px:,} px ({n / 1e9:.1f} gigapixels), above the "
                               f"limit of {cap / 1e9:.1f} gigapixels", "a corrupt header? if the image is real, "
                               "raise $HESTDATA_MAX_IMAGE_PIXELS")
    if decoded_whole and n > whole:
        raise InputError(path, f"{width_px:,} x {height_px:,} px ({n / 1e9:.2f} gigapixels, {3 * n / 2**30:.1f} GiB "
                               f"decoded): a {path.suffix.lstrip('.').upper()} is decoded whole and this is above "
                               f"{whole / 1e9:.1f} gigapixels", "convert it to a tiled pyramidal TIFF (e.g. vips "
                               "tiffsave --tile --pyramid), or raise $HESTDATA_MAX_DECODED_PIXELS")


def open_raster(path: str | Path) -> Raster:
    """A lazy :class:`~hestdata.raster.Raster` over an image file (JPEG, PNG, TIFF family); errors name the file.
    Declared sizes are checked against :func:`image_limits` before any pixel is decoded."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "image file not found")
    suffix = p.suffix.lower()
    try:
        if suffix in JPEG_SUFFIXES:
            r: Raster = JpegRaster(p)
            check_image_size(p, r.height_px, r.width_px, decoded_whole=True)
            return r
        if suffix in TIFF_SUFFIXES:
            r = TiffRaster(p)
            check_image_size(p, r.height_px, r.width_px, decoded_whole=False)
            return r
        if suffix in PNG_SUFFIXES:
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = None  # our own limit below, with the file named
            with Image.open(p) as im:  # the header only
                check_image_size(p, im.size[1], im.size[0], decoded_whole=True)
                if im.mode in ("RGB", "RGBA", "L") and _png_bit_depth(p) == 8:  # into one array: ~1x at peak
                    return ArrayRaster(_png_decode(p, (im.size[1], im.size[0])), p)
                im.load()  # palette, 16-bit, ...: through Pillow (its own copy, then numpy's: ~3x at peak)
                if im.mode not in ("RGB", "RGBA", "L", "I;16", "I"):
                    im = im.convert("RGB")
                return ArrayRaster(np.asarray(im), p)
    except InputError:
        raise
    except Exception as exc:  # decoder errors come in many types; name the file and the cause
        raise InputError(p, f"cannot decode image ({type(exc).__name__}: {exc})") from exc
    raise InputError(p, f"unsupported image format '{suffix}'", "use TIFF, JPEG or PNG")


def _png_bit_depth(path: Path) -> int:
    """Bits per sample from the PNG's IHDR chunk (byte 24: signature 8 + length 4 + type 4 + width 4 + height 4).
    Pillow opens 16-bit RGB(A) as 8-bit mode ``RGB``, so its mode alone does not say what libpng would return."""
    with path.open("rb") as fh:
        head = fh.read(25)
    return head[24] if len(head) == 25 and head[12:16] == b"IHDR" else 0


def _png_decode(path: Path, shape_hw: tuple[int, int]) -> np.ndarray:
    """An 8-bit PNG decoded by libpng / libspng (imagecodecs) into one array — Pillow would hold the pixels in its
    own 4-byte-per-pixel buffer and copy them out again (a 13k² PNG peaked at 1.6 GiB that way, 0.5 GiB here)."""
    import imagecodecs

    arr = imagecodecs.png_decode(path.read_bytes())
    if tuple(arr.shape[:2]) != tuple(shape_hw) or arr.dtype != np.uint8:
        raise InputError(path, f"decoded {arr.shape} {arr.dtype}, the header says {shape_hw[1]} x {shape_hw[0]} px "
                               "8-bit")
    return arr


def load_image(path: str | Path, kind: str = "fullres", scale_to_fullres: float = 1.0) -> RasterImage:
    """A :class:`RasterImage` over ``path`` (read lazily); raise ``InputError`` naming the file on any failure."""
    raster = open_raster(path)
    return RasterImage(raster=raster, source_path=Path(path), kind=kind,  # type: ignore[arg-type]
                       scale_to_fullres=scale_to_fullres,
                       embedded_pixel_size_um=getattr(raster, "embedded_pixel_size_um", None))


def _blank(sample: np.ndarray) -> str | None:
    sample = sample.astype(np.float32)
    mean, std = float(sample.mean()), float(sample.std())
    if std < 2.0:
        if mean < 10:
            return f"all black (mean {mean:.1f}, std {std:.2f})"
        if mean > 245:
            return f"all white (mean {mean:.1f}, std {std:.2f})"
        return f"uniform (mean {mean:.1f}, std {std:.2f})"
    return None


def blank_reason(image: Raster | np.ndarray) -> str | None:
    """Why an image looks blank ('all black', 'all white', 'uniform'), or None if it has content.

    Judged on a cheap probe (a strided sample, a stored pyramid level, a DCT-scaled decode, or a grid of small
    windows); a probe that looks blank is confirmed on a full overview before anything is called blank.
    """
    if isinstance(image, np.ndarray):
        step = max(1, int(np.sqrt(image.shape[0] * image.shape[1] / 250_000)))
        return _blank(image[::step, ::step])
    if _blank(image.probe()) is None:
        return None
    return _blank(image.overview(1024))
