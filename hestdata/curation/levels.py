"""Which pyramid level to cut patches from: the one place that decides it.

A level qualifies when its pixels are at least as fine as the target (within 0.01 %); the coarsest qualifying
level is taken, so a large reduction starts from a pre-reduced level. Levels are given by their downsample
factor relative to level 0 (``2 ** i`` for our own pyramids, the slide's own factors for OpenSlide).
"""

from __future__ import annotations

from collections.abc import Sequence

from hestdata.errors import InputError
from hestdata.units import PatchGeometry

TOLERANCE = 1.0001
DEFAULT_MAX_UPSAMPLING = 1.5


def finest_level_for(level0_pixel_size_um: float, target_pixel_size_um: float,
                     downsamples: Sequence[float] | int) -> int:
    """Index of the coarsest level whose pixel size does not exceed the target (0 if none does).

    ``downsamples`` is the list of level factors, or a level count for a power-of-two pyramid."""
    factors = [2.0 ** i for i in range(downsamples)] if isinstance(downsamples, int) else list(downsamples)
    ok = [i for i, d in enumerate(factors) if level0_pixel_size_um * d <= target_pixel_size_um * TOLERANCE]
    return max(ok) if ok else 0


def thumbnail_level(shapes: Sequence[tuple[int, int]], max_px: int) -> int:
    """The finest pyramid level whose longer side fits in ``max_px`` (else the coarsest): the level tissue
    is segmented on."""
    return next((i for i, s in enumerate(shapes) if max(s) <= max_px), len(shapes) - 1)


def check_resolution(geometry: PatchGeometry, image_pixel_size_um: float, *, where: str,
                     max_upsampling: float = DEFAULT_MAX_UPSAMPLING) -> None:
    """Error (naming the best available µm/px) if even level 0 is coarser than ``max_upsampling`` x the target."""
    target = geometry.pixel_size_um
    if image_pixel_size_um > target * max_upsampling:
        finest = image_pixel_size_um
        raise InputError(where, f"cannot make {geometry.name} patches: the best available image is "
                                f"{finest:.4g} µm/px, coarser than {target:g} µm/px by {finest / target:.1f}x "
                                f"(limit {max_upsampling:g}x)",
                         f"pass the full-resolution image with --image, convert without patches (--no-patches), or ask "
                         f"for coarser patches (--patch {geometry.patch_size_px}px_{finest / max_upsampling:.3g}um)")


def choose_level(geometry: PatchGeometry, image_pixel_size_um: float, n_levels: int, *, where: str,
                 max_upsampling: float = DEFAULT_MAX_UPSAMPLING) -> int:
    """The coarsest power-of-two pyramid level still at least as fine as the target; error if even level 0 is
    too coarse."""
    check_resolution(geometry, image_pixel_size_um, where=where, max_upsampling=max_upsampling)
    return finest_level_for(image_pixel_size_um, geometry.pixel_size_um, n_levels)
