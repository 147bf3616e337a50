"""Unit-carrying types and pixel-size helpers.

Every length in hestdata is either micrometres (``Microns``) or pixels (``Pixels``) and names say which
(``pixel_size_um``, ``patch_size_px``). ``NewType`` costs nothing at run time but makes signatures honest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import NewType

Microns = NewType("Microns", float)
Pixels = NewType("Pixels", float)

_PATCH_RE = re.compile(r"^(?P<px>\d+)px_(?P<um>\d+(?:\.\d+)?)um$")


def check_pixel_size_um(value: float, where: str) -> float:
    """Return ``value`` as float if it is a finite, positive pixel size in µm; else raise ``InputError``."""
    from hestdata.errors import InputError

    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(where, f"pixel size {value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise InputError(where, f"pixel size must be a positive number of µm/px, got {value!r}")
    if v > 1000:
        raise InputError(where, f"pixel size {v} µm/px is implausible (over 1 mm per pixel)")
    return v


@dataclass(frozen=True)
class PatchGeometry:
    """Target geometry of an aligned patch array: ``patch_size_px`` pixels at ``pixel_size_um`` µm/px."""

    patch_size_px: int
    pixel_size_um: float

    @property
    def name(self) -> str:
        """Canonical array name, e.g. ``224px_0.5um``."""
        return f"{self.patch_size_px}px_{self.pixel_size_um:g}um"

    @property
    def field_of_view_um(self) -> float:
        """Side of the patch in µm."""
        return self.patch_size_px * self.pixel_size_um

    @classmethod
    def parse(cls, spec: str | PatchGeometry) -> PatchGeometry:
        """Parse ``"224px_0.5um"``; raise ``ValueError`` with the expected form otherwise."""
        if isinstance(spec, PatchGeometry):
            return spec
        if spec.strip() in _EXACT:  # names whose µm/px is rounded (STAMP's 256 µm tile)
            return _EXACT[spec.strip()]
        m = _PATCH_RE.match(spec.strip())
        if not m:
            raise ValueError(f"patch geometry {spec!r} is not of the form '<int>px_<float>um', e.g. '224px_0.5um'")
        px, um = int(m["px"]), float(m["um"])
        if px < 8 or px > 4096 or um <= 0:
            raise ValueError(f"patch geometry {spec!r} out of range (8..4096 px, positive µm/px)")
        return cls(px, um)


DEFAULT_PATCH = PatchGeometry(224, 0.5)
"""HEST's patch geometry (224 px at 0.5 µm/px = 112 µm): the default for spot and cell samples."""
DEFAULT_SLIDE_TILE = PatchGeometry(224, 256 / 224)
"""STAMP's tile (224 px over 256 µm, ~1.14 µm/px): the default for whole slides."""
_EXACT = {DEFAULT_SLIDE_TILE.name: DEFAULT_SLIDE_TILE}
_ARRAY_RE = re.compile(r"^(?:(?P<prefix>[A-Za-z0-9_.]+)-)?(?P<geom>\d+px(?:_\d+(?:\.\d+)?um)?)$")
_FIT_RE = re.compile(r"^(?P<px>\d+)px$")


@dataclass(frozen=True)
class FitGeometry:
    """Store format 3: ``patch_size_px`` pixels over each item of an image collection — the whole tile, or a cell's
    box with its context — resized to fit, at **no common pixel size** (the collection's pixel size is unknown, or
    its items differ in scale). Named ``<px>px`` (``224px``); ``pixel_size_um`` is None, never guessed."""

    patch_size_px: int
    pixel_size_um: None = None

    @property
    def name(self) -> str:
        return f"{self.patch_size_px}px"

    @classmethod
    def parse(cls, spec: str) -> FitGeometry:
        m = _FIT_RE.match(spec.strip())
        if not m:
            raise ValueError(f"fit geometry {spec!r} is not of the form '<int>px', e.g. '224px'")
        px = int(m["px"])
        if px < 8 or px > 4096:
            raise ValueError(f"patch geometry {spec!r} out of range (8..4096 px)")
        return cls(px)


def parse_geometry(spec: str | PatchGeometry | FitGeometry) -> PatchGeometry | FitGeometry:
    """A patch geometry of either kind: ``224px_0.5um`` (a physical field of view) or ``224px`` (fit to each item of
    an image collection, pixel size unknown)."""
    if isinstance(spec, PatchGeometry | FitGeometry):
        return spec
    if _FIT_RE.match(spec.strip()):
        return FitGeometry.parse(spec)
    try:
        return PatchGeometry.parse(spec)
    except ValueError:
        raise ValueError(f"patch geometry {spec!r} is not '<int>px_<float>um' (e.g. '224px_0.5um') or, for image "
                         "collections, '<int>px' (e.g. '224px')") from None


def patch_array_name(spec: str) -> tuple[str, PatchGeometry | FitGeometry]:
    """Validate a patch array name: a geometry (``224px_0.5um``; ``224px`` in an image collection), optionally
    prefixed by what the patches are centred on (``cells-224px_0.5um``, ``pseudospots_55um-224px_0.5um``,
    ``cells-224px``); returns (name, geometry)."""
    m = _ARRAY_RE.match(spec.strip())
    if not m:
        raise ValueError(f"patch array {spec!r} is not '<geometry>' or '<prefix>-<geometry>', e.g. 'cells-224px_0.5um'")
    return spec.strip(), parse_geometry(m["geom"])
