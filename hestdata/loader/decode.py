"""JPEG decoding of patch batches: libjpeg-turbo on the CPU (in workers), nvJPEG on the GPU (batched)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hestdata.errors import IntegrityError


def looks_like_jpeg(data: bytes) -> bool:
    """Cheap structural check (SOI at the start, EOI at the end) before bytes are shipped to a GPU."""
    return len(data) > 4 and data[:2] == b"\xff\xd8" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


def check_jpeg_shape(data: bytes, shape_hw: tuple[int, int], where: str) -> None:
    """The JPEG's own header must say the array's patch size: a valid but smaller image would otherwise be
    decoded into part of the batch buffer and served with whatever memory held before."""
    import simplejpeg

    try:
        h, w = simplejpeg.decode_jpeg_header(data)[:2]
    except (ValueError, RuntimeError) as exc:
        raise IntegrityError(f"{where}: corrupt JPEG ({exc})") from exc
    if (h, w) != tuple(shape_hw):
        raise IntegrityError(f"{where}: JPEG is {h}x{w} px, the patch array holds {shape_hw[0]}x{shape_hw[1]} px")


def decode_cpu(data: bytes, where: str, out: np.ndarray | None = None,
               shape_hw: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 via simplejpeg (into ``out`` if given); a corrupt patch, or one whose size is not the
    array's (``shape_hw``, or ``out``'s), raises ``IntegrityError``."""
    import simplejpeg

    expected = tuple(shape_hw or (out.shape[:2] if out is not None else ()))
    try:
        img = simplejpeg.decode_jpeg(data, colorspace="RGB", buffer=out)
    except (ValueError, RuntimeError) as exc:
        if expected:
            check_jpeg_shape(data, expected, where)  # too large for the buffer: say so with both sizes
        raise IntegrityError(f"{where}: corrupt JPEG ({exc})") from exc
    if expected and tuple(img.shape[:2]) != expected:  # checked on the result: no second header parse per patch
        raise IntegrityError(f"{where}: JPEG is {img.shape[0]}x{img.shape[1]} px, the patch array holds "
                             f"{expected[0]}x{expected[1]} px")
    return img


def cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def decode_gpu(jpegs: list[Any], device: Any, where: list[str], on_error: str,
               shape_hw: tuple[int, int] | None = None) -> tuple[Any, list[int]]:
    """Decode a list of uint8 CPU tensors with one batched nvJPEG call; return (B, 3, H, W) and kept positions.

    The hardware JPEG engine does not honour CUDA stream ordering (torchvision #9606): we synchronise the device
    before the decoded memory is used or the input buffers are released. If the batch fails, images are decoded
    one by one to name the corrupt patch (``on_error="raise"``) or drop it (``"skip"``).
    """
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    if not jpegs:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8, device=device), []
    try:
        out = decode_jpeg(jpegs, mode=ImageReadMode.RGB, device=device)
        torch.cuda.synchronize(device)
        if shape_hw is None or all(tuple(o.shape[1:]) == tuple(shape_hw) for o in out):
            return torch.stack(out), list(range(len(jpegs)))
    except RuntimeError:
        torch.cuda.synchronize(device)
    images, kept = [], []
    for i, j in enumerate(jpegs):
        try:
            img = decode_jpeg(j, mode=ImageReadMode.RGB, device=device)
            torch.cuda.synchronize(device)
            if shape_hw is not None and tuple(img.shape[1:]) != tuple(shape_hw):
                raise RuntimeError(f"decoded {tuple(img.shape[1:])}, the patch array holds {tuple(shape_hw)}")
        except RuntimeError as exc:
            if on_error == "raise":
                raise IntegrityError(f"{where[i]}: corrupt JPEG (nvJPEG: {exc})") from exc
            continue
        images.append(img)
        kept.append(i)
    if not images:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8, device=device), []
    return torch.stack(images), kept
