"""Zarr v3 JPEG codec for patch arrays (``hestdata.jpeg``), registered with zarr on import and through the
``zarr.codecs`` entry point, so plain ``zarr.open`` reads patch arrays once hestdata is installed.

One chunk = one patch ``(1, H, W, C)`` uint8 (C = 1 or 3) encoded as a baseline JFIF by libjpeg-turbo
(simplejpeg). The loader bypasses zarr and hands these same bytes to nvJPEG / libjpeg-turbo directly.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.core.common import JSON, parse_named_configuration
from zarr.registry import register_codec

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

CODEC_NAME = "hestdata.jpeg"
_SUBSAMPLING = ("444", "422", "420")


def encode_jpeg(arr: np.ndarray, quality: int, subsampling: str) -> bytes:
    """JPEG bytes of an (H, W, C) uint8 array, C in (1, 3)."""
    import simplejpeg

    a = np.ascontiguousarray(arr)
    if a.ndim == 2:
        a = a[:, :, None]
    cs = "GRAY" if a.shape[2] == 1 else "RGB"
    return simplejpeg.encode_jpeg(a, quality=quality, colorspace=cs, colorsubsampling=subsampling)


def decode_jpeg(data: bytes | memoryview | np.ndarray, channels: int = 3) -> np.ndarray:
    """(H, W, C) uint8 from JPEG bytes (libjpeg-turbo)."""
    import simplejpeg

    return simplejpeg.decode_jpeg(bytes(data) if not isinstance(data, bytes) else data,
                                  colorspace="GRAY" if channels == 1 else "RGB")


_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC3: "lossless"}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def jpeg_frame(data: bytes) -> tuple[str, int, int, int, int] | None:
    """(process, precision, height, width, components) from a JPEG's start-of-frame marker, or None when ``data`` is
    not a JPEG or has none. ``process`` is baseline, extended, progressive, lossless or arithmetic."""
    if data[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in _STANDALONE:
            i += 2
            continue
        length = int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 10 > n:
                return None
            seg = data[i + 4:i + 10]
            return (_SOF.get(marker, "arithmetic"), seg[0], int.from_bytes(seg[1:3], "big"),
                    int.from_bytes(seg[3:5], "big"), seg[5])
        if marker == 0xDA:  # start of scan before any frame header
            return None
        i += 2 + length
    return None


def jpeg_passthrough(data: bytes, patch_size_px: int) -> bool:
    """Whether ``data`` can be stored in a patch array as it is: an 8-bit, 3-component baseline (or extended
    Huffman) JPEG of ``patch_size_px`` squared pixels that libjpeg-turbo decodes whole — what both decoders of the
    loader read (nvJPEG and libjpeg-turbo; progressive and arithmetic-coded files are re-encoded instead)."""
    f = jpeg_frame(data)
    if f is None or f[0] not in ("baseline", "extended") or f[1] != 8 or f[4] != 3 \
            or (f[2], f[3]) != (patch_size_px, patch_size_px):
        return False
    try:
        return decode_jpeg(data).shape == (patch_size_px, patch_size_px, 3)
    except (ValueError, RuntimeError):
        return False


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Array-to-bytes codec: each chunk is a single image encoded as JPEG."""

    is_fixed_size = False

    quality: int = 90
    subsampling: str = "420"

    def __init__(self, *, quality: int = 90, subsampling: str = "420") -> None:
        if not 1 <= int(quality) <= 100:
            raise ValueError(f"JPEG quality must be 1..100, got {quality}")
        if subsampling not in _SUBSAMPLING:
            raise ValueError(f"JPEG subsampling must be one of {_SUBSAMPLING}, got {subsampling!r}")
        object.__setattr__(self, "quality", int(quality))
        object.__setattr__(self, "subsampling", subsampling)

    @classmethod
    def from_dict(cls, data: dict[str, JSON]) -> Self:
        _, cfg = parse_named_configuration(data, CODEC_NAME, require_configuration=False)
        return cls(**(cfg or {}))  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, JSON]:
        return {"name": CODEC_NAME, "configuration": {"quality": self.quality, "subsampling": self.subsampling}}

    def validate(self, *, shape: tuple[int, ...], dtype: Any, chunk_grid: Any) -> None:
        native = dtype.to_native_dtype() if hasattr(dtype, "to_native_dtype") else np.dtype(dtype)
        if np.dtype(native) != np.uint8:
            raise ValueError(f"{CODEC_NAME} needs uint8 data, got {native}")
        if len(shape) < 3 or shape[-1] not in (1, 3):
            raise ValueError(f"{CODEC_NAME} needs (..., H, W, C) arrays with C in (1, 3), got shape {shape}")

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        raw = chunk_bytes.as_numpy_array()
        img = decode_jpeg(raw.tobytes(), channels=chunk_spec.shape[-1])
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(img.reshape(chunk_spec.shape))

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        # libjpeg-turbo releases the GIL: off the event loop, zarr decodes a shard's chunks in parallel
        return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        arr = np.asarray(chunk_array.as_numpy_array())
        h, w, c = arr.shape[-3:]
        if int(np.prod(arr.shape[:-3])) != 1:
            raise ValueError(f"{CODEC_NAME} encodes one image per chunk; chunk shape is {arr.shape}")
        data = encode_jpeg(arr.reshape(h, w, c), self.quality, self.subsampling)
        return chunk_spec.prototype.buffer.from_bytes(data)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, _chunk_spec: ArraySpec) -> int:
        raise NotImplementedError("JPEG output size is data-dependent")


register_codec(CODEC_NAME, JpegCodec)
